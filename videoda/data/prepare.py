"""The ``prepare`` stage: convert a dataset in its published layout into one ``.npz`` clip per video.

Also holds the frame-level helpers the two dataset modules share (reading, id mapping, resizing), so that
every bad input is reported the same way: a ``DataError`` that names the file.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.progress import track

from videoda.data.classes import IGNORE_ID
from videoda.data.clips import Clip, DataError, save_clip
from videoda.utils.io import atomic_path


@dataclass
class VideoSpec:
    """One video as found on disk: frame images in temporal order, and the label of each (None: unlabelled)."""
    name: str
    images: list
    labels: list
    frame_names: list

    def __len__(self):
        return len(self.images)


def read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:  # cv2 reports missing, truncated and non-image files alike by returning None
        raise DataError(f"{path}: unreadable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_png(path) -> Image.Image:
    """Open a label PNG with PIL, which (unlike cv2) keeps palette indices instead of expanding them to colours."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: unreadable label image ({e})") from e
    return image


def read_label_png(path) -> np.ndarray:
    """(H, W) integer label map of a single-channel (grey or palette-index) PNG, e.g. predictions or pseudo labels."""
    labels = np.array(read_png(path))
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a single-channel integer label PNG, got {labels.dtype} {labels.shape}")
    return labels


def lookup(ids: np.ndarray, table: dict, path) -> np.ndarray:
    """Map an id array through ``table`` (id -> train id); an id outside the table is a DataError."""
    unknown = np.setdiff1d(np.unique(ids), np.fromiter(table, int))
    if unknown.size:
        raise DataError(f"{path}: label ids {unknown.tolist()} are not in the class list")
    lut = np.full(256, IGNORE_ID, np.uint8)
    lut[list(table)] = list(table.values())
    return lut[ids]


def colors_to_ids(rgb: np.ndarray, palette: np.ndarray, path, unknown=None) -> np.ndarray:
    """(H, W, 3) colour-coded labels -> index into ``palette``; colours not in it become ``unknown`` or raise."""
    def key(c):
        c = np.asarray(c, np.int64)
        return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    colors, inverse = np.unique(key(rgb).ravel(), return_inverse=True)
    # Later palette entries must not override earlier ones when two classes share a colour.
    index = {}
    for i, k in enumerate(key(palette).tolist()):
        index.setdefault(k, i)
    missing = [c for c in colors.tolist() if c not in index]
    if missing and unknown is None:
        rgbs = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in missing[:5]]
        raise DataError(f"{path}: label colours {rgbs} are not in the class palette")
    ids = np.array([index.get(c, unknown) for c in colors.tolist()], np.uint8)
    return ids[inverse].reshape(rgb.shape[:2])


def write_rgb(path, image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{path}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DataError(f"{path}: could not write image")


def write_ids(path, ids: np.ndarray, palette=None):
    """Write a single-channel 8-bit PNG of ids; with ``palette`` it is an indexed PNG, as VIPER ships them."""
    label = Image.fromarray(np.ascontiguousarray(ids, np.uint8))
    if palette is not None:
        label.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    with atomic_path(path) as tmp:
        label.save(tmp, format="PNG")


def resize_frame(image: np.ndarray, labels: np.ndarray, size):
    """Resize to ``size`` = (H, W): area averaging for images (downscaling), nearest for label ids."""
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, labels


def load_video(spec: VideoSpec, size, read_label) -> Clip:
    """Read, check and resize every frame of ``spec``; ``read_label(path) -> train ids at full resolution``."""
    images, labels = [], []
    for image_path, label_path in zip(spec.images, spec.labels):
        image = read_rgb(image_path)
        if label_path is None:
            label = np.full(image.shape[:2], IGNORE_ID, np.uint8)
        else:
            label = read_label(label_path)
            if label.shape != image.shape[:2]:
                raise DataError(f"{label_path}: label size {label.shape} differs from image {image_path} "
                                f"size {image.shape[:2]}")
        image, label = resize_frame(image, label, size)
        images.append(image)
        labels.append(label)
    labeled = np.array([p is not None for p in spec.labels], bool)
    return Clip(spec.name, np.stack(images), np.stack(labels), labeled, np.array(spec.frame_names, str))


def prepare_split(dataset: str, root, split: str, out_dir, size, min_frames: int = 1, ignore_ego_vehicle=True):
    """Convert every video of ``root/split`` into ``out_dir/<name>.npz``; returns the written paths.

    ``ignore_ego_vehicle`` (VIPER only): void the car region under the camera, as on real VIPER data.
    ``out_dir`` appears complete or not at all: it is built in a temporary folder and renamed at the end.
    """
    from videoda.data import cityscapes_vps, viper  # here: both modules import the helpers above

    def load_viper(spec, size):
        return viper.load_sequence(spec, size, ignore_ego_vehicle=ignore_ego_vehicle)

    readers = {"viper": (viper.list_sequences, load_viper),
               "cityscapes_vps": (cityscapes_vps.list_clips, cityscapes_vps.load_clip)}
    if dataset not in readers:
        raise DataError(f"dataset: unknown dataset {dataset!r} (expected one of {sorted(readers)})")
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"size: expected (H, W) with positive entries, got {size}")
    list_videos, load = readers[dataset]
    specs = list_videos(root, split)  # raises on a missing root/split folder or an empty split
    for spec in specs:  # check lengths first, so a short video fails before minutes of decoding
        if len(spec) < min_frames:
            raise DataError(f"{spec.images[0]}: {dataset} video {spec.name!r} has {len(spec)} frames, "
                            f"fewer than min_frames={min_frames}")
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for spec in track(specs, description=f"prepare {dataset}/{split}"):
            save_clip(tmp / f"{spec.name}.npz", load(spec, size))
    return [out_dir / f"{spec.name}.npz" for spec in specs]
