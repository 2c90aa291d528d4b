"""Stage `vat`: video adversarial training (Sec. 4.3, Eq. 9) from the source-only model.

Segmentation network: per-frame cross-entropy on source pairs (t - tau, t) + lambda_dice x the tube matching
loss (Eq. 6-7) + lambda_V x the video GAN loss (Eq. 8) on unlabelled target pairs; the sequence discriminator
D_V is updated in alternation. ``vat.discriminator``, ``vat.disc_input`` and ``vat.dice`` select the image-level
baselines (AdaptSegNet, ADVENT) and the rows of Table 3 (see the README).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

import torch

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.vat import VAT
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.adversarial import VATBatches, vat_objective
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import (seed_everything, segmentation_optimizer, timing_line, train,
                                             write_curve)
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
        model, _ = load_checkpoint(args.init)
        write_curve(args.curve, [])
        save_checkpoint(args.out, model, {"stage": "vat", "enabled": False, "init": str(args.init)})
        return
    seed_everything(cfg.seed, compute.device)
    torch.set_num_threads(cfg.train.threads)
    model = compute.module(load_checkpoint(args.init, map_location=compute.device)[0])
    t = cfg.train
    optimizer = segmentation_optimizer(model, t.optim)
    source = PairDataset(load_split(args.data, "source"), cfg.tau, require_label=True)   # frame t labelled
    target = PairDataset(load_split(args.data, "target_train"), cfg.tau, labels=False)   # unsupervised
    loaders = [PairLoader(pairs, t.batch_size, seed, hflip=t.hflip, workers=compute.workers, device=compute.device,
                          rank=compute.world.rank) for pairs, seed in ((source, cfg.seed), (target, cfg.seed + 1))]
    batches = VATBatches(*loaders)
    objective = vat_objective(discriminator=cfg.discriminator, disc_input=cfg.disc_input, dice=cfg.dice,
                              lambda_v=cfg.lambda_v, lambda_dice=cfg.lambda_dice, disc_channels=cfg.disc_channels,
                              optimizer_d=cfg.optimizer_d, lr_d=cfg.lr_d, momentum=t.optim.momentum,
                              iterations=t.iterations, poly_power=t.optim.poly_power, compute=compute,
                              num_classes=model.config["num_classes"])
    snapshot = Snapshot.for_stage("vat", args.out, t.snapshot_every, run_params(args.params), __file__, init=args.init,
                                  data=[f"{args.data}/source", f"{args.data}/target_train"], world=compute.world)
    result = train(model, optimizer, batches, objective.forward, objective.terms, t.iterations, args.curve,
                   power=t.optim.poly_power, extra_step=objective.extra_step, description="vat", snapshot=snapshot,
                   resume=snapshot.load(), compute=compute)
    for loader in loaders:
        loader.close()
    if not compute.world.is_main:            # every rank holds the same weights; rank 0 writes
        return
    save_checkpoint(args.out, model, {"stage": "vat", "init": str(args.init), "discriminator": cfg.discriminator,
                                      "disc_input": cfg.disc_input, "dice": cfg.dice})
    snapshot.remove()
    print(timing_line("vat", t.iterations, result["seconds"]) + f" on {compute.describe()}")


if __name__ == "__main__":
    run_stage(main)
