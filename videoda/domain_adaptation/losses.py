"""Losses shared by every method.

Each loss computes in float32 whatever its input's dtype: under bf16 autocast the network's logits are bf16, and
a softmax, a log or a sum over a frame in bf16 loses the small probabilities and the low bits of the total
(``.float()`` of a float32 tensor is the tensor itself, so fp32 runs compute exactly as before).
"""

import math

import torch
import torch.nn.functional as F

from videoda.data.classes import IGNORE_ID


def cross_entropy_2d(logits, labels):
    """Per-pixel cross-entropy (the paper's L_seg, Eq. 1/9); ignore pixels do not count.

    Returns 0 (with a gradient path) when a batch has no labelled pixel, e.g. an unlabelled target frame.
    """
    if (labels != IGNORE_ID).any():
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_ID)
    return logits.float().sum() * 0.0


# --- Video adversarial training (VAT, Sec. 4.3): the tube matching loss, its single-frame degradation,
# the discriminator inputs and the GAN losses.

def _soft_dice_loss(probs, labels, dims, eps):
    """sum_k (1 - Dice(p_k, q_k)) with Dice(p, q) = (2 sum pq + eps) / (sum p^2 + sum q^2 + eps) (Eq. 7).

    ``probs`` (..., C, H, W) softmax maps and ``labels`` (..., H, W) train ids; the sums run over ``dims``
    of the (N, T, C, H, W) view. Void pixels (``IGNORE_ID``) count for neither p nor q. ``eps`` keeps an
    empty class defined: no ground truth and no prediction is a perfect match (loss 0), while probability
    mass on a class that is absent costs 1 - eps / (sum p^2 + eps).
    Returns one loss per remaining leading index (summed over classes).
    """
    num_classes = probs.shape[-3]
    probs = probs.float()
    valid = (labels != IGNORE_ID).unsqueeze(-3).to(probs.dtype)                # (..., 1, H, W)
    onehot = F.one_hot(labels.clamp(max=num_classes - 1).long(), num_classes).movedim(-1, -3).to(probs.dtype)
    p, q = probs * valid, onehot * valid
    inter = (p * q).sum(dims)
    denom = (p * p).sum(dims) + (q * q).sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return (1 - dice).sum(-1)


def tube_dice_loss(probs, labels, eps=1.0, labeled=None):
    """The tube matching loss (Eq. 6-7), averaged over the batch.

    ``probs`` (B, T, C, H, W): per-frame softmax predictions of the T frames of each sample (T = 2: t - tau, t);
    ``labels`` (B, T, H, W). For every class, one Dice coefficient over the whole space-time tube
    (all T frames together), then ``sum_k (1 - Dice_k)``.
    ``labeled`` (B, T) bool, the frames' ground-truth flags: only samples whose T frames are all labelled count
    (a tube with an unlabelled frame would match a prediction against half a tube); None: every sample.
    """
    _check_video(probs, labels)
    losses = _soft_dice_loss(probs, labels, dims=(1, 3, 4), eps=eps)                         # (B,)
    return _masked_mean(losses, probs, None if labeled is None else labeled.all(dim=1))


def single_frame_dice_loss(probs, labels, eps=1.0, labeled=None):
    """Table 3's model-(3): the image-level degradation of the tube loss, L_tube(P_i, y_i) on each frame.

    The Dice sums run over one frame at a time; the per-frame losses are averaged over the T frames (so the
    term has the tube loss's scale) and over the batch. ``labeled`` (B, T) bool: only labelled frames count.
    """
    _check_video(probs, labels)
    return _masked_mean(_soft_dice_loss(probs, labels, dims=(3, 4), eps=eps), probs, labeled)


def _masked_mean(losses, probs, keep):
    """The mean of ``losses`` where ``keep``; every entry when ``keep`` is None or all True (the very same
    computation as an unmasked mean), and 0 with a gradient path when nothing is kept."""
    if keep is None:
        return losses.mean()
    keep = keep.to(losses.device, torch.bool)
    if keep.shape != losses.shape:
        raise ValueError(f"expected labeled flags of shape {tuple(losses.shape)}, got {tuple(keep.shape)}")
    if bool(keep.all()):
        return losses.mean()
    if not bool(keep.any()):
        return probs.sum() * 0.0
    return losses[keep].mean()


def _check_video(probs, labels):
    if probs.ndim != 5 or labels.shape != probs.shape[:2] + probs.shape[3:]:
        raise ValueError(f"expected probs (B, T, C, H, W) and labels (B, T, H, W), got {tuple(probs.shape)} "
                         f"and {tuple(labels.shape)}")


def entropy_map(probs):
    """ADVENT's weighted self-information map -p log p / log C, per class channel; same shape as ``probs``."""
    num_classes = probs.shape[-3]
    probs = probs.float()
    return -probs * torch.log(probs.clamp_min(1e-30)) / math.log(num_classes)


SOURCE_LABEL, TARGET_LABEL = 1.0, 0.0     # Eq. 1/8: D(source) -> 1, D(target) -> 0


def adversarial_bce(d_logits, domain_label):
    """Binary cross-entropy of discriminator logits against a constant domain label (1 source, 0 target)."""
    d_logits = d_logits.float()
    return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, float(domain_label)))


# --- Video self-training (VST, Eq. 5 and 13): regularisers of the pseudo-label loss.

def ignored_entropy_loss(logits, labels):
    """IAST's regulariser: mean entropy -sum_k p_k log p_k of the predictions on pixels *without* a pseudo label
    (labels == IGNORE_ID), so the model also learns, confidently, where no label was kept; 0 if there are none."""
    ignored = labels == IGNORE_ID
    logits = logits.float()
    if not ignored.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, dim=1)
    entropy = -(logp.exp() * logp).sum(1)
    return entropy[ignored].mean()


def kld_regulariser(logits, labels):
    """CRST's confidence regulariser on pixels *with* a pseudo label: KL(uniform || p) = -log K - mean_k log p_k,
    which keeps the predictions from collapsing onto (possibly wrong) one-hot pseudo labels; 0 if none."""
    labelled = labels != IGNORE_ID
    logits = logits.float()
    if not labelled.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, dim=1)
    kld = -math.log(logits.shape[1]) - logp.mean(1)
    return kld[labelled].mean()
