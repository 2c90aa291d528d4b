"""The internal clip format that ``prepare`` writes and every later stage reads.

One folder per clip, ``<root>/<split>/<clip>/``, whatever dataset it came from, holding plain ``.npy`` files:

- ``images.npy``: uint8 (T, H, W, 3), RGB, at the training resolution;
- ``labels.npy``: uint8 (T, H, W), train ids 0..14, ``IGNORE_ID`` for void pixels and for frames without labels;
- ``labeled.npy``: bool (T,), True where the frame has a ground-truth label;
- ``frame_names.npy``: str (T,), the original frame file stems (predictions are written under these names);
- ``labels_original.npy`` (target-val clips whose label files are larger than the training resolution, e.g.
  Cityscapes' 2048 x 1024): uint8 (N, H0, W0), the N annotated frames' labels at the label files' own resolution,
  in frame order, for ``evaluate.resolution: labels``. Absent: the label files have the training resolution.

Splits live side by side: ``<root>/source``, ``<root>/target_train``, ``<root>/target_val``.

Frames are stored uncompressed, one after the other behind the ``.npy`` header, so frame t lies at a known byte
offset: ``load_clip`` returns a ``Clip`` whose ``images`` and ``labels`` are ``FrameArray``s that read only the
frames they are indexed with, and ``write_clip`` writes a clip frame by frame. No reader or writer holds more than
the frames it asks for, whatever the number and length of the clips (``benchmarks/frame_format.py`` compares this
with encoded PNG/JPEG frames).
"""

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.errors import DataError
from videoda.utils.io import atomic_path

SPLITS = ("source", "target_train", "target_val")
IMAGES, LABELS, LABELED, FRAME_NAMES = "images.npy", "labels.npy", "labeled.npy", "frame_names.npy"
ORIGINAL_LABELS = "labels_original.npy"

# What np.load raises on a damaged .npz (the confusion matrices): a truncated or overwritten archive (BadZipFile,
# EOFError), a member whose bytes fail their CRC or decompression, a member missing (KeyError) or not an array.
NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
# What reading a damaged .npy raises: a short or foreign header (ValueError), an empty file (EOFError), a folder
# or an unreadable file (OSError).
NPY_ERRORS = (OSError, ValueError, EOFError)


def _unreadable(path, e):
    return DataError(f"{path}: not a readable clip file ({type(e).__name__}: {e}); rerun the prepare stage")


def _pread_into(fd, out: np.ndarray, offset: int, path):
    """Fill the C-contiguous array ``out`` with the file's bytes from ``offset``."""
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):   # one read returns at most ~2 GiB on Linux
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise DataError(f"{path}: the file ends at byte {offset + done}, inside a frame (it was truncated after "
                            f"it was opened); rerun the prepare stage")
        done += n


class FrameArray:
    """The frames of one ``.npy`` file of shape (T, ...), read from disk when indexed.

    ``a[t]``, ``a[[t0, t1]]``, ``a[i:j]`` (any step), an int or bool index array, optionally followed by basic
    indices on the frame axes (``a[t, :, ::-1]``), each return a fresh numpy array holding only those frames;
    ``len``, ``shape``, ``dtype`` and ``ndim`` read nothing; iterating yields one frame at a time; ``np.asarray(a)``
    reads them all. The file is opened for each read and never mapped: mapped file pages count in a process's
    RSS and would grow with the frames touched; an object holds no file descriptor, so thousands of them cost
    nothing and they pickle into DataLoader workers.
    """

    def __init__(self, path, shape, dtype, offset):
        self.path, self.shape, self.dtype, self.offset = Path(path), tuple(shape), np.dtype(dtype), int(offset)
        self.frame_shape = self.shape[1:]
        self.frame_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def open(cls, path):
        """Read and check the header of the ``.npy`` file ``path``; a damaged file is a DataError naming it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: clip file not found; rerun the prepare stage")
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
                offset, size = f.tell(), os.fstat(f.fileno()).st_size
        except NPY_ERRORS as e:
            raise _unreadable(path, e) from e
        if fortran_order or dtype.hasobject or len(shape) < 1:
            raise DataError(f"{path}: not a clip array (shape {shape}, dtype {dtype}, Fortran order "
                            f"{fortran_order}); rerun the prepare stage")
        array = cls(path, shape, dtype, offset)
        if size != offset + array.nbytes:
            raise DataError(f"{path}: the file holds {size} bytes, its header announces {offset + array.nbytes} "
                            f"(truncated or overwritten); rerun the prepare stage")
        return array

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def nbytes(self):
        return self.shape[0] * self.frame_bytes

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"FrameArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def _frames(self, key):
        """The frame numbers ``key`` selects (non-negative ints, in order) and the leading shape of the result."""
        n = len(self)
        if isinstance(key, slice):
            frames = np.arange(*key.indices(n))
            return frames, frames.shape
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index of shape {index.shape} for {n} frames")
            frames = np.flatnonzero(index)
            return frames, frames.shape
        if index.size == 0:
            index = index.astype(np.int64)
        if not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"frames are indexed by ints, slices or int/bool arrays, not {key!r}")
        if ((index < -n) | (index >= n)).any():
            raise IndexError(f"frame index {key!r} out of range for {n} frames ({self.path})")
        return np.where(index < 0, index + n, index).ravel(), index.shape

    def _read(self, frames, lead_shape):
        out = np.empty((len(frames), *self.frame_shape), self.dtype)
        if out.size:
            with open(self.path, "rb", buffering=0) as f:
                start = 0
                while start < len(frames):   # one read per run of consecutive frames
                    stop = start + 1
                    while stop < len(frames) and frames[stop] == frames[stop - 1] + 1:
                        stop += 1
                    _pread_into(f.fileno(), out[start:stop], self.offset + int(frames[start]) * self.frame_bytes,
                                self.path)
                    start = stop
        return out.reshape(*lead_shape, *self.frame_shape)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            if not key or key[0] is Ellipsis or key[0] is None:
                return np.asarray(self)[key]
            key, rest = key[0], key[1:]
            if any(not (isinstance(k, (int, np.integer, slice)) or k is None or k is Ellipsis) for k in rest):
                raise IndexError("index the frames first; only ints, slices, None and ... may follow")
        frames, lead_shape = self._frames(key)
        out = self._read(frames, lead_shape)
        return out[(slice(None),) * len(lead_shape) + rest] if rest else out

    def __iter__(self):
        for t in range(len(self)):
            yield self[t]

    def __array__(self, dtype=None, copy=None):
        out = self._read(np.arange(len(self)), (len(self),))
        return out if dtype is None else out.astype(dtype, copy=False)


FrameData = Union[np.ndarray, FrameArray]


@dataclass
class Clip:
    """A clip: ``images`` (T, H, W, 3) and ``labels`` (T, H, W) are numpy arrays (a clip built in memory) or
    ``FrameArray``s (``load_clip``), indexed alike; ``labeled`` and ``frame_names`` are numpy arrays (T,);
    ``original_labels`` (N, H0, W0): the N annotated frames' labels at the label files' resolution, where it
    differs from the clip's (``ORIGINAL_LABELS``), else None."""
    name: str
    images: FrameData
    labels: FrameData
    labeled: np.ndarray
    frame_names: np.ndarray
    original_labels: Optional[FrameData] = None

    def __len__(self):
        return len(self.images)


def _npy_header(f, shape):
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                              "fortran_order": False, "shape": tuple(int(s) for s in shape)})


def write_clip(path, frames, labeled, frame_names, size, num_classes=NUM_CLASSES):
    """Write the clip folder ``path`` from ``frames``, an iterable of (image uint8 (H, W, 3), labels (H, W): train
    ids 0..``num_classes`` - 1 or IGNORE_ID) at ``size`` = (H, W), one frame in memory at a time; ``labeled`` and
    ``frame_names`` (T,) give the clip's length.

    Each frame is checked (shape, dtype, train ids) as it comes; the folder appears complete or not at all
    (``atomic_path``). Returns ``path``.
    """
    path = Path(path)
    labeled, frame_names = np.asarray(labeled, bool), np.asarray(frame_names, str)
    t_len = len(labeled)
    if labeled.shape != (t_len,) or frame_names.shape != (t_len,):
        raise DataError(f"{path}: labeled {labeled.shape} and frame_names {frame_names.shape} must be two (T,) "
                        f"arrays of the same length")
    h, w = (int(s) for s in size)
    written = 0
    with atomic_path(path) as tmp:
        tmp.mkdir()
        with open(tmp / IMAGES, "wb") as image_file, open(tmp / LABELS, "wb") as label_file:
            _npy_header(image_file, (t_len, h, w, 3))
            _npy_header(label_file, (t_len, h, w))
            for image, labels in frames:
                if written == t_len:
                    raise DataError(f"{path}: more frames than the {t_len} of its frame_names")
                where = f"{path}: frame {written} ({frame_names[written]})"
                image, labels = np.asarray(image), np.asarray(labels)
                if image.shape != (h, w, 3) or image.dtype != np.uint8:
                    raise DataError(f"{where}: images must be uint8 {(h, w, 3)}, got {image.dtype} {image.shape}")
                if labels.shape != (h, w):
                    raise DataError(f"{where}: labels shape {labels.shape} does not match images {(h, w)}")
                bad = ((labels >= num_classes) & (labels != IGNORE_ID)) | (labels < 0)
                if bad.any():
                    raise DataError(f"{where}: label ids {sorted(set(np.unique(labels[bad]).tolist()))} are not "
                                    f"train ids")
                image_file.write(np.ascontiguousarray(image).data)
                label_file.write(np.ascontiguousarray(labels.astype(np.uint8, copy=False)).data)
                written += 1
                del image, labels   # one frame in memory: this one is freed before the next is read
        if written != t_len:
            raise DataError(f"{path}: {written} frames written, its frame_names list {t_len}")
        np.save(tmp / LABELED, labeled)
        np.save(tmp / FRAME_NAMES, frame_names)
    return path


def write_original_labels(path, labels, count, num_classes=NUM_CLASSES):
    """Write ``path`` (``ORIGINAL_LABELS``) from ``labels``, an iterable of ``count`` label maps (H0, W0) of train
    ids 0..``num_classes`` - 1 or IGNORE_ID, all of one size, one in memory at a time, in the layout ``FrameArray``
    reads (frames one after the other). Returns ``path``."""
    path, written = Path(path), 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for labels_t in labels:
            labels_t = np.asarray(labels_t)
            if written == 0:
                shape = labels_t.shape
                _npy_header(f, (count, *shape))
            if labels_t.ndim != 2 or labels_t.shape != shape:
                raise DataError(f"{path}: label map {written} has shape {labels_t.shape}, the first {shape}")
            bad = ((labels_t >= num_classes) & (labels_t != IGNORE_ID)) | (labels_t < 0)
            if bad.any():
                raise DataError(f"{path}: label map {written}: ids {sorted(set(np.unique(labels_t[bad]).tolist()))} "
                                f"are not train ids")
            f.write(np.ascontiguousarray(labels_t.astype(np.uint8, copy=False)).data)
            written += 1
        if written != count:
            raise DataError(f"{path}: {written} label maps written, {count} expected")
    return path


def save_clip(path, clip: Clip):
    """Write a clip (in memory, or loaded) atomically as the folder ``path`` after checking shapes and label ids."""
    t, h, w, c = clip.images.shape
    if c != 3 or clip.images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (T, H, W, 3), got {clip.images.dtype} {clip.images.shape}")
    if clip.labels.shape != (t, h, w):
        raise DataError(f"{path}: labels shape {clip.labels.shape} does not match images {(t, h, w)}")
    return write_clip(path, zip(clip.images, clip.labels), clip.labeled, clip.frame_names, (h, w))


def _load_small(path):
    if not path.is_file():
        raise DataError(f"{path}: clip file not found; rerun the prepare stage")
    try:
        return np.load(path, allow_pickle=False)
    except NPY_ERRORS as e:
        raise _unreadable(path, e) from e


def load_clip(path) -> Clip:
    """The clip folder ``path``: frames read lazily (``FrameArray``), flags and names in memory. Every file is
    checked (present, readable, complete, shapes and dtypes agreeing); a bad one is a DataError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: clip folder not found; rerun the prepare stage")
    images, labels = FrameArray.open(path / IMAGES), FrameArray.open(path / LABELS)
    labeled, frame_names = _load_small(path / LABELED), _load_small(path / FRAME_NAMES)
    t = len(images)
    checks = [(images, images.ndim == 4 and images.shape[3] == 3 and images.dtype == np.uint8,
               "uint8 (T, H, W, 3)"),
              (labels, labels.shape == images.shape[:3] and labels.dtype == np.uint8, f"uint8 {images.shape[:3]}"),
              (labeled, labeled.shape == (t,) and labeled.dtype == bool, f"bool ({t},)"),
              (frame_names, frame_names.shape == (t,) and frame_names.dtype.kind == "U", f"str ({t},)")]
    for (array, ok, expected), name in zip(checks, (IMAGES, LABELS, LABELED, FRAME_NAMES)):
        if not ok:
            raise DataError(f"{path / name}: expected {expected}, got {array.dtype} {array.shape}; rerun the "
                            f"prepare stage")
    original = None
    if (path / ORIGINAL_LABELS).exists():
        original = FrameArray.open(path / ORIGINAL_LABELS)
        n = int(labeled.sum())
        if original.ndim != 3 or len(original) != n or original.dtype != np.uint8:
            raise DataError(f"{path / ORIGINAL_LABELS}: expected uint8 ({n}, H, W), one label map per annotated "
                            f"frame, got {original.dtype} {original.shape}; rerun the prepare stage")
    return Clip(path.name, images, labels, labeled, frame_names, original)


def list_clips(root, split):
    """The clip folders of ``root/split``, sorted by name (hidden folders, e.g. a writer's temporary ones, are
    not clips)."""
    d = Path(root) / split
    if not d.is_dir():
        raise DataError(f"{d}: split folder not found (run the prepare stage)")
    paths = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not paths:
        old = " (it holds .npz clips, the format before clip folders: rerun the prepare stage)" \
            if any(d.glob("*.npz")) else ""
        raise DataError(f"{d}: no clips{old}")
    return paths
