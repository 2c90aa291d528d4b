"""Sampling training batches of frame pairs (t - tau, t) from prepared clips, as the paper trains (Sec. 5.1)."""

import numpy as np
import torch

from videoda.data.clips import list_clips, load_clip
from videoda.errors import DataError


def load_split(root, split):
    return [load_clip(p) for p in list_clips(root, split)]


class PairSampler:
    """Draws batches of two frames, t - tau and t, from random clips.

    ``require_label``: only frames t that carry a ground-truth label are drawn (every supervised sampler: VIPER
    may be labelled on a subset of frames, Cityscapes-VPS on 1 in 5 for the oracle); frame t - tau keeps
    whatever label it has (often none, i.e. ignore). With every frame labelled it draws exactly the same pairs.
    ``pair_labels(clip, t_ref, t) -> (2, H, W)``: where the labels of a pair come from, before any flip
    (default: the clip's labels; VST passes online-refined pseudo labels, Eq. 12).
    Returns uint8 images (B, 2, H, W, 3), int64 labels (B, 2, H, W) and ``labeled`` (B, 2) bool, the clip's
    ground-truth flags of the two frames (whatever ``pair_labels`` returns), index 0 = t - tau, 1 = t.
    """

    def __init__(self, clips, tau, batch_size, seed, require_label=False, hflip=True, pair_labels=None):
        self.pair_labels = pair_labels or (lambda clip, t_ref, t: clip.labels[[t_ref, t]])
        if tau < 1:
            raise DataError(f"tau must be >= 1, got {tau}")
        self.clips, self.tau, self.batch_size, self.hflip = clips, tau, batch_size, hflip
        self.rng = np.random.default_rng(seed)
        self.index = []      # (clip, t) candidates
        for ci, clip in enumerate(clips):
            if len(clip) <= tau:
                raise DataError(f"clip '{clip.name}' has {len(clip)} frames, too short for tau={tau}")
            for t in range(tau, len(clip)):
                if not require_label or clip.labeled[t]:
                    self.index.append((ci, t))
        if not self.index:
            raise DataError("no labelled frame can serve as frame t: nothing to train on")

    def sample(self):
        picks = self.rng.integers(len(self.index), size=self.batch_size)
        flips = self.rng.random(self.batch_size) < 0.5 if self.hflip else np.zeros(self.batch_size, bool)
        images, labels, labeled = [], [], []
        for k, flip in zip(picks, flips):
            ci, t = self.index[k]
            clip = self.clips[ci]
            im, lb = clip.images[[t - self.tau, t]], self.pair_labels(clip, t - self.tau, t)
            if flip:
                im, lb = im[:, :, ::-1], lb[:, :, ::-1]
            images.append(im)
            labels.append(lb)
            labeled.append(np.asarray(clip.labeled, bool)[[t - self.tau, t]])
        return {"images": torch.from_numpy(np.ascontiguousarray(np.stack(images))),
                "labels": torch.from_numpy(np.ascontiguousarray(np.stack(labels))).long(),
                "labeled": torch.from_numpy(np.stack(labeled))}

    def skip(self, n):
        """Advance the stream by ``n`` batches without building them (a resumed run): the draws of ``n`` calls of
        ``sample``, in its order, so the next ``sample`` returns the batch an uninterrupted stream would."""
        for _ in range(n):
            self.rng.integers(len(self.index), size=self.batch_size)
            if self.hflip:
                self.rng.random(self.batch_size)
