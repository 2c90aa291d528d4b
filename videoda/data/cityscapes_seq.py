"""Cityscapes-Seq (Cordts et al., CVPR 2016: Cityscapes' ``leftImg8bit_sequence`` with its ``gtFine``), the real
target domain of the video UDA works after the paper (DA-VSN, TPS, CMOM, QuadMix), in its published layout.

    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png     every frame
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png               Cityscapes label ids

e.g. ``leftImg8bit_sequence/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png`` and
``gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png``. For each finely annotated frame f,
Cityscapes ships the 30-frame snippet f-19..f+10 around it (its README: "-19 | +10"): f is the snippet's 20th
frame and its only annotated one. The other gtFine files (``_color``, ``_instanceIds``, ``_polygons.json``, a
``_labelTrainIds`` made by cityscapesScripts) are not read.

A clip is one snippet, named after its annotated frame (``frankfurt_000000_000294``). What the reader requires,
each violation being a DataError that names the file:

- every ``_gtFine_labelIds`` file has all 30 frames f-19..f+10 of its city and sequence in
  ``leftImg8bit_sequence``: a gtFine file without its sequence frames, or a snippet with a frame missing;
- every frame of ``leftImg8bit_sequence`` lies in exactly one snippet: a frame outside every snippet, or two
  annotated frames of a sequence less than 30 frames apart (snippets that overlap, so a snippet with two
  annotated frames), is an error.

Frames are identified by the numbers in their names (city, sequence, frame), so a snippet's frames are 30
consecutive frame numbers whatever their zero padding; a number stored twice (``0294`` and ``000294``) is an error.

Labels are mapped in two steps: Cityscapes label ids -> Cityscapes train ids (0..18, 255 = void) by the official
table of cityscapesScripts (``CITYSCAPES_LABELS``), then -> our train ids by the caller's ``table``.
"""

import re
from functools import partial
from pathlib import Path

import numpy as np

from videoda.data.clips import Clip
from videoda.data.video import VideoSpec, load_video, lookup, read_frames
from videoda.errors import DataError
from videoda.utils.images import read_png, write_ids, write_rgb

FRAMES_BEFORE, FRAMES_AFTER = 19, 10          # a snippet: frames f-19..f+10 around the annotated frame f
SNIPPET_LENGTH = FRAMES_BEFORE + 1 + FRAMES_AFTER
FRAMES_DIR, LABELS_DIR = "leftImg8bit_sequence", "gtFine"
FRAME_SUFFIX, LABEL_SUFFIX = "_leftImg8bit", "_gtFine_labelIds"

# Cityscapes' labels (cityscapesScripts, helpers/labels.py): (label id, name, train id), train id 255 = void.
# License plate has label id -1 and train id -1: it is never drawn into label images (json2labelImg skips negative
# ids), so a labelIds PNG holds 0..33; it is listed for completeness and maps to void.
CITYSCAPES_LABELS = (
    (0, "unlabeled", 255), (1, "ego vehicle", 255), (2, "rectification border", 255), (3, "out of roi", 255),
    (4, "static", 255), (5, "dynamic", 255), (6, "ground", 255), (7, "road", 0), (8, "sidewalk", 1),
    (9, "parking", 255), (10, "rail track", 255), (11, "building", 2), (12, "wall", 3), (13, "fence", 4),
    (14, "guard rail", 255), (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5), (18, "polegroup", 255),
    (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8), (22, "terrain", 9), (23, "sky", 10),
    (24, "person", 11), (25, "rider", 12), (26, "car", 13), (27, "truck", 14), (28, "bus", 15),
    (29, "caravan", 255), (30, "trailer", 255), (31, "train", 16), (32, "motorcycle", 17), (33, "bicycle", 18),
    (-1, "license plate", 255),
)
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = {label_id: train_id for label_id, _, train_id in CITYSCAPES_LABELS}

_LABEL_IDS = np.array(sorted(CITYSCAPES_LABEL_ID_TO_TRAIN_ID))                     # -1, 0, ..., 33
_LABEL_ID_LUT = np.array([CITYSCAPES_LABEL_ID_TO_TRAIN_ID[i] for i in _LABEL_IDS], np.uint8)   # index: id + 1
_NAME = {suffix: re.compile(r"([A-Za-z]+)_(\d+)_(\d+)" + suffix) for suffix in (FRAME_SUFFIX, LABEL_SUFFIX)}


def frame_path(root, split, city, seq, frame) -> Path:
    """Where Cityscapes stores a sequence frame (6-digit sequence and frame numbers)."""
    return Path(root) / FRAMES_DIR / split / city / f"{city}_{int(seq):06d}_{int(frame):06d}{FRAME_SUFFIX}.png"


def label_path(root, split, city, seq, frame) -> Path:
    """Where Cityscapes stores the label ids of an annotated frame."""
    return Path(root) / LABELS_DIR / split / city / f"{city}_{int(seq):06d}_{int(frame):06d}{LABEL_SUFFIX}.png"


def write_frame(root, split, city, seq, frame, image_rgb, label_ids_or_None=None):
    """Write one sequence frame and, for an annotated frame, its Cityscapes label ids (uint8 (H, W), values among
    the label ids 0..33) as a grey ``_gtFine_labelIds`` PNG. Returns the written paths."""
    if not re.fullmatch(r"[A-Za-z]+", city):
        raise DataError(f"city: {city!r} must be letters only (it is a field of '_'-separated names)")
    paths = [frame_path(root, split, city, seq, frame)]
    if label_ids_or_None is not None:
        paths.append(label_path(root, split, city, seq, frame))
        ids = np.asarray(label_ids_or_None)
        if ids.shape != np.shape(image_rgb)[:2]:
            raise DataError(f"{paths[1]}: labels {ids.shape} do not match image {np.shape(image_rgb)}")
        if ids.size and (ids.min() < 0 or ids.max() > 33):
            raise DataError(f"{paths[1]}: Cityscapes label ids must lie in 0..33")
    write_rgb(paths[0], image_rgb)
    if label_ids_or_None is not None:
        write_ids(paths[1], ids)
    return paths


def _scan(split_dir, suffix, what, pattern) -> dict:
    """{(city, seq, frame): path} of the files ``pattern`` matches in the city folders of ``split_dir``; each must be
    named ``<city>_<seq>_<frame><suffix>.png``."""
    found = {}
    for city_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for path in sorted(city_dir.glob(pattern)):
            m = _NAME[suffix].fullmatch(path.stem)
            if m is None or m.group(1) != city_dir.name:
                raise DataError(f"{path}: not a Cityscapes-Seq {what} file name (expected "
                                f"{city_dir.name}_<seq>_<frame>{suffix}.png)")
            key = (m.group(1), int(m.group(2)), int(m.group(3)))
            if key in found:
                raise DataError(f"{path}: frame stored twice ({found[key].name})")
            found[key] = path
    return found


def list_clips(root, split) -> list:
    """The snippets of ``root``'s ``split`` as VideoSpecs, one per annotated frame, in (city, sequence, frame)
    order: 30 frames in order, labels[i] the gtFine labelIds file on the annotated (20th) frame, None elsewhere."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Cityscapes-Seq root folder not found")
    frames_dir, labels_dir = root / FRAMES_DIR / split, root / LABELS_DIR / split
    for folder in (frames_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: Cityscapes-Seq split folder not found")
    frames = _scan(frames_dir, FRAME_SUFFIX, "frame", "*.png")    # every PNG there must be a frame
    labels = _scan(labels_dir, LABEL_SUFFIX, "label", f"*{LABEL_SUFFIX}.png")   # gtFine's other files are not read
    if not labels:
        raise DataError(f"{labels_dir}: no *{LABEL_SUFFIX}.png file found")

    owner, specs = {}, []
    for annotated in sorted(labels):
        city, seq, f = annotated
        keys = [(city, seq, n) for n in range(f - FRAMES_BEFORE, f + FRAMES_AFTER + 1)]
        for key in keys:
            if key not in frames:
                raise DataError(f"{frame_path(root, split, *key)}: frame missing from the {SNIPPET_LENGTH}-frame "
                                f"snippet (frames {f - FRAMES_BEFORE}..{f + FRAMES_AFTER}) of {labels[annotated]}")
            if key in owner:
                raise DataError(f"{frames[key]}: frame of the snippets of both {labels[owner[key]].name} and "
                                f"{labels[annotated].name} (annotated frames must be {SNIPPET_LENGTH} frames apart)")
            owner[key] = annotated
        images = [frames[key] for key in keys]
        clip_labels = [labels[annotated] if key == annotated else None for key in keys]
        specs.append(VideoSpec(f"{city}_{seq:06d}_{f:06d}", images, clip_labels, [p.stem for p in images]))
    strays = sorted(set(frames) - set(owner))
    if strays:
        raise DataError(f"{frames[strays[0]]}: frame outside every snippet (no {LABEL_SUFFIX} file for a frame "
                        f"{FRAMES_AFTER} before to {FRAMES_BEFORE} after it)")
    return specs


def cityscapes_train_ids(label_ids: np.ndarray, path) -> np.ndarray:
    """Cityscapes label ids -> Cityscapes train ids (uint8, 255 = void); an id outside the table is a DataError."""
    label_ids = np.asarray(label_ids, np.int64)
    unknown = np.setdiff1d(np.unique(label_ids), _LABEL_IDS)
    if unknown.size:
        raise DataError(f"{path}: label ids {unknown.tolist()} are not Cityscapes label ids (0..33, -1)")
    return _LABEL_ID_LUT[label_ids + 1]


def read_label(path, table) -> np.ndarray:
    """A ``_gtFine_labelIds`` PNG -> our train ids (uint8, IGNORE_ID for void), at full resolution.

    ``table``: {Cityscapes train id (0..18 and 255): our train id (IGNORE_ID for void)}."""
    image = read_png(path)
    if image.mode not in ("L", "I", "I;16"):
        raise DataError(f"{path}: expected a single-channel labelIds PNG, got PNG mode {image.mode}")
    return lookup(cityscapes_train_ids(np.asarray(image), path), table, path)


def clip_frames(spec: VideoSpec, size, table):
    """Yield a snippet's (image, labels) frame by frame at ``size`` = (H, W); the 29 unannotated frames get
    IGNORE_ID labels (``spec.labeled`` False). ``table``: as in ``read_label``."""
    return read_frames(spec, size, partial(read_label, table=table))


def load_clip(spec: VideoSpec, size, table) -> Clip:
    """A whole snippet in memory (``clip_frames`` stacked into a Clip)."""
    return load_video(spec, size, partial(read_label, table=table))
