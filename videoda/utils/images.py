"""Frame and label image files: reading and (atomically) writing RGB frames and single-channel label PNGs.

Every bad file is reported the same way: a ``DataError`` that names it.
"""

import cv2
import numpy as np
from PIL import Image

from videoda.errors import DataError
from videoda.utils.io import atomic_path


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
