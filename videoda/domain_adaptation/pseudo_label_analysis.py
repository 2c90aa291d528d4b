"""Stage `pseudo_labels`'s work: label the target clips one at a time, write each clip's labels as it is made,
and report on them (``reports/pseudo_labels.json``, Sec. 4.4.1, Table 7).

The report holds the proportion labelled and P-mIoU, the final thresholds, P-mIoU of single-frame vs aggregated
predictions at equal proportion, the precision of the labels that online cut-out refinement (Eq. 12) keeps and,
with ``equal_proportions``, Table 7: P-mIoU of CB, IA and ours, each tuned to the same proportions.

Memory holds one clip: its frames, softmax maps (single and aggregated) and labels. What reads the whole set
more than once (CBST's thresholds, P-mIoU at equal proportion, Table 7's search) reads it back from a spill on
disk (``spill.py``), one clip at a time, through histograms of O(classes x 2^16) counts (``order_statistics``).

Several processes shard the prediction and the temporal aggregation by clip; the thresholds, which Algorithm 1
carries from clip to clip, and everything after them run on rank 0 in the clips' order (``make_pseudo_labels``).
"""

from pathlib import Path

import numpy as np

from videoda.data.classes import IGNORE_ID
from videoda.domain_adaptation.pseudo_labels import (LabelStats, aggregate_predictions, annotated_labels,
                                                     clip_frames, clip_predictions, cutout_refine, generator,
                                                     label_stream, maxima_of, miou_at_proportion, model_device,
                                                     table7_p_miou, write_clip_pseudo_labels)
from videoda.domain_adaptation.spill import shared_spill, to_numpy
from videoda.flow.warp import flow_to_tensor
from videoda.utils.distributed import SINGLE


class Precision:
    """``label_precision`` accumulated over label maps: matching and kept (both labelled) pixels."""

    def __init__(self):
        self.matches, self.kept = 0, 0

    def add(self, labels, gt):
        kept = (labels != IGNORE_ID) & (gt != IGNORE_ID)
        self.kept += int(kept.sum())
        self.matches += int((labels[kept] == gt[kept]).sum())

    def result(self):
        """(share of the kept labels that match, or NaN; kept pixels), as ``label_precision`` returns them."""
        return (self.matches / self.kept if self.kept else float("nan")), self.kept


class Analysis:
    """The comparisons of ``analyse`` accumulated clip by clip on the annotated frames: the share of their
    pixels labelled, and the precision of the labels before and after cut-out refinement (Eq. 12, reference
    frame t - tau)."""

    def __init__(self, store, tau):
        self.store, self.tau = store, tau
        self.labelled, self.annotated = np.int64(0), np.int64(0)
        self.before, self.after = Precision(), Precision()

    def add(self, clip, labels, annotated):
        """labels: the clip's (T, H, W) uint8 tensor (on the device the refinement runs on); annotated:
        ``annotated_labels(clip)``."""
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

    def proportion(self):
        """The share of the annotated pixels that got a pseudo label, where P-mIoU is compared."""
        return float(self.labelled / self.annotated)


def annotated_maxima(annotated, single, aggregated):
    """The spill of an annotated clip's pixels: single and aggregated (confidence, argmax) and the ground truth
    where it exists, each 1-D in pixel order (frames in order, then rows)."""
    idx, gt = annotated
    valid = gt != IGNORE_ID
    out = {"annotated_gt": gt[valid]}
    for key, (conf, pred) in (("single", single), ("aggregated", aggregated)):
        frames = idx.tolist()
        out[f"annotated_{key}_conf"] = to_numpy(conf[frames])[valid]
        out[f"annotated_{key}_pred"] = to_numpy(pred[frames])[valid]
    return out


def make_pseudo_labels(model, clips, store, cfg, tau, out, device=None, progress=lambda xs, **_: xs, world=SINGLE):
    """Label ``clips`` with generator ``cfg.pseudo_label`` (``videoda.config.PseudoLabels``), writing each clip's labels
    under ``out`` (``<out>/<clip>/<frame>.png``, ``write_clip_pseudo_labels``) as it is made, and return the
    stage's report (see the module's docstring; ``tau``: the pair distance of cut-out refinement).

    Prediction, aggregation (Eq. 10), thresholds and the refinement run on ``device`` (default: the model's;
    the model is moved there). Each clip is predicted once: its single-frame and aggregated maxima serve the
    generator and the comparisons. The spill lives in a temporary folder next to ``out`` (inside the atomic
    output's temporary folder when ``out`` is one), removed at the end.

    Several processes (``world``; ``out`` matters on rank 0 only, and its folder must be one every rank sees):
    each rank predicts and aggregates the clips it owns (``world.shard``, round robin) and writes what the
    labels and the comparisons need of them into the spill, under the clip's index; after a barrier, rank 0
    reads the spill back clip by clip in the clips' order, so that Algorithm 1's EMA over clips (and CBST's
    set-wide thresholds) sees them exactly as one process does, writes the labels and makes the report. The
    other ranks return None.
    """
    gen = generator(cfg.pseudo_label)
    device = model_device(model, device)
    stats, analysis = LabelStats(cfg.classes), Analysis(store, tau)
    # the spill's keys of the generator's (confidence, argmax) of every frame: Table 7's arrays when it has them
    label_keys = ("conf", "pred")
    if cfg.equal_proportions:
        label_keys = ("agg_conf", "agg_pred") if gen.aggregate else ("single_conf", "single_pred")

    def predicted(clip):
        """(the clip's arrays for the spill, the generator's (confidence, argmax) of every frame)."""
        images = clip_frames(clip)
        probs = clip_predictions(model, clip, store, cfg, False, images)
        single = maxima_of(probs)
        aggregated = maxima_of(aggregate_predictions(probs, clip, store, cfg, images))
        del probs                   # one clip's softmax maps at a time
        every_frame = {}
        if cfg.equal_proportions:   # Table 7's thresholds use every frame
            every_frame = {"single_conf": single[0], "single_pred": single[1],
                           "agg_conf": aggregated[0], "agg_pred": aggregated[1]}
        return ({**annotated_maxima(annotated_labels(clip), single, aggregated), **every_frame},
                aggregated if gen.aggregate else single)

    with shared_spill(Path(out).parent if world.is_main else None, world) as spill:
        folder = spill.folder
        if world.distributed:
            def spilled(i):             # the clip's arrays, with the generator's maxima if Table 7's are not there
                arrays, (conf, pred) = predicted(clips[i])
                return arrays if cfg.equal_proportions else {**arrays, "conf": conf, "pred": pred}

            spill.write_shard([clip.name for clip in clips], spilled, world, progress, "pseudo labels")
            if not world.is_main:
                return None
            maxima = spill.view(*label_keys)
            in_order = progress(clips, description="pseudo labels: thresholds in clip order")
        else:
            def one_shot():             # each clip's labels are made (and written) before the next is predicted
                for clip in progress(clips, description="pseudo labels"):
                    arrays, chosen = predicted(clip)
                    spill.append(clip.name, **arrays)
                    yield clip.name, chosen
            maxima, in_order = one_shot(), clips

        theta = None
        for clip, (name, labels, theta) in zip(in_order, label_stream(cfg.pseudo_label, maxima, cfg, device, folder)):
            host_labels = labels.cpu().numpy()
            write_clip_pseudo_labels(out, clip, host_labels)
            annotated = annotated_labels(clip)
            stats.add(clip, host_labels, annotated)
            analysis.add(clip, labels, annotated)
        proportion = analysis.proportion()
        report = {"generator": cfg.pseudo_label, **stats.result(),
                  "thresholds": {c: round(float(t), 4) for c, t in zip(cfg.classes.names, theta)},
                  "equal_proportion": {
                      "proportion": round(100 * proportion, 4),
                      "single_frame_p_miou": miou_at_proportion(spill.chunks(
                          "annotated_single_conf", "annotated_single_pred", "annotated_gt"), proportion, device,
                          cfg.classes),
                      "aggregated_p_miou": miou_at_proportion(spill.chunks(
                          "annotated_aggregated_conf", "annotated_aggregated_pred", "annotated_gt"), proportion,
                          device, cfg.classes)}}
        prec_b, n_b = analysis.before.result()
        prec_a, n_a = analysis.after.result()
        report["cutout_refinement"] = {"precision_before": round(100 * prec_b, 4), "pixels_before": n_b,
                                       "precision_after": round(100 * prec_a, 4), "pixels_after": n_a}
        if cfg.equal_proportions:
            report["table7"] = table7_p_miou(spill.view("single_conf", "single_pred"),
                                             spill.view("agg_conf", "agg_pred"), clips, cfg,
                                             cfg.equal_proportions, device)
    return report


def pseudo_labels_summary(report):
    """The headline of ``make_pseudo_labels``' report: P-mIoU and the proportion labelled, and Table 7 when it
    was asked for (``reports/p_miou.json``, the columns ``dvc exp show`` leads with)."""
    keys = ("p_miou", "proportion", "table7")
    return {k: report[k] for k in keys if k in report}
