"""The internal clip format that ``prepare`` writes and every later stage reads.

One ``.npz`` file per clip, whatever dataset it came from:

- ``images``: uint8 (T, H, W, 3), RGB, at the training resolution;
- ``labels``: uint8 (T, H, W), train ids 0..14, ``IGNORE_ID`` for void pixels and for frames without labels;
- ``labeled``: bool (T,), True where the frame has a ground-truth label;
- ``frame_names``: str (T,), the original frame file stems (predictions are written under these names).

Splits live side by side: ``<root>/source``, ``<root>/target_train``, ``<root>/target_val``.
"""

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.errors import DataError
from videoda.utils.io import atomic_path

SPLITS = ("source", "target_train", "target_val")

# What np.load raises on a damaged .npz: a truncated or overwritten archive (BadZipFile, EOFError), a member
# whose bytes fail their CRC or decompression, a member missing (KeyError) or not an array (ValueError).
NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass
class Clip:
    name: str
    images: np.ndarray
    labels: np.ndarray
    labeled: np.ndarray
    frame_names: np.ndarray

    def __len__(self):
        return len(self.images)


def save_clip(path, clip: Clip):
    """Write a clip atomically after checking shapes and label ids."""
    t, h, w, c = clip.images.shape
    if c != 3 or clip.images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (T, H, W, 3), got {clip.images.dtype} {clip.images.shape}")
    if clip.labels.shape != (t, h, w):
        raise DataError(f"{path}: labels shape {clip.labels.shape} does not match images {(t, h, w)}")
    bad = (clip.labels >= NUM_CLASSES) & (clip.labels != IGNORE_ID)
    if bad.any():
        raise DataError(f"{path}: label ids {sorted(set(np.unique(clip.labels[bad]).tolist()))} are not train ids")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=clip.images, labels=clip.labels.astype(np.uint8),
                     labeled=np.asarray(clip.labeled, bool), frame_names=np.asarray(clip.frame_names, str))


def load_clip(path) -> Clip:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: clip file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return Clip(path.stem, z["images"], z["labels"], z["labeled"], z["frame_names"])
    except NPZ_ERRORS as e:
        raise DataError(f"{path}: not a readable clip file ({type(e).__name__}: {e}); "
                        f"rerun the prepare stage") from e


def list_clips(root, split):
    d = Path(root) / split
    if not d.is_dir():
        raise DataError(f"{d}: split folder not found (run the prepare stage)")
    paths = sorted(d.glob("*.npz"))
    if not paths:
        raise DataError(f"{d}: no clips")
    return paths
