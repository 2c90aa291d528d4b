"""The configs of stages ``synth`` (the embedded benchmark) and ``prepare`` (the datasets, their resolutions)."""

from dataclasses import dataclass
from typing import ClassVar

from videoda.config.common import seed_param
from videoda.config.fields import (_range, choice, choice_list, class_set, flag, integer, names_or_file, number, part,
                                   text)
from videoda.data.classes import VIPER_CONDITIONS
from videoda.errors import ParamError


@dataclass(frozen=True)
class Synth:
    """The embedded benchmark (stage ``synth``)."""
    SECTION: ClassVar[str] = "synth"
    seed: int = seed_param()
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
    dataset: str = choice(["viper", "synthia_seq"])
    root: str = text()
    split: str = text()                                  # VIPER's split folder (SYNTHIA-Seq has none)
    ignore_ego_vehicle: bool = flag()                    # VIPER: its ego car is void
    conditions: tuple = choice_list(VIPER_CONDITIONS)    # VIPER: sequences recorded under these conditions
    sequences: object = names_or_file()                  # or exactly these sequences (ids, or a file of ids);
                                                         # SYNTHIA-Seq: the sequence folders, required
    layout: str = choice(["official", "davsn"])          # SYNTHIA-Seq: the official folders or DA-VSN's rgb/ label/
    crop_bottom: int = integer(lo=0)                     # SYNTHIA-Seq: rows dropped at the bottom of every frame
    height: int = integer(lo=8)                          # the resolution source frames are trained at
    width: int = integer(lo=8)

    def __post_init__(self):
        if self.dataset == "synthia_seq" and self.sequences is None:
            raise ParamError("params.yaml: prepare.source.sequences must name the SYNTHIA-Seq sequence folders "
                             "(e.g. [SYNTHIA-SEQS-04-DAWN], DA-VSN's) when prepare.source.dataset is synthia_seq")
        if self.dataset != "synthia_seq" and self.crop_bottom:
            raise ParamError(f"params.yaml: prepare.source.crop_bottom = {self.crop_bottom} applies to synthia_seq "
                             f"only, not to {self.dataset}")


@dataclass(frozen=True)
class TargetDataset:
    dataset: str = choice(["cityscapes_vps", "cityscapes_seq"])
    root: str = text()
    train_split: str = text()
    val_split: str = text()
    height: int = integer(lo=8)                          # the resolution target frames are trained at
    width: int = integer(lo=8)


@dataclass(frozen=True)
class Prepare:
    """The datasets and their training resolutions (stage ``prepare``)."""
    SECTION: ClassVar[str] = "prepare"
    source: SourceDataset = part("prepare.source")
    target: TargetDataset = part("prepare.target")
    min_frames: int = integer(lo=2)
    classes: object = class_set()
