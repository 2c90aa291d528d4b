"""The config layer's machinery: load params.yaml (composed from conf/ by ``videoda.config.compose``), declare
what each config field reads and how it is checked, read a config from params or from a stage's resolved params
file.

A config is a frozen dataclass whose fields declare their key and check (``integer(lo=1)``, ``choice(...)``,
``part(section)`` for a nested config); ``read_config`` reads and checks every field, and a bad value is a
``ParamError`` naming its key. The stages' configs live beside this module, one module per stage or group.
"""

import copy
import json
from dataclasses import field, fields
from pathlib import Path

import yaml

from videoda.data.classes import load_class_set
from videoda.errors import ParamError

PARAMS_FILE = "params.yaml"


def load_params(path=PARAMS_FILE):
    """params.yaml as the pipeline sees it: every key's effective value (composed from conf/), with its class set
    (``classes``: a name or a file) read in, so that each stage's resolved params hold the set itself
    (``videoda.data.classes``) and DVC sees a change of its content."""
    params = read_params(path)
    if "classes" in params:
        params["classes"] = load_class_set(params["classes"]).to_dict()
    return params


def read_params(path=PARAMS_FILE):
    """params.yaml as written (the class set by name); a missing file or a YAML error is a ParamError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as e:   # a folder, no permission, binary bytes
        raise ParamError(f"{path}: unreadable parameter file ({type(e).__name__}: {e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ParamError(f"{path}: not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(params, dict):
        raise ParamError(f"{path}: expected a mapping of parameter sections")
    return params


def lookup(params, key):
    """The value of a dotted key (``"vst.alpha"``) in nested params; a missing key is a ParamError naming it."""
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(f"params.yaml: {key} is missing")
        node = node[part]
    return node


def with_overrides(params, overrides):
    """A copy of ``params`` with some dotted keys set (``{"vst.alpha": 0.2}``), as ``dvc exp run -S`` does; each
    key must exist."""
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        parent_key, _, last = key.rpartition(".")
        parent = lookup(out, parent_key) if parent_key else out
        if not isinstance(parent, dict) or last not in parent:
            raise ParamError(f"params.yaml: {key} is missing")
        parent[last] = value
    return out


# --- field declarations: what a config field reads and how it is checked ------------------------------------

def _field(kind, key=None, when=None, **check):
    """A config field read from ``key`` (absolute, dotted); None: ``<the config's section>.<field name>``.
    ``when``: a key of the config's own section (e.g. ``validate_every``) whose value 0 or false means the run does
    not use this field: it is then neither read (its value is None) nor written to the stage's resolved params
    (``config_keys`` with the params), so a key the run does not use cannot rerun the stage."""
    return field(metadata={"kind": kind, "key": key, "when": when, **check})


def integer(lo=None, hi=None, key=None, when=None):
    return _field("int", key, when, lo=lo, hi=hi)


def number(lo=None, hi=None, key=None):
    return _field("float", key, lo=lo, hi=hi)


def number_list(lo=None, hi=None, key=None):
    """A list of numbers, possibly empty, each in [lo, hi]; read as a tuple."""
    return _field("float_list", key, lo=lo, hi=hi)


def int_list(key=None):
    """A non-empty list of integers; read as a tuple."""
    return _field("int_list", key)


def str_list(key=None):
    """A list of strings, possibly empty; read as a tuple."""
    return _field("str_list", key)


def choice_list(options, key=None):
    """A non-empty list of distinct entries of ``options``; read as a tuple."""
    return _field("choice_list", key, options=tuple(options))


def names_or_file(key=None):
    """None, a non-empty list of names (numbers are read as their decimal text), or a path to a file of names
    (a non-empty string); a list is read as a tuple of strings, a path as a string."""
    return _field("names_or_file", key)


def flag(key=None):
    return _field("bool", key)


def choice(options, key=None, when=None):
    return _field("choice", key, when, options=tuple(options))


def text(optional=False, key=None):
    """A non-empty string (None allowed when ``optional``)."""
    return _field("str", key, optional=optional)


def class_set(key="classes", when=None):
    """The class set (``videoda.data.classes.ClassSet``): a shipped set's name, a YAML file, or the set itself."""
    return _field("class_set", key, when)


def part(section=None):
    """A nested config read from ``section`` (None: the enclosing config's section)."""
    return field(metadata={"kind": "part", "section": section})


def _range(key, value, lo, hi):
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParamError(f"params.yaml: {key} = {value} is out of range [{lo}, {hi}]")
    return value


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_value(params, key, meta):
    v, kind = lookup(params, key), meta["kind"]
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParamError(f"params.yaml: {key} must be an integer, got {v!r}")
        return _range(key, v, meta["lo"], meta["hi"])
    if kind == "float":
        if not _is_number(v):
            raise ParamError(f"params.yaml: {key} must be a number, got {v!r}")
        return _range(key, float(v), meta["lo"], meta["hi"])
    if kind == "bool":
        if not isinstance(v, bool):
            raise ParamError(f"params.yaml: {key} must be true or false, got {v!r}")
        return v
    if kind == "choice":
        if v not in meta["options"]:
            raise ParamError(f"params.yaml: {key} = {v!r} is not one of {list(meta['options'])}")
        return v
    if kind == "str":
        if v is None and meta["optional"]:
            return None
        if not isinstance(v, str) or not v:
            raise ParamError(f"params.yaml: {key} must be a non-empty string, got {v!r}")
        return v
    if kind == "int_list":
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ParamError(f"params.yaml: {key} must be a non-empty list of integers, got {v!r}")
        return tuple(v)
    if kind == "str_list":
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ParamError(f"params.yaml: {key} must be a list of names, got {v!r}")
        return tuple(v)
    if kind == "choice_list":
        if not isinstance(v, list) or not v or len(set(map(str, v))) != len(v):
            raise ParamError(f"params.yaml: {key} must be a non-empty list of distinct values, got {v!r}")
        for x in v:
            if x not in meta["options"]:
                raise ParamError(f"params.yaml: {key}: {x!r} is not one of {list(meta['options'])}")
        return tuple(v)
    if kind == "names_or_file":
        if v is None or (isinstance(v, str) and v):
            return v
        ok = isinstance(v, list) and v and all((isinstance(x, str) and x.strip()) or
                                               (isinstance(x, int) and not isinstance(x, bool)) for x in v)
        if not ok:
            raise ParamError(f"params.yaml: {key} must be null, a non-empty list of names or a file path, got {v!r}")
        return tuple(str(x) for x in v)
    if kind == "class_set":
        return load_class_set(v, key)
    if kind == "float_list":
        if not isinstance(v, list) or not all(_is_number(x) for x in v):
            raise ParamError(f"params.yaml: {key} must be a list of numbers, got {v!r}")
        return tuple(_range(key, float(x), meta["lo"], meta["hi"]) for x in v)
    raise AssertionError(kind)


def _unused(params, section, meta):
    """Whether a field declared with ``when`` is unused by a run with ``params`` (``_field``)."""
    return meta.get("when") is not None and not lookup(params, f"{section}.{meta['when']}")


def read_config(cls, params, section):
    """An instance of config dataclass ``cls`` with every declared field read from ``params`` and checked (None for
    a field the run does not use: ``_field``'s ``when``)."""
    values = {}
    for f in fields(cls):
        meta = f.metadata
        if "kind" not in meta:            # a constant of the code, not a param
            continue
        if meta["kind"] == "part":
            values[f.name] = read_config(f.type, params, meta["section"] or section)
        else:
            unused = _unused(params, section, meta)
            values[f.name] = None if unused else _read_value(params, meta["key"] or f"{section}.{f.name}", meta)
    return cls(**values)


def config_keys(cls, section, params=None):
    """Every params key that ``read_config(cls, ..., section)`` may read; with ``params``, those it reads from
    them (not the fields unused by that run: ``_field``'s ``when``)."""
    keys = []
    for f in fields(cls):
        meta = f.metadata
        if meta.get("kind") == "part":
            keys += config_keys(f.type, meta["section"] or section, params)
        elif "kind" in meta and not (params is not None and _unused(params, section, meta)):
            keys.append(meta["key"] or f"{section}.{f.name}")
    return keys


def read_stage_config(cls, path, section=None):
    """A stage's config (class ``cls``, its fields defaulting to ``section``, else ``cls.SECTION``) from the file
    stage ``resolve_params`` wrote, ``data/params/<stage>.json``: the file DVC tracks is the stage's real input."""
    path = Path(path)
    try:
        resolved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamError(f"{path}: resolved params not found (run `dvc repro resolve_params`)") from None
    except json.JSONDecodeError as e:     # e.g. truncated by a killed write outside the pipeline
        raise ParamError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); rerun stage resolve_params") from None
    except (OSError, UnicodeDecodeError) as e:   # a folder, no permission, binary bytes
        raise ParamError(f"{path}: unreadable resolved params ({type(e).__name__}: {e}); "
                         f"rerun stage resolve_params") from None
    if not isinstance(resolved, dict):
        raise ParamError(f"{path}: expected a JSON object of parameter sections; rerun stage resolve_params")
    return read_config(cls, resolved, section or cls.SECTION)
