"""Stage `flow`: the optical flow that video self-training (VST, Eq. 10-13) needs, for every target-train clip.

Writes ``data/flow/target_train.h5`` (layout and conventions: ``videoda.flow.store``, ``videoda.flow``): for
every frame i the flows i -> i-1 and i -> i+1 (backward-warping the neighbours onto frame i, Eq. 10), and
t -> t-tau and t-tau -> t (cut-out refinement, Eq. 12), stored once when tau = 1. With ``flow.epe`` it scores
the configured backend, the ``flow.compare`` methods and the zero flow against the ground-truth flow in
``reports/flow.json``; a ptlflow model to compare whose checkpoint is not found offline is listed as not run
(``videoda.flow.compute``).
"""

import argparse

import cv2
import torch
from rich.progress import track

from videoda.flow.backends import DIS_PRESETS
from videoda.flow.compute import compute_flows
from videoda.params import Section, load_params
from videoda.utils.io import write_json
from videoda.utils.stage import run_stage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="data/flow/target_train.h5")
    ap.add_argument("--report", default="reports/flow.json")
    args = ap.parse_args()
    p = Section(load_params(), "flow")
    method = p.str("method")
    tau = p.int("tau", lo=1)
    alpha, threshold = p.float("alpha", lo=0.0), p.float("occlusion_threshold", lo=0.0, hi=1.0)
    dis_preset = p.choice("dis_preset", list(DIS_PRESETS))
    ckpt = p.str("ckpt", optional=True)
    batch_size, threads = p.int("batch_size", lo=1), p.int("threads", lo=1)
    score = p.bool("epe")
    gt_root = p.str("gt_root")
    compare = p.list("compare", str) if score and p.values.get("compare") != [] else []
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)

    report, seconds = compute_flows(args.data, args.out, method=method, tau=tau, alpha=alpha, threshold=threshold,
                                    dis_preset=dis_preset, ckpt=ckpt, batch_size=batch_size, score=score,
                                    gt_root=gt_root, compare=compare, progress=track)
    write_json(args.report, report)
    pairs_done = report["pairs"]
    print(f"flow: {pairs_done} flows of {report['clips']} clips with {method} in {seconds:.1f} s "
          f"({1000 * seconds / max(pairs_done, 1):.1f} ms per flow)")


if __name__ == "__main__":
    run_stage(main)
