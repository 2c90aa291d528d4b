"""params.yaml from conf/, in one merge order, and the check of every value before any stage runs.

The order (DVC's Hydra composition, ``.dvc/config``: ``hydra.enabled``): ``conf/config.yaml`` (the defaults, with
``conf/training.yaml`` placed in each trainer) < ``conf/profile/<profile>.yaml`` < ``conf/method/<method>.yaml``
< the overrides (``dvc exp run -S key=value``). ``dvc exp run`` composes and writes params.yaml itself;
``compose`` here calls Hydra the same way and gives the same text, for ``python -m videoda params`` (then
``dvc repro``) and the tests. params.yaml therefore holds the effective value of every key, which is what
``dvc exp show`` and ``dvc params diff`` show.

A method fixes the keys that define it (its file's keys): an override of one of them is refused by
``check_params`` (one line), so that ``method`` always names what ran. A profile fixes nothing: any of its keys
can be overridden on top (a short trial of the paper's configuration). Hydra is imported only to compose.
"""

from pathlib import Path

import yaml

from videoda.config.fields import PARAMS_FILE, lookup
from videoda.config.stages import STAGES, stage_config, stage_keys
from videoda.data.classes import load_class_set
from videoda.errors import ParamError
from videoda.utils.io import atomic_path

CONF_DIR = "conf"
GROUPS = ("profile", "method")       # the config groups (conf/<group>/<name>.yaml); each file records its name
                                     # under the group's key, which no stage reads


def group_options(group, conf_dir=CONF_DIR):
    """The names of ``conf/<group>/*.yaml`` (sorted)."""
    return sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))


def _check_group_override(override, conf_dir):
    """``profile=X`` / ``method=X`` naming a file that is not there: one line with the options."""
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    if key in GROUPS and value not in group_options(key, conf_dir):
        raise ParamError(f"-S {override}: no {key} {value!r} in {Path(conf_dir) / key}/ "
                         f"(one of {group_options(key, conf_dir)})")


def compose(overrides=(), conf_dir=CONF_DIR):
    """params.yaml's text for ``overrides`` (``["profile=paper", "train_source.iterations=100"]``), exactly as
    ``dvc exp run -S ...`` writes it (``dvc.utils.hydra.compose_and_dump``). An unknown key, a bad override or
    an unknown profile or method is a ParamError naming the override."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not (Path(conf_dir) / "config.yaml").is_file():
        raise ParamError(f"{Path(conf_dir) / 'config.yaml'}: the base config is not there")
    for override in overrides:
        _check_group_override(override, conf_dir)
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        # Hydra's message names the key ("Could not override 'vst.alpah'."); its hints follow on other lines
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if first.startswith("Could not override '"):          # a key that is not in the composed config
            key = first.split("'")[1]
            raise ParamError(f"{_where(key, conf_dir, overrides)}: unknown key {key} (not in {conf_dir}/; "
                             f"a typo?)") from None
        raise ParamError(f"{conf_dir}/ with -S {' -S '.join(overrides) or '(none)'}: {first}") from None
    return OmegaConf.to_yaml(cfg)


def compose_params(overrides=(), conf_dir=CONF_DIR):
    """The composed params as a dict (params.yaml read back)."""
    return yaml.safe_load(compose(overrides, conf_dir))


def _leaves(node, prefix=""):
    if not isinstance(node, dict) or not node:
        yield prefix
        return
    for key, value in node.items():
        yield from _leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")


def method_fixes(method, conf_dir=CONF_DIR):
    """{dotted key: value} of the keys method ``method`` fixes (its file's, but its name). Read with OmegaConf's
    YAML loader, the one Hydra composes with: PyYAML would read e.g. ``1e-3`` as a string where the composed
    params.yaml holds the number, and refuse every run of the method."""
    from omegaconf import OmegaConf

    fixes = OmegaConf.to_container(OmegaConf.load(Path(conf_dir) / "method" / f"{method}.yaml")) or {}
    return {key: lookup(fixes, key) for key in _leaves(fixes) if key not in GROUPS}


def known_keys():
    """Every key a stage reads, and the groups' names."""
    return set(GROUPS).union(*(stage_keys(stage) for stage in STAGES))


def _where(key, source, overrides):
    """Where the value of ``key`` came from: the ``-S`` override that set it, else the file ``source``."""
    for override in overrides:
        if override.partition("=")[0].lstrip("+~") == key:
            return f"-S {override}"
    return source


def check_params(params, source=PARAMS_FILE, conf_dir=CONF_DIR, overrides=()):
    """Every value of ``params`` (params.yaml as read) checked, as a ParamError naming the key and where it came
    from (the override among ``overrides`` that set it, else ``source``): the profile and method exist, no key
    is unknown (a typo), the method's keys hold its values, every stage's config reads (types, ranges, choices,
    the class set). Returns params with the class set read in."""
    for group in GROUPS:
        if params.get(group) not in group_options(group, conf_dir):
            raise ParamError(f"{_where(group, source, overrides)}: {group} = {params.get(group)!r} is not one of "
                             f"{group_options(group, conf_dir)} ({Path(conf_dir) / group}/)")
    known = known_keys()
    for key in _leaves(params):
        if key not in known and not any(key.startswith(k + ".") for k in known):
            raise ParamError(f"{_where(key, source, overrides)}: unknown key {key} (no stage reads it)")
    method = params["method"]
    for key, value in method_fixes(method, conf_dir).items():
        if lookup(params, key) != value:
            raise ParamError(f"{_where(key, source, overrides)}: {key} = {lookup(params, key)!r}, but method "
                             f"{method} fixes it to {value!r} ({Path(conf_dir) / 'method' / method}.yaml); "
                             f"a variant of a method runs under method=ours")
    try:
        params = {**params, "classes": load_class_set(lookup(params, "classes")).to_dict()}
        for stage in STAGES:
            stage_config(stage, params)
    except ParamError as e:      # the configs' messages start "params.yaml: <key> ..."
        text = str(e)
        if text.startswith(PARAMS_FILE + ": "):
            rest = text[len(PARAMS_FILE) + 2:]
            key = rest.split()[0].rstrip(":") if rest.split() else ""
            text = f"{_where(key, source, overrides)}: {rest}"
        raise ParamError(text) from None
    return params


def write_params(overrides=(), out=PARAMS_FILE, conf_dir=CONF_DIR):
    """Compose, check, then write params.yaml (a temporary name, then renamed): nothing is written on an error."""
    text = compose(overrides, conf_dir)
    check_params(yaml.safe_load(text), source=f"{conf_dir}/", conf_dir=conf_dir, overrides=overrides)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return text
