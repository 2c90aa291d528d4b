"""The frame-level helpers the dataset readers (``viper``, ``cityscapes_vps``, ``cityscapes_seq``, ``synthia_seq``)
share: a video as found on disk, id mapping, resizing, and reading a video frame by frame (``read_frames``, what
``prepare`` streams into ``write_clip``), so that every bad input is reported the same way: a ``DataError`` that
names the file.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from videoda.data.classes import IGNORE_ID
from videoda.data.clips import Clip
from videoda.errors import DataError, ParamError
from videoda.utils.images import read_rgb


@dataclass
class VideoSpec:
    """One video as found on disk: frame images in temporal order, and the label of each (None: unlabelled)."""
    name: str
    images: list
    labels: list
    frame_names: list

    def __len__(self):
        return len(self.images)

    @property
    def labeled(self) -> np.ndarray:
        """bool (T,): True where the frame has a label file."""
        return np.array([p is not None for p in self.labels], bool)


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


def resize_frame(image: np.ndarray, labels: np.ndarray, size):
    """Resize to ``size`` = (H, W): area averaging for images (downscaling), nearest for label ids."""
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, labels


def read_frames(spec: VideoSpec, size, read_label, crop_bottom=0):
    """Yield (image, labels) for each frame of ``spec`` in order: read, checked and resized to ``size`` = (H, W),
    one frame at a time; ``read_label(path) -> train ids at full resolution``, IGNORE_ID where a frame has no
    label file. ``crop_bottom``: rows dropped at the bottom of every image and label before resizing."""
    if crop_bottom < 0:
        raise ParamError(f"crop_bottom: rows to drop must be >= 0, got {crop_bottom}")
    for image_path, label_path in zip(spec.images, spec.labels):
        image = read_rgb(image_path)
        if label_path is None:
            label = np.full(image.shape[:2], IGNORE_ID, np.uint8)
        else:
            label = read_label(label_path)
            if label.shape != image.shape[:2]:
                raise DataError(f"{label_path}: label size {label.shape} differs from image {image_path} "
                                f"size {image.shape[:2]}")
        if crop_bottom:
            height = image.shape[0]
            if crop_bottom >= height:
                raise DataError(f"{image_path}: crop_bottom={crop_bottom} drops all {height} rows of the frame")
            image, label = image[:height - crop_bottom], label[:height - crop_bottom]
        image, label = resize_frame(image, label, size)
        yield image, label
        del image, label    # one frame in memory: this one is freed before the next is decoded


def load_video(spec: VideoSpec, size, read_label, crop_bottom=0) -> Clip:
    """The whole video in memory as a ``Clip`` (tests, small videos; ``prepare`` streams ``read_frames``)."""
    images, labels = [], []
    for image, label in read_frames(spec, size, read_label, crop_bottom):
        images.append(image)
        labels.append(label)
    return Clip(spec.name, np.stack(images), np.stack(labels), spec.labeled, np.array(spec.frame_names, str))
