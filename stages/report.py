"""Stage `report`: the visual report, ``reports/visual/`` (``index.md`` and the PNGs and video it links).

Per-class IoU bars and row-normalised confusion matrices of every evaluated model, pseudo labels of a few
annotated target-train frames as generated and after cut-out (Eq. 12) and fill-in (Eq. 14) refinement, a
side-by-side prediction video of the baseline and the adapted model on one target-val clip, and the class
colours. The drawing lives in the package ``videoda/report/`` (charts with matplotlib, the video with
OpenCV).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import cv2
import torch

from videoda.config.evaluation import Report
from videoda.config.fields import read_stage_config
from videoda.errors import run_stage
from videoda.report import ReportInputs, build_report


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/report.json", help="the stage's resolved params")
    ap.add_argument("--metrics", default="reports/metrics.json")
    ap.add_argument("--confusion", default="reports/figures/confusion.npz")
    ap.add_argument("--pseudo-report", default="reports/pseudo_labels.json")
    ap.add_argument("--pseudo", default="data/pseudo_labels", help="the pseudo-label PNGs, <clip>/<frame>.png")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--flow", default="data/flow/target_train.h5")
    ap.add_argument("--baseline", default="models/source_only.pt", help="the left model of the video")
    ap.add_argument("--model", default="models/vst.pt", help="the right model of the video")
    ap.add_argument("--out", default="reports/visual")
    args = ap.parse_args(argv)
    cfg = read_stage_config(Report, args.params)
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(cfg.threads)
    inputs = ReportInputs(args.metrics, args.confusion, args.pseudo_report, args.pseudo, args.data, args.flow,
                          args.baseline, args.model)
    build_report(args.out, inputs, cfg, compute)


if __name__ == "__main__":
    run_stage(main)
