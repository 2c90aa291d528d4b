"""The configs of stages ``evaluate`` and ``report``."""

from dataclasses import dataclass
from typing import ClassVar

from videoda.choices import RESOLUTIONS
from videoda.config.common import Occlusion, flow_tau_param
from videoda.config.compute import Compute
from videoda.config.fields import choice, class_set, integer, part


@dataclass(frozen=True)
class Evaluate:
    """Stage ``evaluate``; ``final_model`` names the model whose metrics are the method's result (``final``);
    ``resolution``: where predictions are scored, ``prepared`` (the training resolution) or ``labels`` (the label
    files' own, DA-VSN's protocol: ``videoda.evaluate.RESOLUTIONS``)."""
    SECTION: ClassVar[str] = "evaluate"
    final_model: str = choice(["vst", "oracle"])
    label_stride: int = integer(lo=1)
    batch_size: int = integer(lo=1)
    resolution: str = choice(RESOLUTIONS)
    strip_rows: int = integer(lo=1)
    threads: int = integer(lo=1)
    compute: Compute = part("compute")
    classes: object = class_set()


@dataclass(frozen=True)
class Report:
    """Stage ``report``: the visual report; the refinements' pair distance and occlusion settings from ``flow``."""
    SECTION: ClassVar[str] = "report"
    pseudo_frames: int = integer(1, 50)
    video_clip: int = integer(lo=0)
    video_scale: int = integer(1, 16)
    figure_scale: int = integer(1, 16)
    fps: int = integer(1, 120)
    threads: int = integer(lo=1)
    tau: int = flow_tau_param()
    occlusion: Occlusion = part()
    compute: Compute = part("compute")
    classes: object = class_set()
