"""The one config layer: params.yaml (with the ``method`` preset applied) -> one typed, validated config per stage.

Each stage's config is a frozen dataclass whose fields declare the key they come from and how it is checked
(``integer(lo=1)``, ``choice(OPTIMIZERS)``, ...); ``stage_config(stage, params)`` reads and checks every field, and
a bad value is a ``ParamError`` naming its key. ``STAGE_KEYS`` lists the params each stage reads.

Stage ``resolve_params`` writes ``data/params/<stage>.json``: the stage's keys with the preset applied. Every stage
reads its config back from that file (``read_stage_config``) and DVC tracks the file, so the dependency is the
stage's real input: a stage reruns when its *effective* values change, and methods that share a phase (e.g.
AdaptSegNet's warm-up under CBST*, CRST* and IAST) share its run in DVC's run cache.
"""

import copy
import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from videoda.domain_adaptation.adversarial import DICE_MODES, DISC_INPUTS, DISCRIMINATORS
from videoda.domain_adaptation.pseudo_labels import GENERATORS
from videoda.domain_adaptation.self_training import REFINEMENTS, REGULARISERS
from videoda.domain_adaptation.train import OPTIMIZERS
from videoda.errors import ParamError
from videoda.flow.backends import DIS_PRESETS
from videoda.model.deeplabv2 import BACKBONES, NORMS
from videoda.presets import PRESETS, apply_preset, final_model

PARAMS_FILE = "params.yaml"
PREDICT_BATCH_SIZE = 16            # frames per forward pass when predicting (not a hyperparameter)


def load_params(path=PARAMS_FILE, verbose=True):
    """params.yaml as the pipeline sees it: with the preset of its ``method`` applied (``videoda.presets``)."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ParamError(f"{path}: not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(params, dict):
        raise ParamError(f"{path}: expected a mapping of parameter sections")
    return apply_preset(params, verbose=verbose)


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

def _field(kind, key=None, **check):
    """A config field read from ``key`` (absolute, dotted); None: ``<the config's section>.<field name>``."""
    return field(metadata={"kind": kind, "key": key, **check})


def integer(lo=None, hi=None, key=None):
    return _field("int", key, lo=lo, hi=hi)


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


def flag(key=None):
    return _field("bool", key)


def choice(options, key=None):
    return _field("choice", key, options=tuple(options))


def text(optional=False, key=None):
    """A non-empty string (None allowed when ``optional``)."""
    return _field("str", key, optional=optional)


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
    if kind == "float_list":
        if not isinstance(v, list) or not all(_is_number(x) for x in v):
            raise ParamError(f"params.yaml: {key} must be a list of numbers, got {v!r}")
        return tuple(_range(key, float(x), meta["lo"], meta["hi"]) for x in v)
    raise AssertionError(kind)


def read_config(cls, params, section):
    """An instance of config dataclass ``cls`` with every declared field read from ``params`` and checked."""
    values = {}
    for f in fields(cls):
        meta = f.metadata
        if "kind" not in meta:            # a constant of the code, not a param
            continue
        if meta["kind"] == "part":
            values[f.name] = read_config(f.type, params, meta["section"] or section)
        else:
            values[f.name] = _read_value(params, meta["key"] or f"{section}.{f.name}", meta)
    return cls(**values)


def config_keys(cls, section):
    """Every params key that ``read_config(cls, ..., section)`` reads."""
    keys = []
    for f in fields(cls):
        meta = f.metadata
        if meta.get("kind") == "part":
            keys += config_keys(f.type, meta["section"] or section)
        elif "kind" in meta:
            keys.append(meta["key"] or f"{section}.{f.name}")
    return keys


# --- the configs -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Synth:
    """The embedded benchmark (stage ``synth``)."""
    seed: int = integer(lo=0, key="seed")
    shift: float = number(0.0, 1.0)
    height: int = integer(lo=16)
    width: int = integer(lo=16)
    frames_per_clip: int = integer(lo=2)
    label_every: int = integer(lo=1)
    source_sequences: int = integer(lo=1)
    target_train_clips: int = integer(lo=1)
    target_val_clips: int = integer(lo=1)

    def __post_init__(self):
        _range("synth.label_every", self.label_every, 1, self.frames_per_clip)


@dataclass(frozen=True)
class SourceDataset:
    dataset: str = choice(["viper"])
    root: str = text()
    split: str = text()
    ignore_ego_vehicle: bool = flag()


@dataclass(frozen=True)
class TargetDataset:
    dataset: str = choice(["cityscapes_vps"])
    root: str = text()
    train_split: str = text()
    val_split: str = text()


@dataclass(frozen=True)
class Prepare:
    """The datasets and the training resolution (stage ``prepare``)."""
    source: SourceDataset = part("prepare.source")
    target: TargetDataset = part("prepare.target")
    height: int = integer(lo=8)
    width: int = integer(lo=8)
    min_frames: int = integer(lo=2)


@dataclass(frozen=True)
class Model:
    """DeepLabv2 on a torchvision ResNet (``videoda.model.build.build_model``)."""
    backbone: str = choice(BACKBONES)
    num_layers: int = integer(1, 4)
    norm: str = choice(NORMS)
    group_norm_groups: int = integer(lo=1)
    aspp_rates: tuple = int_list()
    pretrained: str = text(optional=True)


@dataclass(frozen=True)
class Optimizer:
    """The segmentation network's optimiser, shared by every trainer: ``lr`` for the backbone, 10x for the head,
    DeepLab's poly schedule with ``poly_power``."""
    optimizer: str = choice(OPTIMIZERS)
    lr: float = number(lo=0.0)
    momentum: float = number(0.0, 1.0)
    weight_decay: float = number(lo=0.0)
    poly_power: float = number(lo=0.0)


@dataclass(frozen=True)
class Training:
    """The training loop of a phase: steps, frame pairs per step, horizontal flips, CPU threads."""
    iterations: int = integer(lo=1)
    batch_size: int = integer(lo=1)
    hflip: bool = flag()
    threads: int = integer(lo=1)
    optim: Optimizer = part()


@dataclass(frozen=True)
class Supervised:
    """Stages ``train_source`` and ``train_oracle``: cross-entropy on frame pairs (t - tau, t)."""
    seed: int = integer(lo=0, key="seed")
    model: Model = part("model")
    tau: int = integer(lo=1)
    train: Training = part()


@dataclass(frozen=True)
class VAT:
    """Stage ``vat`` (Sec. 4.3, Eq. 6-9): Table 3's variants and the image-level baselines by three switches."""
    seed: int = integer(lo=0, key="seed")
    enabled: bool = flag()
    discriminator: str = choice(DISCRIMINATORS)
    disc_input: str = choice(DISC_INPUTS)
    dice: str = choice(DICE_MODES)
    lambda_v: float = number(lo=0.0)
    lambda_dice: float = number(lo=0.0)
    disc_channels: int = integer(lo=1)
    optimizer_d: str = choice(OPTIMIZERS)
    lr_d: float = number(lo=0.0)
    tau: int = integer(lo=1)
    train: Training = part()


@dataclass(frozen=True)
class Occlusion:
    """Eq. 10's occlusion mask exp(-alpha ||x_i - W(x_j)||_2) and its threshold th."""
    alpha: float = number(lo=0.0, key="flow.alpha")
    threshold: float = number(0.0, 1.0, key="flow.occlusion_threshold")


@dataclass(frozen=True)
class Flow:
    """Stage ``flow``: the flow backend, the stored pair distance and the EPE report."""
    method: str = text()
    tau: int = integer(lo=1)
    dis_preset: str = choice(DIS_PRESETS)
    ckpt: str = text(optional=True)
    batch_size: int = integer(lo=1)
    threads: int = integer(lo=1)
    occlusion: Occlusion = part()
    epe: bool = flag()
    gt_root: str = text()
    compare: tuple = str_list()


@dataclass(frozen=True)
class PseudoLabels:
    """A pseudo-label generator (Sec. 4.4.1, Eq. 10-11, Algorithm 1) and its thresholds."""
    kind: str = choice(GENERATORS, key="vst.pseudo_label")
    alpha: float = number(0.0, 1.0)
    beta: float = number(0.0, 1.0)
    gamma: float = number(lo=0.0)
    init_theta: float = number(0.0, 1.0)
    portion: float = number(0.0, 1.0, key="vst.cbst_portion")
    occlusion: Occlusion = part()
    equal_proportions: tuple = number_list(0.0, 1.0)
    batch_size: int = PREDICT_BATCH_SIZE          # frames per forward pass when predicting


@dataclass(frozen=True)
class PseudoLabelStage:
    """Stage ``pseudo_labels``: the generator, its pair distance for the refinement analysis, threads."""
    seed: int = integer(lo=0, key="seed")
    tau: int = integer(lo=1, key="flow.tau")
    threads: int = integer(lo=1, key="vst.threads")
    labels: PseudoLabels = part("vst")


@dataclass(frozen=True)
class VST:
    """Stage ``vst`` (Sec. 4.4.2, Eq. 12-14): target pairs (t - flow.tau, t) with online-refined pseudo labels."""
    seed: int = integer(lo=0, key="seed")
    enabled: bool = flag()
    tau: int = integer(lo=1, key="flow.tau")
    refine: str = choice(REFINEMENTS)
    regulariser: str = choice(REGULARISERS)
    lambda_reg: float = number(lo=0.0)
    lambda_source: float = number(lo=0.0)
    rounds: int = integer(lo=1)
    train: Training = part()
    labels: PseudoLabels = part()          # the generator of every round after the first


@dataclass(frozen=True)
class Evaluate:
    """Stage ``evaluate``; ``method`` names the model whose metrics are the method's result (``final``)."""
    method: str = choice(PRESETS, key="method")
    label_stride: int = integer(lo=1)
    batch_size: int = integer(lo=1)
    strip_rows: int = integer(lo=1)
    threads: int = integer(lo=1)

    @property
    def final_model(self):
        return final_model({"method": self.method})


@dataclass(frozen=True)
class Report:
    """Stage ``report``: the visual report; the refinements' pair distance and occlusion settings from ``flow``."""
    pseudo_frames: int = integer(1, 50)
    video_clip: int = integer(lo=0)
    video_scale: int = integer(1, 16)
    figure_scale: int = integer(1, 16)
    fps: int = integer(1, 120)
    threads: int = integer(lo=1)
    tau: int = integer(lo=1, key="flow.tau")
    occlusion: Occlusion = part()


# stage -> (its config class, the params section its fields default to)
STAGES = {
    "synth": (Synth, "synth"),
    "prepare": (Prepare, "prepare"),
    "train_source": (Supervised, "train_source"),
    "train_oracle": (Supervised, "train_oracle"),
    "vat": (VAT, "vat"),
    "flow": (Flow, "flow"),
    "pseudo_labels": (PseudoLabelStage, "vst"),
    "vst": (VST, "vst"),
    "evaluate": (Evaluate, "evaluate"),
    "report": (Report, "report"),
}


def stage_keys(stage):
    """The params keys stage ``stage`` reads (sorted, unique)."""
    cls, section = STAGES[stage]
    return sorted(set(config_keys(cls, section)))


def stage_config(stage, params):
    """Stage ``stage``'s config from (preset-applied or resolved) params, every value checked."""
    if stage not in STAGES:
        raise ParamError(f"unknown stage {stage!r}; stages with a config: {list(STAGES)}")
    cls, section = STAGES[stage]
    return read_config(cls, params, section)


def resolve(params, stage):
    """The nested params of ``stage`` alone (its ``stage_keys``), as ``resolve_params`` writes them."""
    out = {}
    for key in stage_keys(stage):
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = lookup(params, key)
    return out


def resolved_json(params, stage):
    """The text of ``data/params/<stage>.json``: stable (sorted keys), so unchanged values keep its hash."""
    return json.dumps(resolve(params, stage), indent=2, sort_keys=True) + "\n"


def read_stage_config(stage, path):
    """Stage ``stage``'s config from the file ``resolve_params`` wrote (``data/params/<stage>.json``)."""
    path = Path(path)
    try:
        resolved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamError(f"{path}: resolved params not found (run `dvc repro resolve_params`)") from None
    except json.JSONDecodeError as e:
        raise ParamError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return stage_config(stage, resolved)
