"""Stages `train_source` and `train_oracle`: supervised training on frame pairs (t - tau, t), Eq. 9's L_seg.

`train_source` trains on the labelled source clips (the source-only baseline and the start of VAT);
`train_oracle` trains the same way on the labelled target-train frames (the paper's upper bound).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.fields import read_stage_config
from videoda.config.training import Supervised
from videoda.data.pairs import PairSampler, load_split
from videoda.domain_adaptation.train import (seed_everything, segmentation_loss, segmentation_optimizer,
                                             supervised_forward, timing_line, train)
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
    cfg = read_stage_config(Supervised, args.params or f"data/params/{args.stage}.json", section=args.stage)
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    seed_everything(cfg.seed, compute.device)
    torch.set_num_threads(cfg.train.threads)
    model = compute.module(build_model(cfg.model))       # initialised on the CPU, then moved: device-independent
    optimizer = segmentation_optimizer(model, cfg.train.optim)
    # Frame t of every pair is labelled: VIPER may be labelled on a subset of frames, Cityscapes-VPS on 1 in 5.
    sampler = PairSampler(load_split(args.data, args.split), cfg.tau, cfg.train.batch_size, cfg.seed,
                          require_label=True, hflip=cfg.train.hflip)
    result = train(model, optimizer, sampler.sample, supervised_forward, [segmentation_loss], cfg.train.iterations,
                   args.curve, power=cfg.train.optim.poly_power, description=args.stage, compute=compute)
    save_checkpoint(args.out, model, {"stage": args.stage})
    print(timing_line(args.stage, cfg.train.iterations, result["seconds"]) + f" on {compute.describe()}")


if __name__ == "__main__":
    run_stage(main)
