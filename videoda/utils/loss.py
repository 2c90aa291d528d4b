"""Losses shared by every method."""

import torch.nn.functional as F

from videoda.data.classes import IGNORE_ID


def cross_entropy_2d(logits, labels):
    """Per-pixel cross-entropy (the paper's L_seg, Eq. 1/9); ignore pixels do not count.

    Returns 0 (with a gradient path) when a batch has no labelled pixel, e.g. an unlabelled target frame.
    """
    if (labels != IGNORE_ID).any():
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_ID)
    return logits.sum() * 0.0
