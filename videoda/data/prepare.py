"""The ``prepare`` stage: convert a dataset in its published layout into one clip folder per video
(``videoda.data.clips``), streamed frame by frame: one frame is in memory at a time, whatever a video's length."""

from pathlib import Path

from videoda.data import cityscapes_seq, cityscapes_vps, synthia_seq, viper
from videoda.data.classes import DEFAULT
from videoda.data.clips import ORIGINAL_LABELS, write_clip, write_original_labels
from videoda.errors import DataError
from videoda.utils.io import atomic_path
from videoda.utils.progress import progress


def list_split(data, split: str, min_frames: int = 1) -> list:
    """The videos of split ``split`` of the dataset ``data`` (its settings, ``videoda.config.SourceDataset`` or
    ``TargetDataset``: ``dataset``, ``root``, ...) as VideoSpecs, checked without decoding a frame: the dataset
    name, the root and split folders, the file names and label files, and every video's length (``min_frames``).

    ``data.conditions`` / ``data.sequences`` (VIPER): which sequences to convert (``viper.select_sequences``; None
    or empty for both: every sequence). SYNTHIA-Seq has no split: ``data.sequences`` (a list, or a file of names)
    are its sequence folders under ``data.root``, in ``data.layout``."""
    def list_viper(root, split):
        return viper.list_sequences(root, split, conditions=data.conditions, sequences=data.sequences)

    def list_synthia(root, split):
        sequences = data.sequences
        names = viper.read_sequence_list(sequences) if isinstance(sequences, str) else sequences
        return synthia_seq.list_sequences(root, names, data.layout)

    listings = {"viper": list_viper, "cityscapes_vps": cityscapes_vps.list_clips, "synthia_seq": list_synthia,
                "cityscapes_seq": cityscapes_seq.list_clips}
    dataset = data.dataset
    if dataset not in listings:
        raise DataError(f"dataset: unknown dataset {dataset!r} (expected one of {sorted(listings)})")
    specs = listings[dataset](data.root, split)  # raises on a missing root/split folder or an empty split
    for spec in specs:  # check lengths first, so a short video fails before minutes of decoding
        if len(spec) < min_frames:
            raise DataError(f"{spec.images[0]}: {dataset} video {spec.name!r} has {len(spec)} frames, "
                            f"fewer than min_frames={min_frames}")
    return specs


# The label space each dataset's label files hold, as the class sets' maps name them.
LABEL_SPACE = {"viper": "viper", "cityscapes_vps": "cityscapes", "synthia_seq": "synthia",
               "cityscapes_seq": "cityscapes"}


def prepare_split(data, split: str, out_dir, min_frames: int = 1, classes=DEFAULT, specs=None,
                  keep_original=False, show_progress=False):
    """Convert every video of split ``split`` of the dataset ``data`` (its settings, ``videoda.config.SourceDataset``
    or ``TargetDataset``) into the clip folder ``out_dir/<name>``; returns the written paths.

    ``data.height`` x ``data.width``: the resolution frames are resized to. Labels are mapped to the class set
    ``classes`` (``ClassSet.table`` of the dataset's label space). ``data.crop_bottom`` (SYNTHIA-Seq only): rows
    dropped at the bottom of every frame and label before resizing. ``data.ignore_ego_vehicle`` (VIPER only): void
    the car region under the camera, as on real VIPER data. ``specs``: the split's ``list_split`` result, when the
    caller has listed it already (it is listed here otherwise, with ``min_frames``). ``out_dir`` appears complete
    or not at all: it is built in a temporary folder and renamed at the end. Runs on the CPU, with a progress bar if
    ``show_progress``. ``keep_original`` (target-val): a clip whose label files are not at ``data.height`` x
    ``data.width`` also keeps its annotated frames' labels at the files' own resolution (``keep_original_labels``),
    what ``evaluate.resolution: labels`` scores against.
    """
    def viper_frames(spec, size, table):
        return viper.sequence_frames(spec, size, ignore_ego_vehicle=data.ignore_ego_vehicle, table=table)

    def synthia_frames(spec, size, table):
        return synthia_seq.sequence_frames(spec, size, table, data.crop_bottom)

    readers = {"viper": viper_frames, "cityscapes_vps": cityscapes_vps.clip_frames, "synthia_seq": synthia_frames,
               "cityscapes_seq": cityscapes_seq.clip_frames}
    dataset = data.dataset
    if dataset not in readers:
        raise DataError(f"dataset: unknown dataset {dataset!r} (expected one of {sorted(readers)})")
    table = classes.table(LABEL_SPACE[dataset])
    size = (int(data.height), int(data.width))
    if min(size) < 1:
        raise DataError(f"size: expected (H, W) with positive entries, got {size}")
    if specs is None:
        specs = list_split(data, split, min_frames)
    frames = readers[dataset]
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for spec in progress(specs, f"prepare {dataset}/{split}", show_progress):
            write_clip(tmp / spec.name, frames(spec, size, table), spec.labeled, spec.frame_names, size,
                       classes.num_classes)
            if keep_original:
                keep_original_labels(tmp / spec.name, spec, dataset, table, size, classes.num_classes)
    return [out_dir / spec.name for spec in specs]


# The label reader of each target dataset, at the label files' own resolution.
ORIGINAL_LABEL_READERS = {"cityscapes_vps": cityscapes_vps.read_label, "cityscapes_seq": cityscapes_seq.read_label}


def keep_original_labels(clip_dir, spec, dataset, table, size, num_classes):
    """Write ``clip_dir/labels_original.npy``: the annotated frames of ``spec`` (a target dataset's video) labelled
    at their files' resolution, one label map in memory at a time, unless that resolution is ``size`` (the clip's
    own labels are then the original ones; nothing written). Returns whether it was written."""
    if dataset not in ORIGINAL_LABEL_READERS:
        raise DataError(f"dataset: original-resolution labels are kept for {sorted(ORIGINAL_LABEL_READERS)}, "
                        f"not {dataset!r}")
    read = ORIGINAL_LABEL_READERS[dataset]
    paths = [p for p in spec.labels if p is not None]
    if not paths or read(paths[0], table).shape == tuple(size):
        return False
    write_original_labels(clip_dir / ORIGINAL_LABELS, (read(p, table) for p in paths), len(paths), num_classes)
    return True
