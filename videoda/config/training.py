"""The model, the optimiser and the training loop shared by every trainer; stages ``train_source`` and
``train_oracle``."""

from dataclasses import dataclass
from typing import ClassVar

from videoda.choices import BACKBONES, NORMS, OPTIMIZERS, PREDICT_BATCH_SIZE, RESOLUTIONS
from videoda.config.common import seed_param
from videoda.config.compute import Compute
from videoda.config.fields import choice, class_set, flag, int_list, integer, number, part, text


@dataclass(frozen=True)
class Model:
    """DeepLabv2 on a torchvision ResNet (``videoda.model.build.build_model``), one output per class of the set."""
    classes: object = class_set()
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
class Validation:
    """A trainer's validation curve (``videoda.domain_adaptation.validation``): every ``validate_every`` steps (0:
    never) and at the last, the model is scored on the target-val clips with stage ``evaluate``'s protocol (its
    keys: annotated-frame stride, resolution; the class set), the peers' checkpoint selection (DA-VSN's
    ``video_best``) made reportable beside ours. Frames a forward pass: ``PREDICT_BATCH_SIZE``, a constant, not
    ``evaluate.batch_size``: a memory knob of stage evaluate must not rerun the trainers."""
    validate_every: int = integer(lo=0)
    # read only by a run that validates: with validate_every 0, changing evaluate's keys does not rerun a trainer
    label_stride: int = integer(lo=1, key="evaluate.label_stride", when="validate_every")
    resolution: str = choice(RESOLUTIONS, key="evaluate.resolution", when="validate_every")
    classes: object = class_set(when="validate_every")
    batch_size: int = PREDICT_BATCH_SIZE


@dataclass(frozen=True)
class Training:
    """The training loop of a phase: steps, frame pairs per step, horizontal flips, CPU threads, how often a
    snapshot to resume from is written (``videoda.domain_adaptation.snapshot``; 0: never), and the total loss
    past which the run stops as diverged (``train.check_losses``; 0: no limit, a non-finite loss always stops), and
    its validation curve (``Validation``)."""
    iterations: int = integer(lo=1)
    batch_size: int = integer(lo=1)
    hflip: bool = flag()
    threads: int = integer(lo=1)
    snapshot_every: int = integer(lo=0)
    loss_limit: float = number(lo=0.0)
    optim: Optimizer = part()
    validation: Validation = part()


@dataclass(frozen=True)
class Supervised:
    """Stages ``train_source`` and ``train_oracle``: cross-entropy on frame pairs (t - tau, t)."""
    SECTION: ClassVar[str] = "train_source"
    seed: int = seed_param()
    model: Model = part("model")
    tau: int = integer(lo=1)
    train: Training = part()
    compute: Compute = part("compute")
