"""The ``prepare`` stage: convert a dataset in its published layout into one clip folder per video
(``videoda.data.clips``), streamed frame by frame: one frame is in memory at a time, whatever a video's length."""

from pathlib import Path

from rich.progress import track

from videoda.data import cityscapes_seq, cityscapes_vps, synthia_seq, viper
from videoda.data.classes import DEFAULT
from videoda.data.clips import write_clip
from videoda.errors import DataError
from videoda.utils.io import atomic_path


def list_split(dataset: str, root, split: str, min_frames: int = 1, conditions=None, sequences=None,
               layout="official") -> list:
    """The videos of ``root/split`` as VideoSpecs, checked without decoding a frame: the dataset name, the root and
    split folders, the file names and label files, and every video's length (``min_frames``).

    ``conditions`` / ``sequences`` (VIPER): which sequences to convert (``viper.select_sequences``; None for both:
    every sequence). SYNTHIA-Seq has no split: ``sequences`` (a list, or a file of names) are its sequence folders
    under ``root``, in ``layout``."""
    def list_viper(root, split):
        return viper.list_sequences(root, split, conditions=conditions, sequences=sequences)

    def list_synthia(root, split):
        names = viper.read_sequence_list(sequences) if isinstance(sequences, str) else sequences
        return synthia_seq.list_sequences(root, names, layout)

    listings = {"viper": list_viper, "cityscapes_vps": cityscapes_vps.list_clips, "synthia_seq": list_synthia,
                "cityscapes_seq": cityscapes_seq.list_clips}
    if dataset not in listings:
        raise DataError(f"dataset: unknown dataset {dataset!r} (expected one of {sorted(listings)})")
    specs = listings[dataset](root, split)  # raises on a missing root/split folder or an empty split
    for spec in specs:  # check lengths first, so a short video fails before minutes of decoding
        if len(spec) < min_frames:
            raise DataError(f"{spec.images[0]}: {dataset} video {spec.name!r} has {len(spec)} frames, "
                            f"fewer than min_frames={min_frames}")
    return specs


# The label space each dataset's label files hold, as the class sets' maps name them.
LABEL_SPACE = {"viper": "viper", "cityscapes_vps": "cityscapes", "synthia_seq": "synthia",
               "cityscapes_seq": "cityscapes"}


def prepare_split(dataset: str, root, split: str, out_dir, size, min_frames: int = 1, ignore_ego_vehicle=True,
                  specs=None, classes=DEFAULT, crop_bottom=0, **selection):
    """Convert every video of ``root/split`` into the clip folder ``out_dir/<name>``; returns the written paths.

    ``size`` = (H, W): the resolution frames are resized to. Labels are mapped to the class set ``classes``
    (``ClassSet.table`` of the dataset's label space). ``crop_bottom`` (SYNTHIA-Seq only): rows dropped at the
    bottom of every frame and label before resizing. ``ignore_ego_vehicle`` (VIPER only): void the car
    region under the camera, as on real VIPER data. ``specs``: the split's ``list_split`` result, when the caller
    has listed it already (it is listed here otherwise, with ``selection``: ``conditions`` / ``sequences``).
    ``out_dir`` appears complete or not at all: it is built in a temporary folder and renamed at the end.
    """
    def viper_frames(spec, size, table):
        return viper.sequence_frames(spec, size, ignore_ego_vehicle=ignore_ego_vehicle, table=table)

    def synthia_frames(spec, size, table):
        return synthia_seq.sequence_frames(spec, size, table, crop_bottom)

    readers = {"viper": viper_frames, "cityscapes_vps": cityscapes_vps.clip_frames, "synthia_seq": synthia_frames,
               "cityscapes_seq": cityscapes_seq.clip_frames}
    if dataset not in readers:
        raise DataError(f"dataset: unknown dataset {dataset!r} (expected one of {sorted(readers)})")
    table = classes.table(LABEL_SPACE[dataset])
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"size: expected (H, W) with positive entries, got {size}")
    if specs is None:
        specs = list_split(dataset, root, split, min_frames, **selection)
    frames = readers[dataset]
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for spec in track(specs, description=f"prepare {dataset}/{split}"):
            write_clip(tmp / spec.name, frames(spec, size, table), spec.labeled, spec.frame_names, size,
                       classes.num_classes)
    return [out_dir / spec.name for spec in specs]
