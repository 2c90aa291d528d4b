"""Training batches of frame pairs (t - tau, t) from prepared clips, as the paper trains (Sec. 5.1), streamed
through ``torch.utils.data``.

- ``PairDataset``: the candidate pairs of a split; item ``(k, flip)`` reads pair k's two frames (and labels)
  from its clip, nothing else: clips may be lazy arrays on disk.
- ``PairBatchSampler``: which pairs and flips each batch holds, drawn in the main process from
  ``np.random.default_rng(seed)``, ``integers`` then ``random`` per batch. The draws never depend on the data
  or on the workers, so the stream of batches is the same for any number of workers.
- ``PairLoader``: a ``DataLoader`` over both (workers, pinned memory, prefetch) as an endless stream:
  ``sample()`` is the next batch, ``skip(n)`` jumps n batches ahead without loading them (resuming at step k).
"""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from videoda.data.clips import list_clips, load_clip
from videoda.errors import DataError
from videoda.utils.device import CPU


def rank_seed(seed, rank):
    """The seed of rank ``rank``'s sample stream: ``seed`` itself for rank 0 (so one process draws the stream it
    always drew), numpy's ``SeedSequence((seed, rank))`` for the others: independent streams, one per rank."""
    return seed if rank == 0 else np.random.SeedSequence([seed, rank])


def load_split(root, split):
    return [load_clip(p) for p in list_clips(root, split)]


class PairDataset(Dataset):
    """The pairs (t - tau, t) of ``clips``, one item per candidate frame t; item ``(k, flip)`` is pair k.

    ``require_label``: only frames t that carry a ground-truth label are candidates (every supervised sampler:
    VIPER may be labelled on a subset of frames, Cityscapes-VPS on 1 in 5 for the oracle); frame t - tau keeps
    whatever label it has (often none, i.e. ignore). With every frame labelled it holds exactly the same pairs.
    ``labels=False``: the labels are not even read (VAT's target pairs: the unsupervised setting).
    An item is a dict of contiguous arrays: uint8 ``images`` (2, H, W, 3), uint8 ``labels`` (2, H, W) and bool
    ``labeled`` (2,), the clip's ground-truth flags; index 0 = t - tau, 1 = t; images and labels flipped
    horizontally when ``flip``.
    """

    def __init__(self, clips, tau, require_label=False, labels=True):
        if tau < 1:
            raise DataError(f"tau must be >= 1, got {tau}")
        self.clips, self.tau, self.labels = clips, tau, labels
        self.index = []      # (clip, t) candidates
        for ci, clip in enumerate(clips):
            if len(clip) <= tau:
                raise DataError(f"clip '{clip.name}' has {len(clip)} frames, too short for tau={tau}")
            for t in range(tau, len(clip)):
                if not require_label or clip.labeled[t]:
                    self.index.append((ci, t))
        if not self.index:
            raise DataError("no labelled frame can serve as frame t: nothing to train on")

    def __len__(self):
        return len(self.index)

    def pair(self, k):
        """Pair k: (clip, [t - tau, t])."""
        ci, t = self.index[k]
        return self.clips[ci], [t - self.tau, t]

    def __getitem__(self, item):
        k, flip = item
        clip, frames = self.pair(k)
        arrays = {"images": clip.images[frames]}
        if self.labels:
            arrays["labels"] = clip.labels[frames]
        if flip:
            arrays = {name: a[:, :, ::-1] for name, a in arrays.items()}
        arrays["labeled"] = np.asarray(clip.labeled, bool)[frames]
        return {name: np.ascontiguousarray(a) for name, a in arrays.items()}


class PairBatchSampler(Sampler):
    """Endless batches of ``(pair index, flip)`` items: per batch ``batch_size`` uniform picks among
    ``num_pairs`` pairs, then (with ``hflip``) a fair coin per pick, from ``np.random.default_rng(seed)``.
    Iteration starts at batch ``start`` (the earlier draws are made and dropped: the generator's state after
    them is not computable otherwise, as ``integers`` rejects a variable number of raw draws)."""

    def __init__(self, num_pairs, batch_size, seed, hflip=True):
        super().__init__()
        self.num_pairs, self.batch_size, self.seed, self.hflip = num_pairs, batch_size, seed, hflip
        self.start = 0

    def draw(self, rng):
        picks = rng.integers(self.num_pairs, size=self.batch_size)
        flips = rng.random(self.batch_size) < 0.5 if self.hflip else np.zeros(self.batch_size, bool)
        return list(zip(picks.tolist(), flips.tolist()))

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.start):
            self.draw(rng)
        while True:
            yield self.draw(rng)


class PairLoader:
    """The endless batch stream of ``dataset`` (a ``PairDataset`` or one with the same items) for a seed.

    ``sample()``: the next batch, a dict of the items' arrays stacked along a batch dim (B, ...), as tensors on
    ``compute``'s device (a ``videoda.utils.device.Runtime``); ``labels`` become int64. ``skip(n)``: the stream
    moves n batches on without loading them, at any time (before the first ``sample()`` too): after ``skip(k)`` a
    fresh loader yields exactly batch k, k + 1, ... of an uninterrupted one.
    ``compute.workers`` processes read the pairs (0: the calling thread), ``prefetch_factor`` batches ahead each;
    the batch composition is drawn in the main process and collated in order, so the stream does not depend on
    the workers. Memory is pinned for a CUDA device. The workers persist until ``close()``.
    ``compute.world.rank``: a training process's rank among several (DistributedDataParallel): each draws its own
    stream (``rank_seed``); rank 0's is the one-process stream.
    """

    def __init__(self, dataset, batch_size, seed, hflip=True, compute=CPU, prefetch_factor=2):
        workers = compute.workers
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.dataset = dataset
        self.batch_sampler = PairBatchSampler(len(dataset), batch_size, rank_seed(seed, compute.world.rank), hflip)
        self.device = compute.device
        self.pinned = self.device.type == "cuda"
        # A generator of its own: the DataLoader draws its workers' base seed from it, which would otherwise
        # advance torch's global generator (and change every later random draw of the run).
        self.loader = DataLoader(dataset, batch_sampler=self.batch_sampler, num_workers=workers,
                                 pin_memory=self.pinned, prefetch_factor=prefetch_factor if workers else None,
                                 persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
        self.position = 0        # batches consumed, sampled or skipped
        self.batches = None      # the DataLoader's iterator, started at ``position``

    def sample(self):
        if self.batches is None:
            self.batch_sampler.start = self.position
            self.batches = iter(self.loader)
        batch = next(self.batches)
        self.position += 1
        batch = {name: v.to(self.device, non_blocking=self.pinned) for name, v in batch.items()}
        if "labels" in batch:
            batch["labels"] = batch["labels"].long()
        return batch

    def skip(self, n):
        if n < 0:
            raise ValueError(f"cannot skip {n} batches")
        if n:
            self.position += n
            self.batches = None      # batches already prefetched are dropped; the next sample() restarts there

    def close(self):
        """Stop the workers (the DataLoader's iterator shuts them down when it goes)."""
        self.batches = self.loader = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
