"""The pair sampling as it was before the streaming loader (commit 0c94f83), kept verbatim as the reference
that ``PairLoader``, ``VATBatches`` and VST's batched refinement must reproduce bit for bit."""

import dataclasses

import numpy as np
import torch

from videoda.data.classes import IGNORE_ID
from videoda.domain_adaptation.pseudo_labels import cutout_refine, fillin_refine
from videoda.errors import DataError
from videoda.flow.warp import flow_to_tensor


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


def refined_pair_labels(pseudo, store, refine, occ_alpha=2.0, occ_threshold=0.7):
    """``pair_labels`` for ``PairSampler``: a pair's pseudo labels, each frame refined against the other.

    Eq. 13 sums over both frames l = t, t - tau, so frame t is checked against the warped t - tau (flow
    F_{t -> t-tau}) and frame t - tau against the warped t (flow F_{t-tau -> t}).
    """
    def pair_labels(clip, t_ref, t):
        labels = torch.from_numpy(pseudo[clip.name][[t_ref, t]]).long()
        if refine == "none":
            return labels.numpy()
        flows = flow_to_tensor(np.stack([store.flow(clip.name, t_ref, t), store.flow(clip.name, t, t_ref)]))
        other = labels.flip(0)                   # each frame's reference: the other frame of the pair
        if refine == "cutout":
            out = cutout_refine(labels, other, flows)
        else:
            images = torch.from_numpy(clip.images[[t_ref, t]]).permute(0, 3, 1, 2)
            out = fillin_refine(labels, other, flows, images, images.flip(0), occ_alpha, occ_threshold)
        return out.numpy()
    return pair_labels


def unlabelled(batch):
    """The unsupervised setting: of a target batch only the images go on; its labels never reach a loss."""
    return {"images": batch["images"]}


class VATBatches:
    """Joint batches: source ``images``/``labels`` (B, 2, ...) with their ``labeled`` flags (B, 2) and
    ``target_images`` (B, 2, H, W, 3), no labels."""

    def __init__(self, source_sampler, target_sampler):
        self.source, self.target = source_sampler, target_sampler

    def sample(self):
        src = self.source.sample()
        tgt = unlabelled(self.target.sample())
        return {"images": src["images"], "labels": src["labels"], "labeled": src["labeled"],
                "target_images": tgt["images"]}



def unlabelled_clips(clips):
    """The target clips with their ground truth dropped (every label IGNORE_ID, no frame annotated), so that
    nothing in self-training can train on it: VST is unsupervised."""
    return [dataclasses.replace(c, labels=np.full_like(c.labels, IGNORE_ID), labeled=np.zeros_like(c.labeled))
            for c in clips]
