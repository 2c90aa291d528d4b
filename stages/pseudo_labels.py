"""Stage `pseudo_labels`: pseudo labels for every target-train frame, written as label PNGs (Sec. 4.4.1).

The generator (`vst.pseudo_label`) is ours by default: clip-adaptive thresholds (Eq. 11, Algorithm 1) on
temporally aggregated predictions (Eq. 10); `cbst`, `iast` and `clip` (no aggregation) serve the baselines
and ablations. ``reports/pseudo_labels.json`` holds the proportion labelled, P-mIoU (Table 7), P-mIoU of
single-frame vs aggregated predictions at equal proportion, and the precision of the labels that online
cut-out refinement (Eq. 12) keeps; with ``vst.equal_proportions``, Table 7: P-mIoU of CB, IA and ours, each
tuned to the same proportions.

With several processes (``compute.nproc_per_node`` x ``nnodes``), each rank predicts and aggregates its share
of the clips; rank 0 applies the thresholds in the clips' order (Algorithm 1's EMA runs over clips in order)
and writes the labels and both reports, byte for byte as one process does on the CPU.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.fields import read_stage_config
from videoda.config.self_training import PseudoLabelStage
from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_label_analysis import PseudoLabelAnalysis
from videoda.domain_adaptation.pseudo_labels import make_pseudo_labels
from videoda.errors import run_stage
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint
from videoda.utils.io import write_json
from videoda.utils.shards import main_atomic_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/pseudo_labels.json", help="the stage's resolved params")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--flow", default="data/flow/target_train.h5")
    ap.add_argument("--out", default="data/pseudo_labels")
    ap.add_argument("--report", default="reports/pseudo_labels.json", help="every figure of the labels")
    ap.add_argument("--summary", default="reports/p_miou.json", help="the headline: P-mIoU, proportion, Table 7")
    args = ap.parse_args()
    cfg = read_stage_config(PseudoLabelStage, args.params)
    if cfg.compute.launch("pseudo_labels"):     # several processes: they ran as ranks, and have finished
        return
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = compute.module(load_checkpoint(args.model, map_location=compute.device)[0])
    with FlowStore(args.flow) as store, main_atomic_path(args.out, compute.world) as out:
        analysis = PseudoLabelAnalysis(cfg.labels, cfg.tau, store)
        make_pseudo_labels(model, load_split(args.data, "target_train"), store, cfg.labels, out, compute, analysis)
    if compute.world.is_main:
        write_json(args.report, analysis.report)
        write_json(args.summary, analysis.summary)


if __name__ == "__main__":
    run_stage(main)
