"""Stage `flow_gt`: the manifest of the ground-truth flow stage `flow` reads, ``data/flow/gt_manifest.json``.

Stage `flow` depends on this manifest rather than on ``flow.gt_root`` (``videoda.flow.ground_truth``): with the
EPE report or the ``gt`` backend it lists each ground-truth file's sha256; otherwise (a real dataset) it says none
is read, so the embedded benchmark's synthetic ground truth never reruns `flow` on real data.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

from videoda.config.fields import read_stage_config
from videoda.config.flow import FlowGroundTruth
from videoda.errors import run_stage
from videoda.flow.ground_truth import ground_truth_manifest, reads_ground_truth
from videoda.utils.io import write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/flow_gt.json", help="the stage's resolved params")
    ap.add_argument("--out", default="data/flow/gt_manifest.json")
    args = ap.parse_args()
    cfg = read_stage_config(FlowGroundTruth, args.params)
    write_json(args.out, ground_truth_manifest(cfg.gt_root, reads_ground_truth(cfg.method, cfg.epe)))


if __name__ == "__main__":
    run_stage(main)
