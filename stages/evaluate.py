"""Stage `evaluate`: score every trained model on the target validation clips.

Writes ``reports/metrics.json`` (nested per model: mIoU with per-class IoU, VPQ^s per window size k; ``final``:
the selected ``method``'s model, see ``videoda/presets.py``),
the predictions as label PNGs (so ``videoda eval`` can re-score them), confusion matrices and
qualitative strips (input | prediction | ground truth).
"""

import argparse

import cv2
import numpy as np
import torch

from videoda.data.pairs import load_split
from videoda.errors import ParamError, run_stage
from videoda.evaluate import evaluate_clips, qualitative_strip
from videoda.model import load_checkpoint
from videoda.params import Section, load_params
from videoda.presets import final_model
from videoda.utils.io import atomic_path, write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                    help="a checkpoint to evaluate, e.g. source_only=models/source_only.pt (repeatable)")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--metrics", default="reports/metrics.json")
    ap.add_argument("--predictions", default="data/predictions")
    ap.add_argument("--figures", default="reports/figures")
    args = ap.parse_args()
    params = load_params()
    p = Section(params, "evaluate")
    torch.set_num_threads(p.int("threads", lo=1))
    label_stride = p.int("label_stride", lo=1)
    batch_size, strips = p.int("batch_size", lo=1), p.int("strip_rows", lo=1)
    models = []
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ParamError(f"--model {spec!r}: expected NAME=PATH")
        models.append((name, path))

    clips = load_split(args.data, "target_val")
    metrics, confusion = {}, {}
    with atomic_path(args.predictions) as pred_root, atomic_path(args.figures) as fig_root:
        fig_root.mkdir()
        for name, path in models:
            model, _ = load_checkpoint(path)
            pred_dir = pred_root / name
            pred_dir.mkdir(parents=True)
            metrics[name], confusion[name] = evaluate_clips(model, clips, label_stride, batch_size, pred_dir,
                                                            description=f"evaluate {name}")
            strip = qualitative_strip(model, clips, strips)
            cv2.imwrite(str(fig_root / f"{name}_strip.png"), strip[..., ::-1])
        np.savez(fig_root / "confusion.npz", **confusion)
    final = final_model(params)          # the selected method's result (videoda/presets.py)
    if final in metrics:
        metrics["final"] = metrics[final]
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_stage(main)
