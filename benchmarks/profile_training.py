"""Benchmark: where a training step of the embedded default spends its time (torch.profiler), per trainer.

Usage (from the repo root, with the venv active, after `dvc repro`):
    python benchmarks/profile_training.py [--stage train_source|vat] [--steps 30] [--rows 15]

Builds the stage's model, optimiser, batch stream and objective from its resolved params (``data/params/``) as the
stage script does, runs ``--steps`` steps with ``train`` (no curve, no snapshot) under ``torch.profiler``, and prints
the operators by self CPU time, then the time the batch stream alone takes for as many batches (reading and
augmenting pairs on the training thread, ``compute.workers`` 0).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile

from videoda.config.fields import read_stage_config
from videoda.config.training import Supervised
from videoda.config.vat import VAT
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.adversarial import VATBatches, vat_objective
from videoda.domain_adaptation.train import SUPERVISED, seed_everything, segmentation_optimizer, train
from videoda.model import load_checkpoint
from videoda.model.build import build_model
from videoda.utils.machine import cpu_model


def setup(stage, data, compute):
    """(model, optimizer, batch stream, objective, training config) as the stage script builds them."""
    if stage == "vat":
        cfg = read_stage_config(VAT, "data/params/vat.json")
        seed_everything(cfg.seed, compute)
        model = load_checkpoint("models/source_only.pt")[0]
        batches = VATBatches.from_prepared(data, cfg, compute)
        objective = vat_objective(cfg, model.config["num_classes"], compute)
    else:
        cfg = read_stage_config(Supervised, f"data/params/{stage}.json", section=stage)
        seed_everything(cfg.seed, compute)
        model = build_model(cfg.model)
        split = "source" if stage == "train_source" else "target_train"
        pairs = PairDataset(load_split(data, split), cfg.tau, require_label=True)
        batches = PairLoader(pairs, cfg.train.batch_size, cfg.seed, cfg.train.hflip, compute)
        objective = SUPERVISED
    torch.set_num_threads(cfg.train.threads)
    return model, segmentation_optimizer(model, cfg.train.optim), batches, objective, cfg.train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", default="train_source", choices=["train_source", "train_oracle", "vat"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--data", default="data/prepared")
    args = ap.parse_args()
    compute = read_stage_config(VAT, "data/params/vat.json").compute.runtime()
    compute = dataclasses.replace(compute, show_progress=False)
    model, optimizer, batches, objective, cfg = setup(args.stage, args.data, compute)
    cfg = dataclasses.replace(cfg, iterations=args.steps, snapshot_every=0)
    with batches:
        train(model, optimizer, batches, objective, dataclasses.replace(cfg, iterations=2), compute=compute)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            train(model, optimizer, batches, objective, cfg, compute=compute)
            seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            batches.sample()
        loading = time.perf_counter() - start
    print(f"machine: {cpu_model()}; {args.stage}: {args.steps} steps in {seconds:.2f} s "
          f"({1000 * seconds / args.steps:.0f} ms a step); the batch stream alone: {1000 * loading / args.steps:.0f} "
          f"ms a batch ({100 * loading / seconds:.0f}% of a step)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
