"""The configs of stages ``pseudo_labels`` and ``vst`` (video self-training)."""

from dataclasses import dataclass
from typing import ClassVar

from videoda.choices import PREDICT_BATCH_SIZE, PSEUDO_LABELS, REFINEMENTS, REGULARISERS
from videoda.config.common import Occlusion, flow_tau_param, seed_param
from videoda.config.compute import Compute
from videoda.config.fields import choice, class_set, flag, integer, number, number_list, part
from videoda.config.training import Training


@dataclass(frozen=True)
class PseudoLabels:
    """A pseudo-label generator (Sec. 4.4.1, Eq. 10-11, Algorithm 1) and its thresholds."""
    pseudo_label: str = choice(PSEUDO_LABELS)
    alpha: float = number(0.0, 1.0)
    beta: float = number(0.0, 1.0)
    gamma: float = number(lo=0.0)
    init_theta: float = number(0.0, 1.0)
    cbst_portion: float = number(0.0, 1.0)
    occlusion: Occlusion = part()
    equal_proportions: tuple = number_list(0.0, 1.0)
    classes: object = class_set()                 # the thresholds' classes and the reports' names
    batch_size: int = PREDICT_BATCH_SIZE          # frames per forward pass when predicting


@dataclass(frozen=True)
class PseudoLabelStage:
    """Stage ``pseudo_labels``: the generator, its pair distance for the refinement analysis, threads."""
    SECTION: ClassVar[str] = "vst"
    seed: int = seed_param()
    tau: int = flow_tau_param()
    threads: int = integer(lo=1, key="vst.threads")
    labels: PseudoLabels = part("vst")
    compute: Compute = part("compute")


@dataclass(frozen=True)
class VST:
    """Stage ``vst`` (Sec. 4.4.2, Eq. 12-14): target pairs (t - flow.tau, t) with online-refined pseudo labels."""
    SECTION: ClassVar[str] = "vst"
    seed: int = seed_param()
    enabled: bool = flag()
    tau: int = flow_tau_param()
    refine: str = choice(REFINEMENTS)
    regulariser: str = choice(REGULARISERS)
    lambda_reg: float = number(lo=0.0)
    lambda_source: float = number(lo=0.0)
    rounds: int = integer(lo=1)
    train: Training = part()
    labels: PseudoLabels = part()          # the generator of every round after the first
    compute: Compute = part("compute")
