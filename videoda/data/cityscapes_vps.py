"""Cityscapes-VPS (Kim et al., CVPR 2020), the real target domain, in the layout VPSNet's scripts produce.

Each clip is 30 consecutive frames of one Cityscapes sequence; every 5th frame (6 per clip) is annotated.

    <root>/<split>/img/<clip>_<n>_<city>_<seq>_<frame>_{leftImg8bit,newImg8bit}.png    annotated frames
    <root>/<split>/labelmap/<clip>_<n>_<city>_<seq>_<frame>_{gtFine_color,final_mask}.png
                  Cityscapes train ids 0..18, 255 = void (8-bit grey), same stem as the image with
                  leftImg8bit -> gtFine_color (the frame taken from Cityscapes) or newImg8bit -> final_mask
    <root>/<split>/cls/<same name as labelmap>       the same labels as Cityscapes colours (used if no labelmap)
    <root>/<split>/img_all/<city>_<seq>_<frame>_leftImg8bit.png    all frames (VPSNet ships it for val/test)

e.g. ``val/img/0005_0025_frankfurt_000000_001736_newImg8bit.png``,
``val/labelmap/0005_0025_frankfurt_000000_001736_final_mask.png``,
``val/img_all/frankfurt_000000_001732_leftImg8bit.png``.

``img_all`` names carry no clip id, so a clip's unannotated frames are found as the run of consecutive frame
numbers (same city and sequence) that contains its annotated frames. Without ``img_all`` (VPSNet's train
split) a clip is its 6 annotated frames.
"""

import re
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

from videoda.data.classes import CITYSCAPES_PALETTE, CITYSCAPES_TO_TRAIN, IGNORE_ID
from videoda.data.clips import Clip
from videoda.data.video import VideoSpec, colors_to_ids, load_video, lookup, read_frames
from videoda.errors import DataError
from videoda.utils.images import read_png, write_ids, write_rgb

_ANNOTATED = re.compile(r"(\d+)_(\d+)_([^_]+)_(\d+)_(\d+)_(leftImg8bit|newImg8bit)")
_ALL = re.compile(r"([^_]+)_(\d+)_(\d+)_leftImg8bit")


def label_name(image_stem: str) -> str:
    """Label file name of an annotated frame, as VPSNet derives it."""
    return image_stem.replace("leftImg8bit", "gtFine_color").replace("newImg8bit", "final_mask") + ".png"


def write_frame(root, split, clip_id, frame_index, image_rgb, cityscapes_ids_or_None, city="synth"):
    """Write frame ``frame_index`` of clip ``clip_id``; labels (Cityscapes train ids 0..18/255) only for annotated
    frames. Returns the written paths. Synthetic clips use ``<seq>`` = clip id and ``<frame>`` = frame index,
    and ``<n>`` = frame index + 1 (VPSNet numbers annotated frames globally; the readers ignore it)."""
    if not re.fullmatch(r"[A-Za-z0-9]+", city):
        raise DataError(f"city: {city!r} must be alphanumeric (it is a field of '_'-separated names)")
    split_dir = Path(root) / split
    clip_id, frame_index = int(clip_id), int(frame_index)
    base = f"{city}_{clip_id:06d}_{frame_index:06d}"
    paths = [split_dir / "img_all" / f"{base}_leftImg8bit.png"]
    write_rgb(paths[0], image_rgb)
    if cityscapes_ids_or_None is not None:
        stem = f"{clip_id:04d}_{frame_index + 1:04d}_{base}_newImg8bit"
        ids = np.asarray(cityscapes_ids_or_None)
        label_path = split_dir / "labelmap" / label_name(stem)
        if ids.shape != np.shape(image_rgb)[:2]:
            raise DataError(f"{label_path}: labels {ids.shape} do not match image {np.shape(image_rgb)}")
        if not np.isin(ids, list(CITYSCAPES_TO_TRAIN)).all():
            raise DataError(f"{label_path}: Cityscapes train ids must lie in 0..18 or be {IGNORE_ID}")
        paths += [split_dir / "img" / f"{stem}.png", label_path]
        write_rgb(paths[1], image_rgb)
        write_ids(label_path, ids)
    return paths


def _frames(folder, pattern, what):
    """{(city, seq, frame): path} of the PNGs in ``folder``, plus the regex groups of each."""
    found = {}
    for path in sorted(folder.glob("*.png")):
        m = pattern.fullmatch(path.stem)
        if m is None:
            raise DataError(f"{path}: not a Cityscapes-VPS {what} file name")
        found[path] = m.groups()
    return found


def _runs(keys):
    """Split (city, seq, frame) keys into runs of consecutive frames of one sequence."""
    runs = []
    for key in sorted(keys):
        prev = runs[-1][-1] if runs else None
        if prev and prev[:2] == key[:2] and prev[2] + 1 == key[2]:
            runs[-1].append(key)
        else:
            runs.append([key])
    return runs


def _label_path(split_dir, image_path):
    name = label_name(image_path.stem)
    for folder in ("labelmap", "cls"):
        if (split_dir / folder / name).is_file():
            return split_dir / folder / name
    raise DataError(f"{split_dir / 'labelmap' / name}: label file not found (nor in cls/)")


def list_clips(root, split) -> list:
    """All clips of ``root/split`` as VideoSpecs, frames ordered by frame number."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Cityscapes-VPS root folder not found")
    split_dir = root / split
    img_dir, all_dir = split_dir / "img", split_dir / "img_all"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: Cityscapes-VPS split folder not found")

    annotated, clip_keys = {}, defaultdict(list)
    for path, (clip, _, city, seq, frame, _) in _frames(img_dir, _ANNOTATED, "annotated frame").items():
        key = (city, int(seq), int(frame))
        if key in annotated:
            raise DataError(f"{path}: frame stored twice ({annotated[key].name})")
        annotated[key] = path
        clip_keys[clip].append(key)
    if not annotated:
        raise DataError(f"{img_dir}: no frames found")

    all_frames = {}
    if all_dir.is_dir():
        all_frames = {(city, int(seq), int(frame)): path
                      for path, (city, seq, frame) in _frames(all_dir, _ALL, "img_all").items()}
        if not all_frames:
            raise DataError(f"{all_dir}: no frames found")
    members = {clip: set(keys) for clip, keys in clip_keys.items()}
    for run in _runs(all_frames):
        clips = {clip for clip, keys in clip_keys.items() if set(keys) & set(run)}
        if len(clips) != 1:
            what = "belong to no annotated clip" if not clips else f"are shared by clips {sorted(clips)}"
            raise DataError(f"{all_frames[run[0]]}: consecutive img_all frames {what}")
        members[clips.pop()].update(run)

    specs = []
    for clip in sorted(members):
        keys = sorted(members[clip], key=lambda k: k[2])
        if len({k[:2] for k in keys}) != 1:
            raise DataError(f"{annotated[clip_keys[clip][0]]}: clip {clip} mixes several city sequences")
        images = [annotated.get(k) or all_frames[k] for k in keys]
        labels = [_label_path(split_dir, annotated[k]) if k in annotated else None for k in keys]
        specs.append(VideoSpec(clip, images, labels, [p.stem for p in images]))
    return specs


def read_label(path, table=CITYSCAPES_TO_TRAIN) -> np.ndarray:
    """A ``labelmap`` (Cityscapes train ids) or ``cls`` (colours) PNG -> train ids through ``table`` (Cityscapes
    train id -> ours: ``ClassSet.table("cityscapes")``; uint8, IGNORE_ID for void)."""
    image = read_png(path)
    if image.mode in ("L", "P", "I", "I;16"):
        ids = np.asarray(image)
    elif image.mode in ("RGB", "RGBA"):
        # Colours outside the 19 classes are Cityscapes' void classes, as in VPSNet's own conversion.
        ids = colors_to_ids(np.asarray(image.convert("RGB")), CITYSCAPES_PALETTE, path, unknown=IGNORE_ID)
    else:
        raise DataError(f"{path}: unsupported label PNG mode {image.mode}")
    return lookup(ids, table, path)


def clip_frames(spec: VideoSpec, size, table=CITYSCAPES_TO_TRAIN):
    """Yield a clip's (image, labels) frame by frame at ``size`` = (H, W), labels through ``table``; unannotated
    frames get IGNORE_ID labels (``spec.labeled`` False)."""
    return read_frames(spec, size, partial(read_label, table=table))


def load_clip(spec: VideoSpec, size, table=CITYSCAPES_TO_TRAIN) -> Clip:
    """A whole clip in memory (``clip_frames`` stacked into a Clip)."""
    return load_video(spec, size, partial(read_label, table=table))
