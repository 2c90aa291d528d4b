"""Stage `pseudo_labels`: pseudo labels for every target-train frame, written as label PNGs (Sec. 4.4.1).

The generator (`vst.pseudo_label`) is ours by default: clip-adaptive thresholds (Eq. 11, Algorithm 1) on
temporally aggregated predictions (Eq. 10); `cbst`, `iast` and `clip` serve the baselines and ablations.
``reports/pseudo_labels.json``: the proportion labelled, P-mIoU, P-mIoU of single-frame vs aggregated predictions
at equal proportion, the precision cut-out refinement (Eq. 12) keeps, and with ``vst.equal_proportions`` Table 7.
Several processes (``compute``) predict a share of the clips each; rank 0 thresholds them in the clips' order
(Algorithm 1's EMA) and writes the outputs, byte for byte as one process. Killed, it resumes: the clips' predictions
are kept in ``data/.snapshots/pseudo_labels/``; the thresholds are made again from clip 0 (``make_pseudo_labels``).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.self_training import PseudoLabelStage
from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_label_analysis import PseudoLabelAnalysis
from videoda.domain_adaptation.pseudo_labels import make_pseudo_labels
from videoda.errors import run_stage
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint
from videoda.utils.io import write_json
from videoda.utils.resume import ClipWork
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
    inputs, clips = [f"{args.data}/target_train", args.flow], load_split(args.data, "target_train")
    with ClipWork.for_stage("pseudo_labels", args.out, run_params(args.params), __file__, [args.model], inputs,
                            compute) as work, FlowStore(args.flow) as store:        # work: kept across a kill
        with main_atomic_path(args.out, compute.world) as out:
            analysis = PseudoLabelAnalysis(cfg.labels, cfg.tau, store)
            make_pseudo_labels(model, clips, store, cfg.labels, out, compute, analysis, work.folder)
        if compute.world.is_main:
            write_json(args.report, analysis.report)
            write_json(args.summary, analysis.summary)


if __name__ == "__main__":
    run_stage(main)
