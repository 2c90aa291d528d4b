"""VIPER (Richter et al., ICCV 2017), the synthetic source domain, in its published layout.

    <root>/<split>/img/<seq>/<seq>_<frame>.jpg|png    RGB frames (VIPER ships both a JPG and a PNG version)
    <root>/<split>/cls/<seq>/<seq>_<frame>.png        class labels, an indexed 8-bit PNG whose pixel values
                                                       are the class ids of classes.csv (VIPER_CLASSES)

e.g. ``train/img/001/001_00010.jpg`` and ``train/cls/001/001_00010.png``. A sequence is one ``<seq>`` folder;
its frames are ordered by frame number. Label PNGs decoded to colours (what cv2 makes of a palette PNG, or a
re-saved RGB file) are accepted too and mapped back through the classes.csv palette.
"""

from functools import partial
from pathlib import Path

import cv2
import numpy as np

from videoda.data.classes import VIPER_CLASSES, VIPER_PALETTE, VIPER_TO_TRAIN
from videoda.data.clips import Clip
from videoda.data.video import VideoSpec, colors_to_ids, load_video, lookup
from videoda.errors import DataError
from videoda.utils.images import read_png, write_ids, write_rgb

_CAR = VIPER_CLASSES.index("car")


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


def list_sequences(root, split) -> list:
    """All sequences of ``root/split`` as VideoSpecs (frames sorted by number, every frame labelled)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: VIPER root folder not found")
    img_dir, cls_dir = root / split / "img", root / split / "cls"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: VIPER split folder not found")
    specs = []
    for seq_dir in sorted(p for p in img_dir.iterdir() if p.is_dir()):
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
        images = [frames[f] for f in sorted(frames)]  # numeric order, whatever the zero padding
        labels = [cls_dir / seq_dir.name / f"{p.stem}.png" for p in images]
        for label in labels:
            if not label.is_file():
                raise DataError(f"{label}: label file not found")
        specs.append(VideoSpec(seq_dir.name, images, labels, [p.stem for p in images]))
    if not specs:
        raise DataError(f"{img_dir}: no frames found")
    return specs


def read_label(path, ignore_ego_vehicle=True) -> np.ndarray:
    """A ``cls`` PNG -> our train ids (uint8, IGNORE_ID for void), at full resolution."""
    image = read_png(path)
    if image.mode in ("P", "L", "I", "I;16"):
        ids = np.asarray(image)
    elif image.mode in ("RGB", "RGBA"):
        ids = colors_to_ids(np.asarray(image.convert("RGB")), VIPER_PALETTE, path)
    else:
        raise DataError(f"{path}: unsupported label PNG mode {image.mode}")
    if ignore_ego_vehicle:
        ids = _drop_ego_vehicle(ids)
    return lookup(ids, VIPER_TO_TRAIN, path)


def _drop_ego_vehicle(ids):
    # Driving sequences show the bonnet of the ego car, labelled car; Cityscapes labels its ego vehicle void.
    # As DA-VSN/TPS do, the car region touching the bottom-centre pixel is made unlabelled.
    h, w = ids.shape
    car = (ids == _CAR).astype(np.uint8)
    if not car[h - 1, w // 2]:
        return ids
    _, components = cv2.connectedComponents(car)
    return np.where(components == components[h - 1, w // 2], 0, ids)


def load_sequence(spec: VideoSpec, size, ignore_ego_vehicle=True) -> Clip:
    """Read a sequence at ``size`` = (H, W): RGB uint8 (INTER_AREA), train ids (INTER_NEAREST), all labelled."""
    return load_video(spec, size, partial(read_label, ignore_ego_vehicle=ignore_ego_vehicle))
