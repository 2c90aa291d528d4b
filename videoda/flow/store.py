"""The flow store: every flow that video self-training needs for one split, in one HDF5 file.

Layout (``format_version`` 1; conventions in ``videoda.flow``)::

    /                      attrs: format_version, method, height, width (the resolution), deltas (e.g. [1] or
                           [1, 3]), complete, and what identifies the estimator: checkpoint (file name) and
                           checkpoint_sha256 (of the whole file) for a ptlflow model, dis_preset for dis,
                           gt_root for gt
    /<clip>/               attrs: num_frames (T)
    /<clip>/fwd<d>         float16 (T - d, H, W, 2): fwd<d>[t] = F_{t -> t+d}   (on frame t's grid)
    /<clip>/bwd<d>         float16 (T - d, H, W, 2): bwd<d>[t] = F_{t+d -> t}   (on frame t+d's grid)

one pair of datasets per frame distance ``d`` in ``deltas``: 1 (the neighbours of Eq. 10) and tau (Eq. 12),
stored once when tau = 1. Chunks hold one flow field (gzip level 1 with byte shuffling, a third smaller than
raw), so reading one pair reads one chunk. float16 keeps vectors to 1/2048 of their magnitude (under 0.07 px
below 128 px of motion), far below any estimator's error.

Readers get a ``DataError`` naming the file for a missing, truncated, corrupt or incomplete file, and naming
the clip and frames for a pair that is not stored.
"""

import h5py
import numpy as np

from videoda.errors import DataError

FORMAT_VERSION = 1
DTYPE = np.float16


def stored_pairs(num_frames, deltas):
    """The (src, dst) frame pairs a store holds for a clip of ``num_frames`` frames."""
    return [pair for d in sorted(set(deltas)) for t in range(num_frames - d) for pair in ((t, t + d), (t + d, t))]


class FlowWriter:
    """Write a store clip by clip; ``close()`` marks it complete (write under ``atomic_path``)."""

    def __init__(self, path, deltas, height, width, method, attrs=None):
        """``attrs``: more root attributes (str or numbers), e.g. the checkpoint and its sha256."""
        self.path, self.deltas, self.size = path, sorted(set(int(d) for d in deltas)), (height, width)
        if not self.deltas or self.deltas[0] < 1:
            raise ValueError(f"{path}: frame distances must be >= 1, got {deltas}")
        self.file = h5py.File(path, "w")
        self.file.attrs.update(attrs or {})
        self.file.attrs.update(format_version=FORMAT_VERSION, method=method, height=height, width=width,
                               deltas=np.array(self.deltas, np.int64), complete=False)

    def add_clip(self, name, num_frames, flows):
        """``flows[(src, dst)]`` = F_{src->dst} (H, W, 2) for every pair the layout holds."""
        group = self.file.create_group(name)
        group.attrs["num_frames"] = num_frames
        h, w = self.size
        for d in self.deltas:
            starts = range(num_frames - d)
            for kind, pairs in (("fwd", [(t, t + d) for t in starts]), ("bwd", [(t + d, t) for t in starts])):
                data = np.stack([flows[pair] for pair in pairs]).astype(DTYPE)
                if data.shape[1:] != (h, w, 2):
                    raise ValueError(f"{self.path}: clip {name} flows are {data.shape[1:]}, expected {(h, w, 2)}")
                group.create_dataset(f"{kind}{d}", data=data, chunks=(1, h, w, 2), compression="gzip",
                                     compression_opts=1, shuffle=True)

    def close(self):
        self.file.attrs["complete"] = True
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.close()
        else:
            self.file.close()


class FlowStore:
    """Read a store: ``store.flow(clip, src, dst)`` is F_{src->dst}, float32 (H, W, 2); ``store.attrs`` holds the
    root attributes (method, checkpoint_sha256, ...) as Python values. Memory: the metadata of one clip's
    datasets, whatever the number of clips read (reading another clip's flows reopens the file)."""

    def __init__(self, path):
        self.path = path
        self.clip_read = None            # the clip whose metadata the open file holds
        self._open()

    def _open(self):
        path = self.path
        try:
            self.file = h5py.File(path, "r")
        except FileNotFoundError as e:
            raise DataError(f"{path}: flow file not found (run the flow stage)") from e
        except OSError as e:      # truncated, not HDF5, unreadable
            raise DataError(f"{path}: not a readable flow file ({e})") from e
        try:
            attrs = self.file.attrs
            if attrs.get("format_version") != FORMAT_VERSION:
                raise DataError(f"{path}: flow file format {attrs.get('format_version')!r}, expected "
                                f"{FORMAT_VERSION}")
            if not attrs.get("complete", False):
                raise DataError(f"{path}: incomplete flow file (its writer did not finish)")
            self.method = str(attrs["method"])
            self.height, self.width = int(attrs["height"]), int(attrs["width"])
            self.deltas = [int(d) for d in attrs["deltas"]]
            self.attrs = {k: v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic)
                          else v for k, v in attrs.items()}
        except DataError:
            self.file.close()
            raise
        except (OSError, KeyError, ValueError) as e:
            self.file.close()
            raise DataError(f"{path}: corrupt flow file header ({e})") from e

    @property
    def clips(self):
        return sorted(self.file.keys())

    def num_frames(self, clip):
        return int(self._group(clip).attrs["num_frames"])

    def _group(self, clip):
        if clip != self.clip_read:
            # HDF5 keeps the metadata of every dataset read while the file is open: small blocks that live on
            # between a clip's large arrays fragment the heap, and the peak RSS of a pass over the clips grew
            # with their number. Reopening (under a millisecond) when another clip is read frees them.
            if self.clip_read is not None:
                self.file.close()
                self._open()
            self.clip_read = clip
        if clip not in self.file:
            raise DataError(f"{self.path}: no flows for clip '{clip}' (the flow stage ran on other clips)")
        return self.file[clip]

    def check_clip(self, clip, num_frames, height, width):
        """Raise unless the stored flows fit a clip of ``num_frames`` frames of ``height`` x ``width``."""
        stored = self.num_frames(clip)
        if (stored, self.height, self.width) != (num_frames, height, width):
            raise DataError(f"{self.path}: clip '{clip}' has flows for {stored} frames of {self.height} x "
                            f"{self.width}, the clip has {num_frames} frames of {height} x {width} "
                            f"(rerun the flow stage)")

    def flow(self, clip, src, dst):
        d = abs(dst - src)
        t = min(src, dst)
        n = self.num_frames(clip)
        if d not in self.deltas or not 0 <= t < n - d:
            raise DataError(f"{self.path}: no flow from frame {src} to frame {dst} of clip '{clip}' "
                            f"({n} frames, frame distances {self.deltas} stored)")
        name = f"{'fwd' if dst > src else 'bwd'}{d}"
        try:
            return self._group(clip)[name][t].astype(np.float32)
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{self.path}: clip '{clip}' dataset '{name}' is unreadable ({e})") from e

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
