"""The analyses of the pseudo labels (Sec. 4.4.1, Table 7): ``PseudoLabelAnalysis``, the observer that
``pseudo_labels.make_pseudo_labels`` feeds clip by clip as it makes them (stage ``pseudo_labels``: one pass, each
clip predicted once), makes ``reports/pseudo_labels.json`` and its headline ``reports/p_miou.json``.

The report holds the proportion labelled and P-mIoU (``LabelStats``), the final thresholds, P-mIoU of
single-frame vs aggregated predictions at equal proportion (``miou_at_proportion``), the precision of the labels
that online cut-out refinement (Eq. 12) keeps and, with ``equal_proportions``, Table 7: P-mIoU of CB, IA and
ours, each tuned to the same proportions (``table7_p_miou``).

Memory holds one clip. What reads the whole set more than once (P-mIoU at equal proportion, Table 7's search)
reads it back from the labels' spill on disk (``spill.py``), one clip at a time, through histograms of
O(classes x 2^16) counts (``order_statistics``).
"""

from dataclasses import replace

import numpy as np
import torch

from videoda.data.classes import DEFAULT, IGNORE_ID
from videoda.domain_adaptation.order_statistics import RadixSelect, kth_largest
from videoda.domain_adaptation.pseudo_labels import (AGGREGATED, GENERATORS, SINGLE_FRAME, class_balanced_selection,
                                                     cutout_refine, label_stream, maxima_chunks)
from videoda.domain_adaptation.spill import to_numpy
from videoda.flow.warp import flow_to_tensor
from videoda.metrics import ConfusionMatrix
from videoda.utils.device import CPU

# Table 7's generators, entries of GENERATORS: class-balanced (CB) and instance-adaptive (IA) on single-frame
# predictions, ours (clip-adaptive on aggregated predictions); the knob tuned to reach a proportion is
# ``Generator.knob`` (CB's portion, else alpha).
TABLE7_GENERATORS = {"cb": "cbst", "ia": "iast", "ours": "clip_agg"}
BISECTION_STEPS = 16           # of Table 7's knob search: the knob to 2^-16


def annotated_labels(clip):
    """(indices of the annotated frames, their ground truth (F, H, W)), reading only those frames."""
    idx = np.flatnonzero(clip.labeled)
    return idx, np.asarray(clip.labels[idx.tolist()]) if len(idx) else np.zeros((0,) + clip.labels.shape[1:],
                                                                                 np.uint8)


class LabelStats:
    """The proportion of pixels labelled (overall, and the share of each class) and P-mIoU: the mIoU of the
    pseudo labels against the ground truth where both exist (the paper's Table 7), accumulated clip by clip:
    ``add(clip, labels)`` for each clip, then ``result()``. Memory: the class counts and a confusion matrix.
    P-mIoU averages over the class set's evaluated classes, as mIoU does."""

    def __init__(self, classes=DEFAULT):
        self.classes = classes
        self.counts, self.total = np.zeros(classes.num_classes, np.int64), 0
        self.cm = ConfusionMatrix(classes.num_classes, classes.names, classes.evaluated_ids)

    def add(self, clip, labels, annotated=None):
        """labels: the clip's (T, H, W) uint8 numpy labels; annotated: ``annotated_labels(clip)`` if read."""
        n = self.classes.num_classes
        self.counts += np.bincount(labels[labels != IGNORE_ID], minlength=n)[:n]
        self.total += labels.size
        idx, gt = annotated_labels(clip) if annotated is None else annotated
        kept = labels[idx] != IGNORE_ID
        self.cm.update(labels[idx][kept], gt[kept])

    def result(self):
        scores = self.cm.to_dict()
        return {"proportion": round(100 * self.counts.sum() / self.total, 4),
                "proportion_per_class": {c: round(100 * n / self.total, 4)
                                         for c, n in zip(self.classes.names, self.counts)},
                "p_miou": scores["miou"], "p_iou": scores["iou"]}


class Precision:
    """The precision of label maps against the ground truth, accumulated: matching and kept (both labelled)
    pixels."""

    def __init__(self):
        self.matches, self.kept = 0, 0

    def add(self, labels, gt):
        kept = (labels != IGNORE_ID) & (gt != IGNORE_ID)
        self.kept += int(kept.sum())
        self.matches += int((labels[kept] == gt[kept]).sum())

    def result(self):
        """(share of the kept labels that match, or NaN when none is kept; kept pixels)."""
        return (self.matches / self.kept if self.kept else float("nan")), self.kept


def label_precision(labels, gt):
    """Share of the kept pseudo labels that agree with the ground truth, and how many were kept (pixels)."""
    precision = Precision()
    precision.add(labels, gt)
    return precision.result()


def miou_at_proportion(chunks, proportion, classes=DEFAULT, compute=CPU):
    """P-mIoU of the most confident ``proportion`` of the ground-truth-labelled pixels (Table 7's comparison of
    label generators at equal proportion), exactly as a stable sort of all of them would pick them; counted on
    ``compute``'s device.

    chunks: a function returning a fresh iterator of (conf, pred, gt) arrays or tensors, the pixels in one
    fixed order (ties in confidence go to the earlier pixel); read three times (``kth_largest``'s two passes,
    then the confusion matrix), one chunk at a time: memory O(2^16 + chunk), not O(pixels)."""
    device = compute.device

    def labelled():
        for conf, pred, gt in chunks():
            conf, pred, gt = (torch.as_tensor(a, device=device) for a in (conf, pred, gt))
            valid = gt != IGNORE_ID
            yield conf[valid], pred[valid], gt[valid]

    wanted = {}

    def ranks(counts):
        wanted["n"], wanted["total"] = int(round(proportion * int(counts[0]))), int(counts[0])
        return [wanted["n"] - 1 if 0 < wanted["n"] < wanted["total"] else None]

    value, above, _, _ = kth_largest(lambda: ((c, torch.zeros(c.shape, dtype=torch.int64, device=c.device))
                                              for c, _, _ in labelled()), 1, ranks, device)
    n, total = wanted.get("n", 0), wanted.get("total", 0)
    cm = ConfusionMatrix(classes.num_classes, classes.names, classes.evaluated_ids)
    if n == 0:
        return cm.to_dict()["miou"]
    ties_left = n - int(above[0])             # of the pixels equal to the n-th value, the first ones are kept
    for conf, pred, gt in labelled():
        if n < total:
            tie = conf == float(value[0])
            keep = (conf > float(value[0])) | (tie & (torch.cumsum(tie.long(), 0) <= ties_left))
            ties_left -= int(tie.sum())
            pred, gt = pred[keep], gt[keep]
        cm.update(pred, gt)
    return cm.to_dict()["miou"]


def knob_at_proportion(maxima, cfg, proportion, compute=CPU):
    """Bisect the proportion knob of generator ``cfg.pseudo_label`` (CBST's portion, else alpha; Table 7 "tune
    alpha ... to have the same proportion") until the share of labelled pixels over all frames is closest to
    ``proportion``. Returns (knob value, proportion reached); ``label_stream`` with that knob gives the labels
    again. Labelling grows with the knob, so bisection applies; a proportion out of reach ends at the nearest
    end of [0, 1]. maxima: a re-iterable of (name, (conf, pred)), read once per step, one item at a time (CBST:
    once per step after a first pass, the labelled count being the count above each class's threshold)."""
    gen = GENERATORS[cfg.pseudo_label]
    if gen.needs_whole_set:
        selector = RadixSelect(maxima_chunks(maxima), cfg.classes.num_classes, compute.device)

        def run(value):
            return class_balanced_selection(selector, value)[1] / int(selector.counts.sum())
    else:
        def run(value):
            labelled = total = 0
            for _, labels, _ in label_stream(maxima, replace(cfg, **{gen.knob: value}), compute):
                labelled += int(torch.count_nonzero(labels != IGNORE_ID))
                total += labels.numel()
            return labelled / total

    lo, hi = 0.0, 1.0
    best = None
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        reached = run(mid)
        if best is None or abs(reached - proportion) < abs(best[1] - proportion):
            best = (mid, reached)
        lo, hi = (mid, hi) if reached < proportion else (lo, mid)
    return best


def table7_p_miou(maxima, clips, cfg, compute=CPU):
    """Table 7: P-mIoU of CB, IA and ours, each tuned to the same proportions ``cfg.equal_proportions`` of
    labelled pixels.

    maxima: ``{SINGLE_FRAME: ..., AGGREGATED: ...}``, re-iterables of (clip name, (conf, pred)) of every
    target-train frame, in the order of ``clips`` (lists, or ``Spill`` views read from disk one clip at a time).
    The thresholds use every frame; P-mIoU is scored on the annotated ones.
    Returns {proportion: {generator: {knob, proportion (%), p_miou}}}."""
    out = {}
    for proportion in cfg.equal_proportions:
        row = {}
        for name, kind in TABLE7_GENERATORS.items():
            gen, as_kind = GENERATORS[kind], replace(cfg, pseudo_label=kind)
            knob, reached = knob_at_proportion(maxima[gen.predictions], as_kind, proportion, compute)
            stats = LabelStats(cfg.classes)
            tuned = replace(as_kind, **{gen.knob: knob})
            for clip, (label_name, labels, _) in zip(clips, label_stream(maxima[gen.predictions], tuned, compute)):
                if label_name != clip.name:
                    raise ValueError(f"maxima of clip '{label_name}' where clip '{clip.name}' was expected")
                stats.add(clip, labels.cpu().numpy())
            row[name] = {"knob": round(knob, 6), "proportion": round(100 * reached, 4),
                         "p_miou": stats.result()["p_miou"]}
        out[f"{proportion:g}"] = row
    return out


class PseudoLabelAnalysis:
    """Stage ``pseudo_labels``' report on the labels of generator ``cfg.pseudo_label``
    (``videoda.config.PseudoLabels``), fed by ``make_pseudo_labels`` as its ``observer``; once it has run,
    ``report`` (see the module's docstring) and ``summary``. ``tau``: the pair distance of cut-out refinement,
    whose reference frames' flows come from ``store`` (the clips' ``FlowStore``)."""

    def __init__(self, cfg, tau, store):
        self.cfg, self.tau, self.store = cfg, tau, store
        self.clips, self.stats = [], LabelStats(cfg.classes)
        # cut-out refinement on the annotated frames: the share of their pixels labelled, the precision before
        # and after it (Eq. 12, reference frame t - tau)
        self.labelled, self.annotated = np.int64(0), np.int64(0)
        self.before, self.after = Precision(), Precision()
        self.report = None

    def spill_arrays(self, clip, maxima):
        """What is read back after the last clip: the annotated pixels' single-frame and aggregated (confidence,
        argmax) and their ground truth, each 1-D in pixel order (frames in order, then rows); with Table 7, both
        maxima of every frame (its thresholds use every frame)."""
        idx, gt = annotated_labels(clip)
        valid = gt != IGNORE_ID
        out = {"annotated_gt": gt[valid]}
        for kind in (SINGLE_FRAME, AGGREGATED):
            conf, pred = maxima[kind]
            out[f"annotated_{kind}_conf"] = to_numpy(conf[idx.tolist()])[valid]
            out[f"annotated_{kind}_pred"] = to_numpy(pred[idx.tolist()])[valid]
            if self.cfg.equal_proportions:
                out[f"{kind}_conf"], out[f"{kind}_pred"] = conf, pred
        return out

    def add(self, clip, labels):
        """labels: the clip's (T, H, W) uint8 tensor (on the device the refinement runs on)."""
        host, annotated = labels.cpu().numpy(), annotated_labels(clip)
        self.clips.append(clip)
        self.stats.add(clip, host, annotated)
        idx, gt = annotated
        generated = to_numpy(labels[idx.tolist()]) if len(idx) else np.zeros_like(gt)
        self.labelled += ((generated != IGNORE_ID) & (gt != IGNORE_ID)).sum()
        self.annotated += (gt != IGNORE_ID).sum()
        refined_frames = idx >= self.tau
        t = idx[refined_frames]
        if len(t):
            flow = flow_to_tensor(np.stack([self.store.flow(clip.name, i, i - self.tau) for i in t]))
            refined = cutout_refine(labels[t.tolist()].long(), labels[(t - self.tau).tolist()].long(),
                                    flow.to(labels.device))
            self.before.add(generated[refined_frames], gt[refined_frames])
            self.after.add(to_numpy(refined), gt[refined_frames])

    def finish(self, spill, theta, compute=CPU):
        """The report, from what was added, the final thresholds ``theta`` and the arrays parked in ``spill``."""
        cfg = self.cfg
        proportion = float(self.labelled / self.annotated)    # where P-mIoU is compared: the annotated pixels'
        at_proportion = {f"{name}_p_miou": miou_at_proportion(spill.chunks(
            f"annotated_{kind}_conf", f"annotated_{kind}_pred", "annotated_gt"), proportion, cfg.classes, compute)
            for name, kind in (("single_frame", SINGLE_FRAME), ("aggregated", AGGREGATED))}
        report = {"generator": cfg.pseudo_label, **self.stats.result(),
                  "thresholds": {c: round(float(t), 4) for c, t in zip(cfg.classes.names, theta)},
                  "equal_proportion": {"proportion": round(100 * proportion, 4), **at_proportion}}
        prec_b, n_b = self.before.result()
        prec_a, n_a = self.after.result()
        report["cutout_refinement"] = {"precision_before": round(100 * prec_b, 4), "pixels_before": n_b,
                                       "precision_after": round(100 * prec_a, 4), "pixels_after": n_a}
        if cfg.equal_proportions:
            report["table7"] = table7_p_miou({kind: spill.view(f"{kind}_conf", f"{kind}_pred")
                                              for kind in (SINGLE_FRAME, AGGREGATED)}, self.clips, cfg, compute)
        self.report = report

    @property
    def summary(self):
        """The report's headline: P-mIoU and the proportion labelled, and Table 7 when it was asked for
        (``reports/p_miou.json``, the columns ``dvc exp show`` leads with)."""
        return {k: self.report[k] for k in ("p_miou", "proportion", "table7") if k in self.report}
