"""What stage `pseudo_labels` reports about its labels (``reports/pseudo_labels.json``, Sec. 4.4.1, Table 7).

The proportion labelled and P-mIoU, the final thresholds, P-mIoU of single-frame vs aggregated predictions at
equal proportion, the precision of the labels that online cut-out refinement (Eq. 12) keeps and, with
``equal_proportions``, Table 7: P-mIoU of CB, IA and ours, each tuned to the same proportions.
"""

import numpy as np
import torch

from videoda.data.classes import CLASSES
from videoda.domain_adaptation.pseudo_labels import (aggregate_predictions, cutout_refine, label_precision,
                                                     miou_at_proportion, pseudo_label_report, table7_p_miou)
from videoda.evaluate import predict_probs
from videoda.flow.warp import flow_to_tensor


def analyse(model, clips, store, labels, cfg, tau, progress=lambda xs, **_: xs):
    """Equal-proportion comparisons (Table 7) and the precision of cut-out refinement, on labelled frames."""
    single, aggregated, gts, generated = [], [], [], []
    before, after = [], []
    every_frame = {"single": [], "aggregated": []}     # Table 7 needs every frame's maxima (thresholds use them)
    for clip in progress(clips, description="pseudo labels (analysis)"):
        idx = np.flatnonzero(clip.labeled)
        probs = predict_probs(model, clip.images, cfg.batch_size)
        for out, key, p in ((single, "single", probs),
                            (aggregated, "aggregated", aggregate_predictions(probs, clip, store, cfg))):
            conf, pred = p.max(1)
            conf, pred = conf.numpy(), pred.numpy().astype(np.uint8)
            out.append((conf[idx], pred[idx]))
            if cfg.equal_proportions:
                every_frame[key].append((clip.name, (conf, pred)))
        gts.append(clip.labels[idx])
        generated.append(labels[clip.name][idx])
        t = idx[idx >= tau]
        if len(t):
            flow = flow_to_tensor(np.stack([store.flow(clip.name, i, i - tau) for i in t]))
            refined = cutout_refine(torch.from_numpy(labels[clip.name][t]).long(),
                                    torch.from_numpy(labels[clip.name][t - tau]).long(), flow).numpy()
            before.append((labels[clip.name][t], clip.labels[t]))
            after.append((refined, clip.labels[t]))
    gt = np.concatenate([g.ravel() for g in gts])
    gen = np.concatenate([g.ravel() for g in generated])
    proportion = float(((gen != 255) & (gt != 255)).sum() / (gt != 255).sum())
    cat = lambda pairs, i: np.concatenate([p[i].ravel() for p in pairs])  # noqa: E731
    result = {"equal_proportion": {
        "proportion": round(100 * proportion, 4),
        "single_frame_p_miou": miou_at_proportion(cat(single, 0), cat(single, 1), gt, proportion),
        "aggregated_p_miou": miou_at_proportion(cat(aggregated, 0), cat(aggregated, 1), gt, proportion)}}
    prec_b, n_b = label_precision(cat(before, 0), cat(before, 1))
    prec_a, n_a = label_precision(cat(after, 0), cat(after, 1))
    result["cutout_refinement"] = {"precision_before": round(100 * prec_b, 4), "pixels_before": n_b,
                                   "precision_after": round(100 * prec_a, 4), "pixels_after": n_a}
    if cfg.equal_proportions:
        result["table7"] = table7_p_miou(every_frame["single"], every_frame["aggregated"], clips, cfg,
                                         cfg.equal_proportions)
    return result


def pseudo_labels_report(model, clips, store, labels, theta, cfg, tau, progress=lambda xs, **_: xs):
    """The stage's report on ``labels`` ({clip: (T, H, W)}) and the final thresholds ``theta`` of generator
    ``cfg.kind``: the generator, proportion and P-mIoU (``pseudo_label_report``), the thresholds per class, and
    ``analyse``'s comparisons (``tau``: the pair distance of cut-out refinement)."""
    return {"generator": cfg.kind, **pseudo_label_report(labels, clips),
            "thresholds": {c: round(float(t), 4) for c, t in zip(CLASSES, theta)},
            **analyse(model, clips, store, labels, cfg, tau, progress)}


def pseudo_labels_summary(report):
    """The headline of ``pseudo_labels_report``: P-mIoU and the proportion labelled, and Table 7 when it was
    asked for (``reports/p_miou.json``, the columns ``dvc exp show`` leads with)."""
    keys = ("p_miou", "proportion", "table7")
    return {k: report[k] for k in keys if k in report}
