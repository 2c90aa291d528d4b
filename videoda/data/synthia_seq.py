"""SYNTHIA-Seq (Ros et al., CVPR 2016: the SYNTHIA-SEQS video sequences), a synthetic source domain of the video
UDA works after the paper (DA-VSN and TPS train on SYNTHIA-SEQS-04-DAWN), in its two published layouts.

``official``, the SYNTHIA-SEQS-<nn>-<COND> archives as extracted (only the front camera of the left pair is read):

    <root>/<sequence>/RGB/Stereo_Left/Omni_F/<frame>.png           RGB frames, e.g. 000000.png
    <root>/<sequence>/GT/LABELS/Stereo_Left/Omni_F/<frame>.png     labels (below)

``davsn``, DA-VSN's ``data/SynthiaSeq/SEQS-04-DAWN`` (its ``SynthiaSeqDataSet.get_metadata``: ``root/'rgb'/name``
and ``root/'label'/name``, names ``000001.png``... from ``SynthiaSeq_list/train.txt``):

    <root>/<sequence>/rgb/<frame>.png
    <root>/<sequence>/label/<frame>.png                              the same label PNGs

``<sequence>`` is a folder name (``SYNTHIA-SEQS-04-DAWN``; DA-VSN names it ``SEQS-04-DAWN``). Every frame has a
label; frame numbers must be consecutive (a frame missing from the middle is a DataError naming it, since a pair
(t - tau, t) across the gap would silently span more real frames than tau).

Label PNGs have 3 channels of 16 bits: the first (R) holds the class id (``SYNTHIA_CLASSES``), the second the
instance id of dynamic objects. Sources: the SYNTHIA-SEQS README ("Annotations are given in two channels. The
first channel contains the class of that pixel ... The second channel contains the unique ID of the instance for
those objects that are dynamic", as quoted by Datumaro's SYNTHIA format page) and the peers' readers: DA-VSN's
``BaseDataset.get_labels_synthia_seq`` (imageio/FreeImage, RGB order: ``[:, :, 0]``; TPS uses the same code),
Datumaro's ``synthia_format`` (cv2, BGR order: ``[:, :, 2]``) and UnifiedVideoDA's SYNTHIA-Seq conversion (cv2:
``[:, :, -1]``). cv2 decodes BGR, so the class id is channel 2 here. An 8-bit label file is rejected: converting
16-bit ids to 8 bits (keeping the high byte, or rescaling) turns the ids 0..15 into 0 or 1.

DA-VSN drops the bottom 120 of the 760 rows of every frame and label (``image[:-120]``), leaving 1280x640,
Cityscapes' 2:1: ``sequence_frames``' ``crop_bottom``.
"""

from functools import partial
from pathlib import Path

import cv2
import numpy as np

from videoda.data.classes import SYNTHIA_CLASSES
from videoda.data.clips import Clip
from videoda.data.video import VideoSpec, load_video, lookup, read_frames
from videoda.errors import DataError, ParamError
from videoda.utils.images import read_unchanged, write_rgb
from videoda.utils.io import atomic_path

# {layout: (frames folder, labels folder)} inside a sequence folder.
LAYOUTS = {
    "official": ("RGB/Stereo_Left/Omni_F", "GT/LABELS/Stereo_Left/Omni_F"),
    "davsn": ("rgb", "label"),
}
_CLASS_CHANNEL = 2   # the PNG's first channel (R) in cv2's BGR order


def _folders(root, sequence, layout):
    if layout not in LAYOUTS:
        raise ParamError(f"layout: unknown SYNTHIA-Seq layout {layout!r} (expected one of {sorted(LAYOUTS)})")
    frames, labels = LAYOUTS[layout]
    return Path(root) / sequence / frames, Path(root) / sequence / labels


def write_label(path, synthia_ids, instance_ids=None):
    """Write a SYNTHIA label PNG as the dataset stores it: 3 channels of 16 bits, the class id in the first, the
    instance id (0 if None) in the second, 0 in the third."""
    ids = np.asarray(synthia_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= len(SYNTHIA_CLASSES)):
        raise DataError(f"{path}: SYNTHIA class ids must lie in 0..{len(SYNTHIA_CLASSES) - 1}")
    bgr = np.zeros(ids.shape + (3,), np.uint16)
    bgr[..., _CLASS_CHANNEL] = ids
    if instance_ids is not None:
        bgr[..., 1] = instance_ids
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), bgr):
            raise DataError(f"{path}: could not write label image")
    return Path(path)


def write_frame(root, sequence, frame, image_rgb, synthia_ids, layout="official", instance_ids=None):
    """Write frame number ``frame`` of ``sequence`` (a 6-digit name, as SYNTHIA's) and its SYNTHIA class ids in
    ``layout``; returns (image path, label path)."""
    frames_dir, labels_dir = _folders(root, sequence, layout)
    name = f"{int(frame):06d}.png"
    if np.shape(synthia_ids) != np.shape(image_rgb)[:2]:
        raise DataError(f"{labels_dir / name}: labels {np.shape(synthia_ids)} do not match image "
                        f"{np.shape(image_rgb)}")
    label = write_label(labels_dir / name, synthia_ids, instance_ids)
    write_rgb(frames_dir / name, image_rgb)
    return frames_dir / name, label


def _frame_files(frames_dir) -> dict:
    """{frame number: path} of a frames folder, numbers consecutive."""
    frames = {}
    for path in frames_dir.glob("*.png"):
        if not path.stem.isdigit():
            raise DataError(f"{path}: expected a frame named <number>.png")
        if int(path.stem) in frames:
            raise DataError(f"{path}: frame {int(path.stem)} is stored twice ({frames[int(path.stem)].name})")
        frames[int(path.stem)] = path
    if not frames:
        raise DataError(f"{frames_dir}: sequence folder holds no frames")
    numbers = sorted(frames)
    for a, b in zip(numbers, numbers[1:]):
        if b != a + 1:
            width = len(frames[a].stem)
            raise DataError(f"{frames_dir / f'{a + 1:0{width}d}.png'}: frame missing (frame numbers "
                            f"{numbers[0]}..{numbers[-1]} must be consecutive, so that a pair never spans a gap)")
    return frames


def list_sequences(root, sequences, layout) -> list:
    """The SYNTHIA-Seq sequences ``sequences`` (folder names under ``root``, e.g. ["SYNTHIA-SEQS-04-DAWN"]) as
    VideoSpecs in ``layout`` (``LAYOUTS``): frames in number order, each with its label file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: SYNTHIA-Seq root folder not found")
    sequences = [str(s) for s in sequences]
    if not sequences:
        raise ParamError("sequences: no SYNTHIA-Seq sequence listed")
    if len(set(sequences)) != len(sequences):
        raise ParamError(f"sequences: a sequence is listed twice in {sequences}")
    specs = []
    for name in sequences:
        frames_dir, labels_dir = _folders(root, name, layout)
        for folder in (root / name, frames_dir, labels_dir):
            if not folder.is_dir():
                raise DataError(f"{folder}: SYNTHIA-Seq folder not found (layout {layout!r})")
        frames = _frame_files(frames_dir)
        images = [frames[n] for n in sorted(frames)]
        labels = [labels_dir / p.name for p in images]
        for label in labels:
            if not label.is_file():
                raise DataError(f"{label}: label file not found for frame {frames_dir / label.name}")
        names = {p.name for p in images}
        strays = sorted(p.name for p in labels_dir.glob("*.png") if p.name not in names)
        if strays:
            raise DataError(f"{labels_dir / strays[0]}: label file without a frame in {frames_dir}")
        specs.append(VideoSpec(name, images, labels, [f"{name}_{p.stem}" for p in images]))
    return specs


def read_label(path, table) -> np.ndarray:
    """A SYNTHIA label PNG -> our train ids (uint8, IGNORE_ID for void), at full resolution.

    ``table``: {SYNTHIA class id (index of ``SYNTHIA_CLASSES``): our train id (IGNORE_ID for void)}."""
    label = read_unchanged(path)
    channels = label.shape[2] if label.ndim == 3 else 1
    if label.dtype != np.uint16 or channels != 3:
        raise DataError(f"{path}: expected a 3-channel 16-bit SYNTHIA label PNG (class id in its first channel), "
                        f"got {channels} channel(s) of {label.dtype}")
    ids = label[..., _CLASS_CHANNEL]
    unknown = np.unique(ids[ids >= len(SYNTHIA_CLASSES)])
    if unknown.size:
        raise DataError(f"{path}: class ids {unknown[:5].tolist()} are not SYNTHIA-SEQS class ids "
                        f"(0..{len(SYNTHIA_CLASSES) - 1})")
    return lookup(ids, table, path)


def sequence_frames(spec: VideoSpec, size, table, crop_bottom):
    """Yield a sequence's (image, labels) frame by frame: ``crop_bottom`` rows dropped at the bottom of each, then
    resized to ``size`` = (H, W). ``table``: as in ``read_label``."""
    return read_frames(spec, size, partial(read_label, table=table), crop_bottom)


def load_sequence(spec: VideoSpec, size, table, crop_bottom) -> Clip:
    """A whole sequence in memory (``sequence_frames`` stacked into a Clip)."""
    return load_video(spec, size, partial(read_label, table=table), crop_bottom)
