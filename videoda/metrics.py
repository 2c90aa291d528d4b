"""Evaluation metrics of the paper (Sec. 5.1): image-level mIoU and video-level VPQ^s.

- ``ConfusionMatrix``: the usual per-class IoU = TP / (TP + FP + FN) over all evaluated pixels, mIoU its mean.
- ``VPQStuff``: video panoptic quality (Kim et al., "Video Panoptic Segmentation", CVPR 2020, Eq. 2) where,
  as in Shin et al. 2021, every class is a single *stuff* segment, so each class forms one tube per window.
- ``score_clips``: both over a set of clips, and the report dict that stage ``evaluate`` and ``videoda eval``
  write.

A class set (``videoda.data.classes.ClassSet``) names the classes and says which are *evaluated*: mIoU and VPQ^s
average over those alone (a set may train a class it does not score, as DA-VSN's SYNTHIA-Seq set does); the
others' IoU is reported apart. VPQ^s needs annotated frames ``label_stride`` apart: on a dataset that annotates one
frame per clip (Cityscapes-Seq) no window with k > 0 exists, and VPQ^s is reported as not defined.

Both accept numpy arrays or torch tensors of train ids; ``IGNORE_ID`` (255) in the ground truth marks void.
"""

import math

import numpy as np

from videoda.data.classes import CLASSES, DEFAULT, IGNORE_ID, NUM_CLASSES


def _to_numpy(x):
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(pred, gt, num_classes, what="pred"):
    """Shapes must agree, pred must hold ids 0..C-1, gt ids 0..C-1 or IGNORE_ID."""
    if pred.shape != gt.shape:
        raise ValueError(f"{what} shape {tuple(pred.shape)} does not match gt shape {tuple(gt.shape)}")
    for name, a, void_ok in ((what, pred, False), ("gt", gt, True)):
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}")
        bad = (a < 0) | (a >= num_classes)
        if void_ok:
            bad &= a != IGNORE_ID
        if bad.any():
            ids = sorted(np.unique(a[bad]).tolist())[:10]
            raise ValueError(f"{name} holds ids {ids} outside 0..{num_classes - 1}"
                             + (f" (or {IGNORE_ID} = void)" if void_ok else ""))


def _pct(x, ndigits=4):
    """Fraction -> percent rounded for reports; NaN -> None so that the JSON stays valid."""
    x = float(x)
    return None if math.isnan(x) else round(100.0 * x, ndigits)


def _names(num_classes, class_names):
    if class_names is None:
        class_names = CLASSES if num_classes == len(CLASSES) else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return list(class_names)


def _evaluated(num_classes, evaluated):
    """The evaluated train ids, ascending (None: every class)."""
    ids = np.arange(num_classes) if evaluated is None else np.unique(np.asarray(evaluated, np.int64))
    if ids.size == 0 or ids.min() < 0 or ids.max() >= num_classes:
        raise ValueError(f"evaluated classes {ids.tolist()} must be a non-empty subset of 0..{num_classes - 1}")
    return ids


class ConfusionMatrix:
    """Pixel confusion matrix ``mat[gt, pred]`` accumulated over images; void gt pixels are skipped. mIoU averages
    over the ``evaluated`` train ids (None: all); a pixel of a class not evaluated still counts as a FP or FN of
    the evaluated class it is confused with."""

    def __init__(self, num_classes, class_names=None, evaluated=None):
        self.num_classes = num_classes
        self.class_names = _names(num_classes, class_names)
        self.evaluated = _evaluated(num_classes, evaluated)
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, gt):
        n = self.num_classes
        if hasattr(pred, "detach") and hasattr(gt, "detach"):  # count on the tensors' device
            if pred.shape != gt.shape:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match gt shape {tuple(gt.shape)}")
            pred, gt = pred.reshape(-1).long(), gt.reshape(-1).long()
            k = gt != IGNORE_ID
            if ((pred < 0) | (pred >= n)).any() or (k & ((gt < 0) | (gt >= n))).any():
                _check(_to_numpy(pred), _to_numpy(gt), n)  # raises with the offending ids
            import torch
            counts = torch.bincount(n * gt[k] + pred[k], minlength=n * n)
        else:
            pred, gt = _to_numpy(pred), _to_numpy(gt)
            _check(pred, gt, n)
            k = gt != IGNORE_ID
            counts = np.bincount(n * gt[k].astype(np.int64) + pred[k], minlength=n * n)
        self.mat += _to_numpy(counts).reshape(n, n)

    def iou(self):
        """Per-class IoU as fractions, NaN where the class is absent from both gt and pred."""
        inter = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, np.nan)

    def miou(self):
        """Mean IoU in percent over the evaluated classes present in gt or pred (NaN if none)."""
        iou = self.iou()[self.evaluated]
        return float("nan") if np.isnan(iou).all() else 100.0 * float(np.nanmean(iou))

    def to_dict(self):
        """``{"miou": %, "iou": {class_name: % or None}}``, rounded to 4 decimals: the evaluated classes; those
        trained but not evaluated, if any, under ``"iou_not_evaluated"``."""
        miou, iou = self.miou(), self.iou()
        out = {"miou": None if math.isnan(miou) else round(miou, 4),
               "iou": {self.class_names[j]: _pct(iou[j]) for j in self.evaluated}}
        rest = np.setdiff1d(np.arange(self.num_classes), self.evaluated)
        if rest.size:
            out["iou_not_evaluated"] = {self.class_names[j]: _pct(iou[j]) for j in rest}
        return out


class VPQStuff:
    """VPQ^s: video panoptic quality with each class as one stuff segment per clip.

    For a temporal window of k frames, Kim et al. (Eq. 2) match prediction tubes to gt tubes by
    IoU > 0.5 and compute per class ``PQ_c = sum_TP IoU / (|TP| + 0.5 |FP| + 0.5 |FN|)``; VPQ^k is the mean
    of PQ_c over the classes seen, and VPQ is the mean over k in ``ks``. Only the annotated frames
    (every ``label_stride`` frames) are scored, so a window for k spans ``k // label_stride + 1`` of them.

    Void gt pixels follow the official VPSNet script (eval_vpq.py): they are removed from the union of
    the IoU, and an unmatched prediction tube lying more than half on void is not counted as a FP.
    """

    def __init__(self, num_classes, ks=(0, 5, 10, 15), label_stride=5, class_names=None, evaluated=None):
        if any(k % label_stride for k in ks):
            raise ValueError(f"window sizes {ks} must be multiples of label_stride={label_stride}")
        self.num_classes = num_classes
        self.class_names = _names(num_classes, class_names)
        self.evaluated = _evaluated(num_classes, evaluated)
        self.ks = tuple(ks)
        self.lengths = [k // label_stride + 1 for k in self.ks]  # annotated frames per window
        shape = (len(self.ks), num_classes)
        self.tp, self.fp, self.fn = (np.zeros(shape, np.int64) for _ in range(3))
        self.iou_sum = np.zeros(shape, np.float64)
        self.num_windows = np.zeros(len(self.ks), np.int64)

    def update(self, preds, gts):
        """Add one clip: ``preds``, ``gts`` are its annotated frames in temporal order, (N, H, W) each."""
        self.add_frame_counts(*self.frame_counts(preds, gts))

    def frame_counts(self, preds, gts):
        """One clip's pixel counts per annotated frame, all that ``add_frame_counts`` needs: ``joint[t, p, g]``,
        the pixels of frame t predicted p and labelled g (non-void gt only), and ``pred_all[t, p]``, all pixels
        predicted p, void included (for the official "mostly void" FP rule); int64."""
        preds = np.stack([_to_numpy(p) for p in preds]) if isinstance(preds, (list, tuple)) else _to_numpy(preds)
        gts = np.stack([_to_numpy(g) for g in gts]) if isinstance(gts, (list, tuple)) else _to_numpy(gts)
        if preds.ndim != 3 or len(preds) == 0:
            raise ValueError(f"preds must be (N, H, W) with N >= 1 annotated frames, got shape {preds.shape}")
        _check(preds, gts, self.num_classes, what="preds")
        n = self.num_classes
        # Tube pixel counts are sums over frames, so count per frame once and add them up per window.
        joint = np.stack([np.bincount(n * p[g != IGNORE_ID].astype(np.int64) + g[g != IGNORE_ID],
                                      minlength=n * n).reshape(n, n) for p, g in zip(preds, gts)])
        pred_all = np.stack([np.bincount(p.ravel(), minlength=n) for p in preds])
        return joint, pred_all

    def add_frame_counts(self, joint, pred_all):
        """Add one clip from its ``frame_counts``: every window of it. The IoU sums are float: clips are added in
        clip order (sharded runs too, ``videoda.utils.shards``), so the result does not depend on the ranks."""
        for i, length in enumerate(self.lengths):
            for s in range(len(joint) - length + 1):
                self._add_window(i, joint[s:s + length].sum(0), pred_all[s:s + length].sum(0))

    def _add_window(self, i, joint, pred_all):
        inter = np.diag(joint).astype(np.float64)
        pred_area, gt_area = joint.sum(1), joint.sum(0)  # pred tube without void pixels, gt tube
        union = pred_area + gt_area - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        has_pred, has_gt = pred_all > 0, gt_area > 0
        tp = has_pred & has_gt & (iou > 0.5)
        mostly_void = (pred_all - pred_area) > 0.5 * pred_all  # eval_vpq.py: such FPs are ignored
        self.tp[i] += tp
        self.iou_sum[i] += np.where(tp, iou, 0.0)
        self.fn[i] += has_gt & ~tp
        self.fp[i] += has_pred & ~tp & ~mostly_void
        self.num_windows[i] += 1

    def pq(self):
        """(len(ks), C) PQ_c as fractions, NaN where TP + FP + FN = 0."""
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, self.iou_sum / denom, np.nan)

    def compute(self):
        """``{"k0": %, ..., "mean": %, "per_class": {name: %}}`` over the evaluated classes; None where nothing
        was scored. When the clips were scored but none has two annotated frames (one annotated frame per clip, as
        Cityscapes-Seq), no window with k > 0 exists: the mean and per-class VPQ^s are None and ``"not_defined"``
        says why (the k0 figure, a per-frame PQ, stays)."""
        pq = self.pq()[:, self.evaluated]
        seen = ~np.isnan(pq)
        vpq = [float(np.nanmean(row)) if m.any() else float("nan") for row, m in zip(pq, seen)]
        out = {f"k{k}": _pct(v) for k, v in zip(self.ks, vpq)}
        out["mean"] = _pct(np.nanmean(vpq)) if not np.isnan(vpq).all() else None
        out["per_class"] = {self.class_names[j]: (_pct(np.nanmean(pq[:, i])) if seen[:, i].any() else None)
                            for i, j in enumerate(self.evaluated)}
        temporal = [i for i, length in enumerate(self.lengths) if length > 1]
        if self.num_windows.any() and temporal and not self.num_windows[temporal].any():
            out["mean"] = None
            out["per_class"] = {c: None for c in out["per_class"]}
            out["not_defined"] = ("no clip has two annotated frames, so VPQ^s has no window with k > 0 (a dataset "
                                  "annotating one frame per clip, as Cityscapes-Seq): mIoU only")
        return out


def clip_counts(preds, gts, label_stride, num_classes=NUM_CLASSES):
    """One clip's contribution to ``score_counts``, its annotated frames (preds, gts), (N, H, W) each, in temporal
    order: ``{"confusion": mat[gt, pred], "joint", "pred_all"}`` (``VPQStuff.frame_counts``), int64 arrays, a few
    KB, whatever the frame size."""
    cm = ConfusionMatrix(num_classes)
    cm.update(preds, gts)
    joint, pred_all = VPQStuff(num_classes, label_stride=label_stride).frame_counts(preds, gts)
    return {"confusion": cm.mat, "joint": joint, "pred_all": pred_all}


def score_counts(counts, label_stride, classes=DEFAULT):
    """mIoU and VPQ^s from every clip's ``clip_counts``, taken in clip order (VPQ's IoU sums are float: the order
    of the clips is that of ``score_clips``), named and averaged as the class set ``classes`` says. Returns the
    report ``{"miou", "iou", "vpq"}`` and the confusion matrix ``mat[gt, pred]``."""
    n, names, evaluated = classes.num_classes, classes.names, classes.evaluated_ids
    cm = ConfusionMatrix(n, names, evaluated)
    vpq = VPQStuff(n, label_stride=label_stride, class_names=names, evaluated=evaluated)
    for clip in counts:
        cm.mat += clip["confusion"]
        vpq.add_frame_counts(clip["joint"], clip["pred_all"])
    report = cm.to_dict()
    report["vpq"] = vpq.compute()
    return report, cm.mat


def score_clips(clips, label_stride, classes=DEFAULT):
    """mIoU and VPQ^s over clips: ``clips`` yields each clip's annotated frames as (preds, gts), (N, H, W) each, in
    temporal order (``label_stride`` frames apart), for the class set ``classes``. Returns the report ``{"miou",
    "iou", "vpq"}`` and the confusion matrix ``mat[gt, pred]``."""
    return score_counts((clip_counts(preds, gts, label_stride, classes.num_classes) for preds, gts in clips),
                        label_stride, classes)
