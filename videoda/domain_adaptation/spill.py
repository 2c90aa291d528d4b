"""Per-clip arrays parked on disk, for the statistics that read the whole target set more than once (CBST's
thresholds, Table 7's search, P-mIoU at equal proportion) while memory holds one clip.

A ``Spill`` writes each item (a clip's confidence and argmax maps, say) as ``.npy`` files in a folder the
caller owns (a temporary folder, removed after), keeps only the items' names in memory, and reads them back one
item at a time, in the order written, as often as asked.

A stage that resumes keeps its spill (``shared_spill``'s ``kept``): an item is whole once its done marker is
written, and a rerun writes only the items not done.

Under several processes (``shared_spill``) the ranks write the items they own into one folder that rank 0
made (on the filesystem every node sees), each under its index in the whole sequence; once every rank has
written (``Spill.write_shard``, a barrier), rank 0 reads them back in that order, as one process would have.
"""

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch

from videoda.utils.device import CPU
from videoda.utils.distributed import barrier
from videoda.utils.resume import is_done, mark_done
from videoda.utils.shards import shared_folder


def to_numpy(array):
    """A tensor (any device) or array as a numpy array on the CPU."""
    return array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)


class Spill:
    """Items of named arrays in ``folder`` (which must exist): ``append(name, **arrays)``, then ``view(*keys)``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.names = []                  # the items, in order; a rank's spill learns them in ``write_shard``

    def _path(self, i, key):
        return self.folder / f"{i:06d}.{key}.npy"

    def append(self, name, **arrays):
        """Write one item's arrays (tensors are copied to the CPU)."""
        self.write(len(self.names), **arrays)
        self.names.append(name)

    def write(self, i, **arrays):
        """Write the arrays of item ``i`` of the whole sequence (a rank writes the items it owns, in any order;
        ``write_shard`` then names them all)."""
        for key, array in arrays.items():
            np.save(self._path(i, key), to_numpy(array), allow_pickle=False)

    def write_shard(self, names, arrays_of, compute=CPU, description=""):
        """This rank's share of the sequence ``names`` (``compute.world.shard``; all of it for one process): item
        i's arrays ``arrays_of(i)`` written under i, then its done marker; an item done already (a kept spill of a
        killed run, ``shared_spill``'s ``kept``) is not computed again. Then, once every rank has written (a
        barrier), the spill holds all of ``names`` in order: ``view`` reads them so."""
        todo = [i for i in compute.world.shard(range(len(names))) if not is_done(self.folder, i)]
        for i in compute.progress(todo, description=description):
            self.write(i, **arrays_of(i))
            mark_done(self.folder, i)
        barrier(compute.world)
        self.names = list(names)
        return self

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


@contextlib.contextmanager
def shared_spill(root, compute=CPU, prefix=".maxima-", kept=None):
    """A ``Spill`` in a temporary folder under ``root`` that every rank of ``compute.world`` writes into
    (``shared_folder``; ``root`` matters on rank 0 only), removed when the block ends. One process: a temporary
    folder under ``root``. The other ranks write their items (``Spill.write_shard``) before rank 0 leaves the
    block. ``kept``: a folder every rank sees, kept across a kill (a stage's ``videoda.utils.resume.ClipWork``
    folder), used instead and left in place (the stage removes it)."""
    if kept is not None:
        yield Spill(kept)
        return
    with shared_folder(lambda: tempfile.TemporaryDirectory(dir=root, prefix=prefix), compute.world) as folder:
        yield Spill(folder)
