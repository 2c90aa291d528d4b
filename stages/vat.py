"""Stage `vat`: video adversarial training (Sec. 4.3, Eq. 9) from the source-only model.

Segmentation network: per-frame cross-entropy on source pairs (t - tau, t) + lambda_dice x the tube matching
loss (Eq. 6-7) + lambda_V x the video GAN loss (Eq. 8) on unlabelled target pairs; the sequence discriminator
D_V is updated in alternation. ``vat.discriminator``, ``vat.disc_input`` and ``vat.dice`` select the image-level
baselines (AdaptSegNet, ADVENT) and the rows of Table 3 (see the README).
"""

import argparse

import torch

from videoda.data.pairs import PairSampler, load_split
from videoda.domain_adaptation.adversarial import (DICE_MODES, DISC_INPUTS, DISCRIMINATORS, VATBatches,
                                                   vat_objective)
from videoda.domain_adaptation.train import make_optimizer, seed_everything, train, write_curve
from videoda.model import load_checkpoint, save_checkpoint
from videoda.params import Section, load_params
from videoda.utils.stage import run_stage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", default="models/source_only.pt", help="the source-only checkpoint to start from")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/vat.pt")
    ap.add_argument("--curve", default="reports/curves/vat.tsv")
    args = ap.parse_args()

    params = load_params()
    seed = Section(params).int("seed", lo=0)
    p = Section(params, "vat")
    if not p.bool("enabled"):      # a method without an adversarial phase (videoda/presets.py)
        model, _ = load_checkpoint(args.init)
        write_curve(args.curve, [])
        save_checkpoint(args.out, model, {"stage": "vat", "enabled": False, "init": str(args.init)})
        return
    iterations, power = p.int("iterations", lo=1), p.float("poly_power", lo=0.0)
    tau, batch_size, hflip = p.int("tau", lo=1), p.int("batch_size", lo=1), p.bool("hflip")
    kind = p.choice("discriminator", DISCRIMINATORS)
    disc_input = p.choice("disc_input", DISC_INPUTS)
    dice = p.choice("dice", DICE_MODES)
    lambda_v, lambda_dice = p.float("lambda_v", lo=0.0), p.float("lambda_dice", lo=0.0)
    lr, lr_d = p.float("lr", lo=0.0), p.float("lr_d", lo=0.0)
    optimizer_name, optimizer_d = p.choice("optimizer", ["sgd", "adam"]), p.choice("optimizer_d", ["sgd", "adam"])
    momentum, weight_decay = p.float("momentum", lo=0.0, hi=1.0), p.float("weight_decay", lo=0.0)
    disc_channels = p.int("disc_channels", lo=1)
    seed_everything(seed)
    torch.set_num_threads(p.int("threads", lo=1))

    model, _ = load_checkpoint(args.init)
    optimizer = make_optimizer(model.param_groups(lr), optimizer_name, lr, momentum, weight_decay)
    batches = VATBatches(
        PairSampler(load_split(args.data, "source"), tau, batch_size, seed, hflip=hflip),
        PairSampler(load_split(args.data, "target_train"), tau, batch_size, seed + 1, hflip=hflip))
    objective = vat_objective(discriminator=kind, disc_input=disc_input, dice=dice, lambda_v=lambda_v,
                              lambda_dice=lambda_dice, disc_channels=disc_channels, optimizer_d=optimizer_d,
                              lr_d=lr_d, momentum=momentum, iterations=iterations, poly_power=power)
    result = train(model, optimizer, batches.sample, objective.forward, objective.terms, iterations, args.curve,
                   power=power, extra_step=objective.extra_step, description="vat")
    save_checkpoint(args.out, model, {"stage": "vat", "seconds": result["seconds"], "init": str(args.init),
                                      "discriminator": kind, "disc_input": disc_input, "dice": dice})


if __name__ == "__main__":
    run_stage(main)
