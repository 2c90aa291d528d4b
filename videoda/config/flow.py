"""The config of stage ``flow``."""

from dataclasses import dataclass
from typing import ClassVar

from videoda.choices import DIS_PRESETS
from videoda.config.common import Occlusion, flow_tau_param
from videoda.config.compute import Compute
from videoda.config.fields import choice, flag, integer, part, str_list, text


@dataclass(frozen=True)
class Flow:
    """Stage ``flow``: the flow backend, the stored pair distance and the EPE report."""
    SECTION: ClassVar[str] = "flow"
    method: str = text()
    tau: int = flow_tau_param()
    dis_preset: str = choice(DIS_PRESETS)
    ckpt: str = text(optional=True)
    batch_size: int = integer(lo=1)
    threads: int = integer(lo=1)
    occlusion: Occlusion = part()
    epe: bool = flag()
    gt_root: str = text()
    compare: tuple = str_list()
    compute: Compute = part("compute")      # ptlflow models on the device; DIS and gt flows on the CPU


@dataclass(frozen=True)
class FlowGroundTruth:
    """Stage ``flow_gt``: whether stage ``flow`` reads ground-truth flow (``epe``, or the ``gt`` backend), and
    from where (``videoda.flow.ground_truth``)."""
    SECTION: ClassVar[str] = "flow"
    method: str = text()
    epe: bool = flag()
    gt_root: str = text()
