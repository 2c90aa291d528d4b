"""VIPER (Richter et al., ICCV 2017), the synthetic source domain, in its published layout.

    <root>/<split>/img/<seq>/<seq>_<frame>.jpg|png    RGB frames (VIPER ships both a JPG and a PNG version)
    <root>/<split>/cls/<seq>/<seq>_<frame>.png        class labels, an indexed 8-bit PNG whose pixel values
                                                       are the class ids of classes.csv (VIPER_CLASSES)

    <root>/<split>/conditions.csv                      optional: ``sequence,condition`` per sequence (below)

e.g. ``train/img/001/001_00010.jpg`` and ``train/cls/001/001_00010.png``. A sequence is one ``<seq>`` folder;
its frames are ordered by frame number. Label PNGs decoded to colours (what cv2 makes of a palette PNG, or a
re-saved RGB file) are accepted too and mapped back through the classes.csv palette.

Labels may cover only some frames (VIPER is commonly used with every 10th frame labelled, e.g. DA-VSN's list
of ``*0`` frames): a frame without a ``cls`` file is unlabelled (void, ``labeled`` False in its Clip). Frame
numbers must be consecutive: a frame missing from the middle of ``img/`` is a DataError naming it, since a
pair (t - tau, t) across the gap would silently span more real frames than tau.

Sequences are selected by environmental condition (``VIPER_CONDITIONS``: day, sunset, rain, night, snow; the
paper trains on "day") read from ``<split>/conditions.csv`` (a header ``sequence,condition``, then one row per
sequence), which the embedded benchmark writes, or by an explicit list of sequence ids.
"""

import csv
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from videoda.data.classes import VIPER_CLASSES, VIPER_CONDITIONS, VIPER_PALETTE, VIPER_TO_TRAIN
from videoda.data.clips import Clip
from videoda.data.video import VideoSpec, colors_to_ids, load_video, lookup, read_frames
from videoda.errors import DataError
from videoda.utils.images import read_png, write_ids, write_rgb

_CAR = VIPER_CLASSES.index("car")
CONDITIONS_FILE = "conditions.csv"


def _seq_name(seq) -> str:
    return f"{seq:03d}" if isinstance(seq, (int, np.integer)) else str(seq)


def write_frame(root, split, seq, index, image_rgb, viper_ids):
    """Write one frame and its VIPER class ids (uint8 (H, W), values in 0..31); returns (image, label) paths."""
    seq = _seq_name(seq)
    stem = f"{seq}_{int(index):05d}"
    image_path = Path(root) / split / "img" / seq / f"{stem}.png"
    label_path = Path(root) / split / "cls" / seq / f"{stem}.png"
    viper_ids = np.asarray(viper_ids)
    if viper_ids.shape != np.shape(image_rgb)[:2]:
        raise DataError(f"{label_path}: labels {viper_ids.shape} do not match image {np.shape(image_rgb)}")
    if viper_ids.size and (viper_ids.min() < 0 or viper_ids.max() >= len(VIPER_CLASSES)):
        raise DataError(f"{label_path}: VIPER ids must lie in 0..{len(VIPER_CLASSES) - 1}")
    write_rgb(image_path, image_rgb)
    write_ids(label_path, viper_ids, palette=VIPER_PALETTE)
    return image_path, label_path


def write_conditions(root, split, conditions: dict):
    """Write ``root/split/conditions.csv`` from {sequence: condition} (a condition of ``VIPER_CONDITIONS``)."""
    path = Path(root) / split / CONDITIONS_FILE
    bad = {seq: c for seq, c in conditions.items() if c not in VIPER_CONDITIONS}
    if bad:
        raise DataError(f"{path}: conditions {bad} are not among {list(VIPER_CONDITIONS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "condition"])
        w.writerows([_seq_name(seq), c] for seq, c in sorted(conditions.items(), key=lambda kv: _seq_name(kv[0])))
    return path


def read_conditions(root, split) -> dict:
    """{sequence name: condition} from ``root/split/conditions.csv``; a missing file or a bad row is a DataError."""
    path = Path(root) / split / CONDITIONS_FILE
    if not path.is_file():
        raise DataError(f"{path}: VIPER conditions file not found; list the sequences to use in "
                        f"prepare.source.sequences instead")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["sequence", "condition"]:
        raise DataError(f"{path}: expected the header 'sequence,condition'")
    found = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or row[1].strip() not in VIPER_CONDITIONS:
            raise DataError(f"{path}:{line}: expected '<sequence>,<condition>' with a condition among "
                            f"{list(VIPER_CONDITIONS)}, got {','.join(row)!r}")
        found[row[0].strip()] = row[1].strip()
    return found


def _key(name):
    """Sequence ids compare by number when numeric ('1' is '001'), else by name."""
    name = str(name).strip()
    return int(name) if name.isdigit() else name


def read_sequence_list(path) -> list:
    """Sequence ids from a text file: one a line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: sequence list file (prepare.source.sequences) not found")
    ids = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [i for i in ids if i]


def select_sequences(root, split, names, conditions=None, sequences=None) -> list:
    """The sequence folders of ``names`` to use: those listed in ``sequences`` (ids, or a file of ids: a path)
    if given, else those whose condition in ``conditions.csv`` is one of ``conditions``, else all of them."""
    img_dir = Path(root) / split / "img"
    by_key = {_key(n): n for n in names}
    if sequences is not None:
        ids = read_sequence_list(sequences) if isinstance(sequences, (str, Path)) else list(sequences)
        if not ids:
            raise DataError(f"prepare.source.sequences: no sequence listed ({sequences})")
        for i in ids:
            if _key(i) not in by_key:
                raise DataError(f"prepare.source.sequences: sequence {str(i)!r} is not in {img_dir}")
        chosen = {by_key[_key(i)] for i in ids}
    elif conditions is not None:
        recorded = {_key(seq): c for seq, c in read_conditions(root, split).items()}
        path = Path(root) / split / CONDITIONS_FILE
        for n in names:
            if _key(n) not in recorded:
                raise DataError(f"{path}: no condition recorded for sequence {n!r}")
        chosen = {n for n in names if recorded[_key(n)] in conditions}
        if not chosen:
            raise DataError(f"{path}: no sequence of {img_dir} has a condition among {list(conditions)}")
    else:
        chosen = set(names)
    return [n for n in names if n in chosen]


def _frame_files(seq_dir) -> dict:
    """{frame number: image path} of a sequence folder, with the zero padding of each name."""
    frames = {}
    for path in [*seq_dir.glob("*.jpg"), *seq_dir.glob("*.png")]:
        seq, _, frame = path.stem.rpartition("_")
        if seq != seq_dir.name or not frame.isdigit():
            raise DataError(f"{path}: expected a frame named {seq_dir.name}_<number>")
        if int(frame) in frames:
            raise DataError(f"{path}: frame {frame} is stored twice ({frames[int(frame)].name})")
        frames[int(frame)] = path
    if not frames:
        raise DataError(f"{seq_dir}: sequence folder holds no frames")
    numbers = sorted(frames)
    for a, b in zip(numbers, numbers[1:]):
        if b != a + 1:
            width = len(frames[a].stem.rpartition("_")[2])
            missing = seq_dir / f"{seq_dir.name}_{a + 1:0{width}d}{frames[a].suffix}"
            raise DataError(f"{missing}: frame missing from sequence {seq_dir.name} (frame numbers "
                            f"{numbers[0]}..{numbers[-1]} must be consecutive, so that a pair never spans a gap)")
    return frames


def list_sequences(root, split, conditions=None, sequences=None) -> list:
    """The sequences of ``root/split`` as VideoSpecs (frames sorted by number; label None where a frame has no
    ``cls`` file), selected by ``conditions`` / ``sequences`` (``select_sequences``; None: every sequence)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: VIPER root folder not found")
    img_dir, cls_dir = root / split / "img", root / split / "cls"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: VIPER split folder not found")
    names = sorted(p.name for p in img_dir.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"{img_dir}: no frames found")
    specs = []
    for name in select_sequences(root, split, names, conditions, sequences):
        seq_dir = img_dir / name
        frames = _frame_files(seq_dir)
        images = [frames[f] for f in sorted(frames)]  # numeric order, whatever the zero padding
        labels = [cls_dir / name / f"{p.stem}.png" for p in images]
        labels = [p if p.is_file() else None for p in labels]
        if not any(labels):
            raise DataError(f"{cls_dir / name}: no label file for any frame of sequence {name}")
        stems = {p.stem for p in images}
        strays = sorted(p.name for p in (cls_dir / name).glob("*.png") if p.stem not in stems)
        if strays:
            raise DataError(f"{cls_dir / name / strays[0]}: label file without a frame in {seq_dir}")
        specs.append(VideoSpec(name, images, labels, [p.stem for p in images]))
    return specs


def read_label(path, ignore_ego_vehicle=True, table=VIPER_TO_TRAIN) -> np.ndarray:
    """A ``cls`` PNG -> train ids through ``table`` (VIPER id -> train id: ``ClassSet.table("viper")``; uint8,
    IGNORE_ID for void), at full resolution."""
    image = read_png(path)
    if image.mode in ("P", "L", "I", "I;16"):
        ids = np.asarray(image)
    elif image.mode in ("RGB", "RGBA"):
        ids = colors_to_ids(np.asarray(image.convert("RGB")), VIPER_PALETTE, path)
    else:
        raise DataError(f"{path}: unsupported label PNG mode {image.mode}")
    if ignore_ego_vehicle:
        ids = _drop_ego_vehicle(ids)
    return lookup(ids, table, path)


def _drop_ego_vehicle(ids):
    # Driving sequences show the bonnet of the ego car, labelled car; Cityscapes labels its ego vehicle void.
    # As DA-VSN/TPS do, the car region touching the bottom-centre pixel is made unlabelled.
    h, w = ids.shape
    car = (ids == _CAR).astype(np.uint8)
    if not car[h - 1, w // 2]:
        return ids
    _, components = cv2.connectedComponents(car)
    return np.where(components == components[h - 1, w // 2], 0, ids)


def sequence_frames(spec: VideoSpec, size, ignore_ego_vehicle=True, table=VIPER_TO_TRAIN):
    """Yield a sequence's (image, labels) frame by frame at ``size`` = (H, W): RGB uint8 (INTER_AREA), train ids
    through ``table`` (INTER_NEAREST); frames without a label file are void (``spec.labeled`` False)."""
    return read_frames(spec, size, partial(read_label, ignore_ego_vehicle=ignore_ego_vehicle, table=table))


def load_sequence(spec: VideoSpec, size, ignore_ego_vehicle=True, table=VIPER_TO_TRAIN) -> Clip:
    """A whole sequence in memory (``sequence_frames`` stacked into a Clip)."""
    return load_video(spec, size, partial(read_label, ignore_ego_vehicle=ignore_ego_vehicle, table=table))
