"""Per-clip arrays parked on disk, for the statistics that read the whole target set more than once (CBST's
thresholds, Table 7's search, P-mIoU at equal proportion) while memory holds one clip.

A ``Spill`` writes each item (a clip's confidence and argmax maps, say) as ``.npy`` files in a folder the
caller owns (a temporary folder, removed after), keeps only the items' names in memory, and reads them back one
item at a time, in the order written, as often as asked.
"""

from pathlib import Path

import numpy as np
import torch


def to_numpy(array):
    """A tensor (any device) or array as a numpy array on the CPU."""
    return array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)


class Spill:
    """Items of named arrays in ``folder`` (which must exist): ``append(name, **arrays)``, then ``view(*keys)``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.names = []

    def __len__(self):
        return len(self.names)

    def _path(self, i, key):
        return self.folder / f"{i:06d}.{key}.npy"

    def append(self, name, **arrays):
        """Write one item's arrays (tensors are copied to the CPU)."""
        for key, array in arrays.items():
            np.save(self._path(len(self.names), key), to_numpy(array), allow_pickle=False)
        self.names.append(name)

    def read(self, i, keys):
        return tuple(np.load(self._path(i, key), allow_pickle=False) for key in keys)

    def view(self, *keys):
        """A re-iterable of ``(name, (array per key))`` in the order written, read from disk on each pass."""
        return SpillView(self, keys)

    def chunks(self, *keys):
        """A function returning a fresh iterator of the tuples of arrays ``keys`` of every item (one pass)."""
        return lambda: (arrays for _, arrays in self.view(*keys))


class SpillView:
    def __init__(self, spill, keys):
        self.spill, self.keys = spill, keys

    def __iter__(self):
        for i, name in enumerate(self.spill.names):
            yield name, self.spill.read(i, self.keys)
