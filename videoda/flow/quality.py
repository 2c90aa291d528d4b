"""How good a flow backend is on a benchmark with ground-truth flow: end-point error, split by Eq. 10's mask."""

import numpy as np
import torch

from videoda.flow.warp import flow_to_tensor, non_occluded


class EpeMeter:
    """Accumulates the end-point error ``||F - F_gt||_2`` (pixels) of forward flows F_{t->t+1} over pixels,
    overall and on the pixels that Eq. 10's mask (computed from the estimated flow, as VST does) keeps or
    drops."""

    def __init__(self, alpha, threshold):
        self.alpha, self.threshold = alpha, threshold
        self.sums = np.zeros(3)      # error over all, kept, dropped pixels
        self.counts = np.zeros(3)

    def terms(self, images, flows, gt):
        """One clip's terms: the error sums and pixel counts (float64, 3 each: all, kept, dropped pixels).
        images uint8 (T, H, W, 3); flows and gt (T - 1, H, W, 2), flows[t] = F_{t->t+1}."""
        frames = torch.from_numpy(images).permute(0, 3, 1, 2)
        kept = non_occluded(frames[:-1], frames[1:], flow_to_tensor(flows), self.alpha, self.threshold).numpy()
        err = np.linalg.norm(np.asarray(flows, np.float64) - gt, axis=-1)
        masks = (np.ones_like(kept), kept, ~kept)
        return np.array([err[mask].sum() for mask in masks]), np.array([mask.sum() for mask in masks], np.float64)

    def add_terms(self, sums, counts):
        """Add one clip's ``terms``. The float sums depend on the order of the clips: sharded runs add them in
        clip order, as one process does (``videoda.utils.shards``)."""
        self.sums += sums
        self.counts += counts

    def add(self, images, flows, gt):
        """Add one clip (``terms``)."""
        self.add_terms(*self.terms(images, flows, gt))

    def result(self):
        mean = [float(s / c) if c else None for s, c in zip(self.sums, self.counts)]
        return {"epe": mean[0], "epe_non_occluded": mean[1], "epe_occluded": mean[2],
                "non_occluded_fraction": float(self.counts[1] / self.counts[0]) if self.counts[0] else None}
