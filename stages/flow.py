"""Stage `flow`: the optical flow that video self-training (VST, Eq. 10-13) needs, for every target-train clip.

Writes ``data/flow/target_train.h5`` (layout and conventions: ``videoda.flow.store``, ``videoda.flow``): for
every frame i the flows i -> i-1 and i -> i+1 (backward-warping the neighbours onto frame i, Eq. 10), and
t -> t-tau and t-tau -> t (cut-out refinement, Eq. 12), stored once when tau = 1. With ``flow.epe`` it scores
the configured backend, the ``flow.compare`` methods and the zero flow against the ground-truth flow in
``reports/flow.json``; a ptlflow model to compare whose checkpoint is not found offline is listed as not run.
It depends on the ground truth through stage `flow_gt`'s manifest (``--gt-manifest``), which it checks.
With several processes (``compute``) the clips are sharded across the ranks and rank 0 writes the outputs in
clip order: the same bytes as one process (``videoda.flow.compute``). Killed, it resumes: the clips done are kept
in ``data/flow/.snapshots/flow/`` (``videoda.utils.resume``) and not computed again.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
from pathlib import Path

import cv2
import torch

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.flow import Flow
from videoda.errors import run_stage
from videoda.flow.compute import compute_flows
from videoda.flow.ground_truth import check_manifest, reads_ground_truth
from videoda.utils.io import write_json
from videoda.utils.resume import ClipWork


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/flow.json", help="the stage's resolved params")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="data/flow/target_train.h5")
    ap.add_argument("--report", default="reports/flow.json")
    ap.add_argument("--gt-manifest", help="stage flow_gt's manifest of the ground truth read (checked)")
    args = ap.parse_args()
    cfg = read_stage_config(Flow, args.params)
    if args.gt_manifest:
        check_manifest(args.gt_manifest, cfg.gt_root, reads_ground_truth(cfg.method, cfg.epe))
    if cfg.compute.launch("flow"):           # several processes: the ranks ran the stage
        return
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(cfg.threads)
    weights = cfg.ckpt if cfg.ckpt and Path(cfg.ckpt).is_file() else None   # a named one: its sha256 in its name
    with ClipWork.for_stage("flow", args.out, run_params(args.params), __file__, [],    # kept across a kill
                            [f"{args.data}/target_train", args.gt_manifest, weights], compute) as work:
        report, seconds = compute_flows(args.data, args.out, cfg, compute, work.folder)
        if not compute.world.is_main:            # rank 0 merged the clips and writes the outputs
            return
        write_json(args.report, report)
    print(f"flow: {report['pairs']} flows of {report['clips']} clips with {cfg.method} in {seconds:.1f} s "
          f"({1000 * seconds / max(report['pairs'], 1):.1f} ms per flow)")


if __name__ == "__main__":
    run_stage(main)
