"""Stage `pseudo_labels`: pseudo labels for every target-train frame, written as label PNGs (Sec. 4.4.1).

The generator (`vst.pseudo_label`) is ours by default: clip-adaptive thresholds (Eq. 11, Algorithm 1) on
temporally aggregated predictions (Eq. 10); `cbst`, `iast` and `clip` (no aggregation) serve the baselines
and ablations. ``reports/pseudo_labels.json`` holds the proportion labelled, P-mIoU (Table 7), P-mIoU of
single-frame vs aggregated predictions at equal proportion, and the precision of the labels that online
cut-out refinement (Eq. 12) keeps; with ``vst.equal_proportions``, Table 7: P-mIoU of CB, IA and ours, each
tuned to the same proportions (``videoda.domain_adaptation.pseudo_label_analysis``).
"""

import argparse

import torch
from rich.progress import track

from videoda.data.pairs import load_split
from videoda.data.prepare import write_ids
from videoda.domain_adaptation.pseudo_label_analysis import pseudo_labels_report
from videoda.domain_adaptation.pseudo_labels import generate_pseudo_labels, pseudo_label_config, pseudo_label_path
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint
from videoda.params import Section, load_params
from videoda.utils.io import atomic_path, write_json
from videoda.utils.stage import run_stage


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
        report = pseudo_labels_report(model, clips, store, labels, theta, cfg, tau, progress=track)
    with atomic_path(args.out) as out:
        for clip in clips:
            (out / clip.name).mkdir(parents=True)
            for name, lab in zip(clip.frame_names, labels[clip.name]):
                write_ids(pseudo_label_path(out, clip.name, name), lab)
    write_json(args.report, report)


if __name__ == "__main__":
    run_stage(main)
