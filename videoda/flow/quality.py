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

    def add(self, images, flows, gt):
        """images uint8 (T, H, W, 3); flows and gt (T - 1, H, W, 2), flows[t] = F_{t->t+1}."""
        frames = torch.from_numpy(images).permute(0, 3, 1, 2)
        kept = non_occluded(frames[:-1], frames[1:], flow_to_tensor(flows), self.alpha, self.threshold).numpy()
        err = np.linalg.norm(np.asarray(flows, np.float64) - gt, axis=-1)
        for i, mask in enumerate((np.ones_like(kept), kept, ~kept)):
            self.sums[i] += err[mask].sum()
            self.counts[i] += mask.sum()

    def result(self):
        mean = [float(s / c) if c else None for s, c in zip(self.sums, self.counts)]
        return {"epe": mean[0], "epe_non_occluded": mean[1], "epe_occluded": mean[2],
                "non_occluded_fraction": float(self.counts[1] / self.counts[0]) if self.counts[0] else None}
