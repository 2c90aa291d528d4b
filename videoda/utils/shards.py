"""Sharded inference over clips (stages ``flow`` and ``evaluate``; README "Several GPUs and nodes"): each rank
computes its share of the clips, and rank 0 takes every clip's result in clip order and writes the outputs.

Why the outputs are those of one process: a clip's result is computed by the same code whichever rank computes
it, and rank 0 consumes the results in the order one process computes them, with the same operations: a float
sum over clips (an EPE, VPQ's IoU sums) adds each clip's term in clip order, never per-rank partial sums. One
process is a world of one rank: the results are computed one at a time as they are consumed, the code path of
before, with no files.

Why files: a rank's results go through a shard folder next to the output (on a filesystem every rank sees,
README), one file per clip, and rank 0 reads them back one clip at a time after every rank is done: memory stays
bounded by a clip, whatever the size of the dataset. Rank 0 makes the folder (``shared_folder`` of a
``videoda.utils.io.scratch_folder``: named after the output and rank 0's pid, so the next writer of the output
removes the folder of a killed run) and removes it when the stage's work is done; only rank 0 writes outputs.
"""

import contextlib
from pathlib import Path

import numpy as np

from videoda.utils.distributed import SINGLE, barrier, broadcast_object
from videoda.utils.io import atomic_path, scratch_folder


@contextlib.contextmanager
def shared_folder(make_folder, world=SINGLE):
    """The folder that ``make_folder()`` (a context manager that yields a new folder, e.g. ``scratch_folder(path)``
    or a ``tempfile.TemporaryDirectory``) makes on rank 0, yielded as a ``Path`` on every rank of ``world``: rank 0
    makes it and removes it when its block ends, the other ranks learn its path (it must be on a filesystem every
    node sees). Whatever the other ranks write there must be written before rank 0 leaves the block."""
    if world.is_main:
        with make_folder() as folder:
            yield Path(broadcast_object(str(folder), world))
    else:
        yield Path(broadcast_object(None, world))


@contextlib.contextmanager
def shard_folder(path, world):
    """The shard folder of output ``path``: a ``scratch_folder`` next to it that every rank of ``world`` sees
    (``shared_folder``), removed by rank 0 when the block ends. One process: None (nothing is made)."""
    if not world.distributed:
        yield None
    else:
        with shared_folder(lambda: scratch_folder(path), world) as folder:
            yield folder


@contextlib.contextmanager
def main_atomic_path(path, world):
    """``atomic_path(path)`` on rank 0, the one rank that writes outputs; None on the others."""
    if world.is_main:
        with atomic_path(path) as tmp:
            yield tmp
    else:
        yield None


def _save(file, result):
    np.savez(file, **result)


def _load(file):
    """A result saved by ``_save`` (no pickles), 0-d arrays back to Python numbers and strings; the file is removed
    once read (the shard folder shrinks as rank 0 merges)."""
    with np.load(file, allow_pickle=False) as saved:
        result = {k: saved[k].item() if saved[k].ndim == 0 else saved[k] for k in saved.files}
    file.unlink()
    return result


def in_clip_order(items, work, compute, folder, description=""):
    """``(index, work(index, item))`` for every item of ``items``, in order, on rank 0 of ``compute.world``
    (``compute``: a ``videoda.utils.device.Runtime``).

    One process (``folder`` None): each result is computed when the caller asks for it, so the caller consumes
    clip i before clip i + 1 is computed. Several: this rank computes its share (``world.shard``: items r, r + W,
    ...) and saves each result as ``folder/<index>.npz``, every rank waits for the others, then rank 0 yields the
    results in order, reading one at a time; the other ranks yield nothing (iterate to the end on every rank: the
    wait is a collective). ``work`` returns a dict of numpy arrays, numbers or strings (saved without pickling;
    read back as arrays, numbers and strings); anything larger it writes itself, e.g. to ``folder``.
    The items this process computes show a progress bar named ``description`` where ``compute`` shows them.
    """
    indexed, world = list(enumerate(items)), compute.world
    if not world.distributed:
        for index, item in compute.progress(indexed, description=description):
            yield index, work(index, item)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in compute.progress(world.shard(indexed), description=description):
        _save(folder / f"{index}.npz", work(index, item))
    barrier(world)
    if world.is_main:
        for index in range(len(indexed)):
            yield index, _load(folder / f"{index}.npz")
