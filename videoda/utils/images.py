"""Frame and label image files: reading and (atomically) writing RGB frames and single-channel label PNGs.

Every bad file is reported the same way: a ``DataError`` that names it.
"""

import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from videoda.errors import DataError
from videoda.utils.io import atomic_path


JPEG_START, JPEG_SOS, JPEG_EOI = b"\xff\xd8\xff", b"\xff\xda", b"\xff\xd9"
PNG_START = b"\x89PNG\r\n\x1a\n"


def _png_problem(data: bytes):
    """What is wrong with a PNG's chunk structure (None: nothing): every chunk complete up to ``IEND``, and the
    CRC of every critical chunk right (as libpng requires; it only warns about ancillary ones)."""
    view, pos = memoryview(data), len(PNG_START)
    while pos + 12 <= len(data):
        length, kind = int.from_bytes(view[pos:pos + 4], "big"), bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            break
        if kind[:1].isupper() and zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return f"corrupt PNG image (CRC error in its {kind.decode('latin-1')!r} chunk)"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated PNG image (it ends before its IEND chunk)"


def _check_complete(path, data: bytes):
    """Reject a truncated frame before cv2 decodes it. cv2 decodes a truncated JPEG without an error (libjpeg
    only warns "Premature end of JPEG file" and fills the missing rows with grey): a complete one has its
    end-of-image marker after its last start-of-scan marker, and neither byte pair can occur inside the
    entropy-coded data (0xff is stuffed there). cv2 does reject a truncated PNG, but libpng prints its own lines
    on stderr first: checking the chunks here gives one clear error instead."""
    if data.startswith(JPEG_START):
        last_scan = data.rfind(JPEG_SOS)
        if last_scan < 0 or data.rfind(JPEG_EOI) < last_scan:
            raise DataError(f"{path}: truncated JPEG image (no end-of-image marker after its last scan)")
    elif data.startswith(PNG_START):
        problem = _png_problem(data)
        if problem:
            raise DataError(f"{path}: {problem}")


def _decode(path, flags) -> np.ndarray:
    """cv2's decoding of the image file ``path`` with ``flags``; a missing, truncated or non-image file is a
    DataError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as e:   # a folder, no permission, an I/O error
        raise DataError(f"{path}: unreadable image ({e.strerror or e})") from None
    _check_complete(path, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None:  # cv2 reports truncated PNGs and non-image files alike by returning None
        raise DataError(f"{path}: unreadable image")
    return image


def read_rgb(path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame, decoded by cv2; a missing, truncated or non-image file is a DataError."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_unchanged(path) -> np.ndarray:
    """An image as stored: its channels (in cv2's BGR(A) order) and bit depth kept, e.g. SYNTHIA's 16-bit label
    PNGs, which PIL cannot decode; a missing, truncated or non-image file is a DataError."""
    return _decode(path, cv2.IMREAD_UNCHANGED)


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
