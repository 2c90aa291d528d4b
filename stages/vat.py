"""Stage `vat`: video adversarial training (Sec. 4.3, Eq. 9) from the source-only model (docs/method/vat.md).

Segmentation network: per-frame cross-entropy on source pairs (t - tau, t) + lambda_dice x tube matching (Eq. 6-7)
+ lambda_V x the video GAN loss (Eq. 8) on unlabelled target pairs; D_V steps in alternation. ``vat.discriminator``,
``disc_input`` and ``dice`` select the image-level baselines (AdaptSegNet, ADVENT) and Table 3's rows.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.vat import VAT
from videoda.domain_adaptation.adversarial import VATBatches, vat_objective
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import (Curve, seed_everything, segmentation_optimizer, skip_phase, timing_line,
                                             train)
from videoda.errors import run_stage
from videoda.model import load_checkpoint, save_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/vat.json", help="the stage's resolved params")
    ap.add_argument("--init", default="models/source_only.pt", help="the source-only checkpoint to start from")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/vat.pt")
    ap.add_argument("--curve", default="reports/curves/vat.tsv")
    args = ap.parse_args()
    cfg = read_stage_config(VAT, args.params)
    if cfg.enabled and cfg.compute.launch("vat"):    # several processes: this one ran them as ranks, now done
        return
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    if not cfg.enabled:      # a method without an adversarial phase (conf/method/)
        return skip_phase("vat", args.init, args.out, args.curve)
    seed_everything(cfg.seed, compute)
    torch.set_num_threads(cfg.train.threads)
    model = compute.module(load_checkpoint(args.init, map_location=compute.device)[0])
    optimizer = segmentation_optimizer(model, cfg.train.optim)
    with VATBatches.from_prepared(args.data, cfg, compute) as batches:
        objective = vat_objective(cfg, model.config["num_classes"], compute)
        curve = Curve.for_stage(args.curve, "vat", cfg.train.validation, args.data)     # + validation curve
        inputs = [f"{args.data}/source", f"{args.data}/target_train", *curve.validation.inputs]
        snapshot = Snapshot.for_stage("vat", args.out, cfg.train.snapshot_every, run_params(args.params), __file__,
                                      args.init, inputs, compute)
        snapshot.load()
        result = train(model, optimizer, batches, objective, cfg.train, curve, snapshot, compute)
    if not compute.world.is_main:            # every rank holds the same weights; rank 0 writes
        return
    save_checkpoint(args.out, model, {"stage": "vat", "init": str(args.init), "discriminator": cfg.discriminator,
                                      "disc_input": cfg.disc_input, "dice": cfg.dice})
    snapshot.remove()
    print(timing_line("vat", cfg.train.iterations, result["seconds"]) + f" on {compute.describe()}")


if __name__ == "__main__":
    run_stage(main)
