"""Stage `evaluate`: score every trained model on the target validation clips.

Writes ``reports/scores.json`` (the headline: mIoU and VPQ^s per model), ``reports/metrics.json`` (nested per
model: mIoU with per-class IoU, VPQ^s per window size k; ``final``: the selected method's model,
``evaluate.final_model``), the predictions as label PNGs (so ``videoda eval`` can re-score them), confusion
matrices and qualitative strips (input | prediction | ground truth). With several processes (``compute``) the clips
are sharded across the ranks and rank 0 merges them in clip order: the same bytes as one process
(``videoda.evaluate``). Killed, it resumes: each model's clips done are kept in ``data/.snapshots/evaluate/``.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.compute import run_params
from videoda.config.evaluation import Evaluate
from videoda.config.fields import read_stage_config
from videoda.data.pairs import load_split
from videoda.domain_adaptation.validation import validation_folder, with_selection
from videoda.errors import run_stage
from videoda.evaluate import checkpoint_spec, evaluate_models, headline_scores
from videoda.utils.io import write_json
from videoda.utils.resume import ClipWork
from videoda.utils.shards import main_atomic_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/evaluate.json", help="the stage's resolved params")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH", type=checkpoint_spec,
                    help="a checkpoint to evaluate, e.g. source_only=models/source_only.pt (repeatable)")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--metrics", default="reports/metrics.json", help="every figure, per class and per window")
    ap.add_argument("--scores", default="reports/scores.json", help="the headline: mIoU and VPQ^s per model")
    ap.add_argument("--predictions", default="data/predictions")
    ap.add_argument("--figures", default="reports/figures")
    args = ap.parse_args()
    cfg = read_stage_config(Evaluate, args.params)
    if cfg.compute.launch("evaluate"):       # several processes: the ranks ran the stage
        return
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    torch.set_num_threads(cfg.threads)
    clips = load_split(args.data, "target_val")
    world = compute.world                    # only rank 0 writes outputs (None for the others)
    with ClipWork.for_stage("evaluate", args.predictions, run_params(args.params), __file__,   # kept across a kill
                            [path for _, path in args.model], [f"{args.data}/target_val"], compute) as work:
        with main_atomic_path(args.predictions, world) as pred_root, main_atomic_path(args.figures, world) as figs:
            if world.is_main:
                figs.mkdir()
            metrics = evaluate_models(args.model, clips, pred_root, figs, cfg, compute, work.folder)
        if not world.is_main:
            return
        write_json(args.metrics, metrics)
        write_json(args.scores, with_selection(headline_scores(metrics), validation_folder(args.scores)))


if __name__ == "__main__":
    run_stage(main)
