"""Stage `pseudo_labels`: pseudo labels for every target-train frame, written as label PNGs (Sec. 4.4.1).

The generator (`vst.pseudo_label`) is ours by default: clip-adaptive thresholds (Eq. 11, Algorithm 1) on
temporally aggregated predictions (Eq. 10); `cbst`, `iast` and `clip` (no aggregation) serve the baselines
and ablations. ``reports/pseudo_labels.json`` holds the proportion labelled, P-mIoU (Table 7), P-mIoU of
single-frame vs aggregated predictions at equal proportion, and the precision of the labels that online
cut-out refinement (Eq. 12) keeps; with ``vst.equal_proportions``, Table 7: P-mIoU of CB, IA and ours, each
tuned to the same proportions.
"""

import argparse

import numpy as np
import torch
from rich.progress import track

from videoda.data.classes import CLASSES
from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_labels import (aggregate_predictions, cutout_refine,
                                                     generate_pseudo_labels, label_precision, miou_at_proportion,
                                                     pseudo_label_config, pseudo_label_path, pseudo_label_report,
                                                     table7_p_miou)
from videoda.errors import run_stage
from videoda.evaluate import predict_probs
from videoda.flow.store import FlowStore
from videoda.flow.warp import flow_to_tensor
from videoda.model import load_checkpoint
from videoda.params import Section, load_params
from videoda.utils.images import write_ids
from videoda.utils.io import atomic_path, write_json


def analyse(model, clips, store, labels, cfg, tau):
    """Equal-proportion comparisons (Table 7) and the precision of cut-out refinement, on labelled frames."""
    single, aggregated, gts, generated = [], [], [], []
    before, after = [], []
    every_frame = {"single": [], "aggregated": []}     # Table 7 needs every frame's maxima (thresholds use them)
    for clip in track(clips, description="pseudo labels (analysis)"):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--flow", default="data/flow/target_train.h5")
    ap.add_argument("--out", default="data/pseudo_labels")
    ap.add_argument("--report", default="reports/pseudo_labels.json")
    args = ap.parse_args()
    params = load_params()
    torch.manual_seed(Section(params).int("seed", lo=0))
    torch.set_num_threads(Section(params, "vst").int("threads", lo=1))
    cfg = pseudo_label_config(params)
    tau = Section(params, "flow").int("tau", lo=1)   # one pair distance for the stored flows and VST
    model, _ = load_checkpoint(args.model)
    clips = load_split(args.data, "target_train")
    with FlowStore(args.flow) as store:
        labels, theta = generate_pseudo_labels(model, clips, store, cfg, progress=track)
        report = {"generator": cfg.kind, **pseudo_label_report(labels, clips),
                  "thresholds": {c: round(float(t), 4) for c, t in zip(CLASSES, theta)},
                  **analyse(model, clips, store, labels, cfg, tau)}
    with atomic_path(args.out) as out:
        for clip in clips:
            (out / clip.name).mkdir(parents=True)
            for name, lab in zip(clip.frame_names, labels[clip.name]):
                write_ids(pseudo_label_path(out, clip.name, name), lab)
    write_json(args.report, report)


if __name__ == "__main__":
    run_stage(main)
