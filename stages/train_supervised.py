"""Stages `train_source` and `train_oracle`: supervised training on frame pairs (t - tau, t), Eq. 9's L_seg.

`train_source` trains on the labelled source clips (the source-only baseline and the start of VAT);
`train_oracle` trains the same way on the labelled target-train frames (the paper's upper bound).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.training import Supervised
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import (SUPERVISED, Curve, seed_everything, segmentation_optimizer, timing_line,
                                             train)
from videoda.errors import run_stage
from videoda.model import save_checkpoint
from videoda.model.build import build_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", required=True, choices=["train_source", "train_oracle"])
    ap.add_argument("--params", help="the stage's resolved params (default: data/params/<stage>.json)")
    ap.add_argument("--split", required=True, choices=["source", "target_train"])
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", required=True)
    ap.add_argument("--curve", required=True)
    args = ap.parse_args()
    params = args.params or f"data/params/{args.stage}.json"
    cfg = read_stage_config(Supervised, params, section=args.stage)
    if cfg.compute.launch(args.stage):       # several processes: this one ran them as ranks, and they are done
        return
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    seed_everything(cfg.seed, compute)
    torch.set_num_threads(cfg.train.threads)
    model = compute.module(build_model(cfg.model))       # initialised on the CPU, then moved: device-independent
    optimizer = segmentation_optimizer(model, cfg.train.optim)
    # Frame t of every pair is labelled: VIPER may be labelled on a subset of frames, Cityscapes-VPS on 1 in 5.
    pairs = PairDataset(load_split(args.data, args.split), cfg.tau, require_label=True)
    with PairLoader(pairs, cfg.train.batch_size, cfg.seed, cfg.train.hflip, compute) as batches:
        curve = Curve.for_stage(args.curve, args.stage, cfg.train.validation, args.data)    # + validation curve
        snapshot = Snapshot.for_stage(args.stage, args.out, cfg.train.snapshot_every, run_params(params), __file__,
                                      data=[f"{args.data}/{args.split}", *curve.validation.inputs], compute=compute)
        snapshot.load()
        result = train(model, optimizer, batches, SUPERVISED, cfg.train, curve, snapshot, compute)
    if not compute.world.is_main:            # every rank holds the same weights; rank 0 writes
        return
    save_checkpoint(args.out, model, {"stage": args.stage})
    snapshot.remove()
    print(timing_line(args.stage, cfg.train.iterations, result["seconds"]) + f" on {compute.describe()}")


if __name__ == "__main__":
    run_stage(main)
