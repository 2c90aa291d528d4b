"""Sharded and resumable inference over clips (stages ``flow`` and ``evaluate``; docs/guides/gpus-and-clusters.md):
each rank computes its share of the clips, and rank 0 takes every clip's result in clip order and writes the
outputs.

Why the outputs are those of one process: a clip's result is computed by the same code whichever rank computes
it, and rank 0 consumes the results in the order one process computes them, with the same operations: a float
sum over clips (an EPE, VPQ's IoU sums) adds each clip's term in clip order, never per-rank partial sums. One
process is a world of one rank: the results are computed one at a time as they are consumed, the code path of
before, with no files.

Why files: a rank's results go through a shard folder next to the output (on a filesystem every rank sees,
docs/guides/gpus-and-clusters.md), one file per clip, and rank 0 reads them back one clip at a time after every
rank is done: memory stays bounded by a clip, whatever the size of the dataset. Rank 0 makes the folder
(``shared_folder`` of a ``videoda.utils.io.scratch_folder``: named after the output and rank 0's pid, so the next writer of the output
removes the folder of a killed run) and removes it when the stage's work is done; only rank 0 writes outputs.

Why a stage resumes: a stage passes its ``videoda.utils.resume.ClipWork`` folder instead (``results_folder``), kept
across a kill; a clip whose result is there is not computed again (by one process or several), and rank 0 reads
every result back in clip order, so the outputs are those of an uninterrupted run.
"""

import contextlib
from pathlib import Path

import numpy as np

from videoda.utils.distributed import SINGLE, barrier, broadcast_object
from videoda.utils.io import atomic_path, scratch_folder
from videoda.utils.resume import is_done, mark_done


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
def results_folder(path, world, kept=None):
    """Where ``in_clip_order`` puts the clips' results for output ``path``: ``kept`` when given (a stage's
    ``ClipWork`` folder: kept across a kill, removed by the stage once its outputs are written), else its shard
    folder (``shard_folder``: several processes; one process: None, nothing is written)."""
    if kept is not None:
        yield Path(kept)
    else:
        with shard_folder(path, world) as folder:
            yield folder


@contextlib.contextmanager
def main_atomic_path(path, world):
    """``atomic_path(path)`` on rank 0, the one rank that writes outputs; None on the others."""
    if world.is_main:
        with atomic_path(path) as tmp:
            yield tmp
    else:
        yield None


def _save(folder, index, result):
    """Clip ``index``'s result, then its done marker (``mark_done``: whatever the work wrote for it is whole)."""
    np.savez(folder / f"{index}.npz", **result)
    mark_done(folder, index)


def _load(file):
    """A result saved by ``_save`` (no pickles), 0-d arrays back to Python numbers and strings. It stays until its
    folder goes: a kill while rank 0 merges must leave every result for the rerun."""
    with np.load(file, allow_pickle=False) as saved:
        return {k: saved[k].item() if saved[k].ndim == 0 else saved[k] for k in saved.files}


def in_clip_order(items, work, compute, folder, description=""):
    """``(index, work(index, item))`` for every item of ``items``, in order, on rank 0 of ``compute.world``
    (``compute``: a ``videoda.utils.device.Runtime``).

    One process and no ``folder``: each result is computed when the caller asks for it, so the caller consumes
    clip i before clip i + 1 is computed. With a ``folder`` (always, with several processes): this rank computes
    its share (``world.shard``: items r, r + W, ...) but the items done already (``videoda.utils.resume``: a
    killed run's), and saves each result as ``folder/<index>.npz``, every rank waits for the others, then rank 0
    yields the results in order, reading one at a time; the other ranks yield nothing (iterate to the end on every
    rank: the wait is a collective). ``work`` returns a dict of numpy arrays, numbers or strings (saved without
    pickling; read back as arrays, numbers and strings); anything larger it writes itself, e.g. to ``folder``.
    The items this process computes show a progress bar named ``description`` where ``compute`` shows them.
    """
    indexed, world = list(enumerate(items)), compute.world
    if folder is None:
        if world.distributed:
            raise ValueError("in_clip_order: several processes need a folder every rank sees")
        for index, item in compute.progress(indexed, description=description):
            yield index, work(index, item)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(index, item) for index, item in world.shard(indexed) if not is_done(folder, index)]
    for index, item in compute.progress(todo, description=description):
        _save(folder, index, work(index, item))
    barrier(world)
    if world.is_main:
        for index in range(len(indexed)):
            yield index, _load(folder / f"{index}.npz")
