"""Stages `train_source` and `train_oracle`: supervised training on frame pairs (t - tau, t), Eq. 9's L_seg.

`train_source` trains on the labelled source clips (the source-only baseline and the start of VAT);
`train_oracle` trains the same way on the labelled target-train frames (the paper's upper bound).
"""

import argparse

import torch

from videoda.data.pairs import PairSampler, load_split
from videoda.domain_adaptation.train import (make_optimizer, segmentation_loss, seed_everything,
                                             supervised_forward, train)
from videoda.errors import run_stage
from videoda.model import save_checkpoint
from videoda.model.build import build_model
from videoda.params import Section, load_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", required=True, help="params.yaml section, e.g. train_source")
    ap.add_argument("--split", required=True, choices=["source", "target_train"])
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", required=True)
    ap.add_argument("--curve", required=True)
    args = ap.parse_args()

    params = load_params()
    seed = Section(params).int("seed", lo=0)
    p = Section(params, args.section)
    seed_everything(seed)
    torch.set_num_threads(p.int("threads", lo=1))
    model = build_model(params)
    lr = p.float("lr", lo=0.0)
    optimizer = make_optimizer(model.param_groups(lr), p.choice("optimizer", ["sgd", "adam"]), lr,
                               p.float("momentum", lo=0.0, hi=1.0), p.float("weight_decay", lo=0.0))
    sampler = PairSampler(load_split(args.data, args.split), p.int("tau", lo=1), p.int("batch_size", lo=1),
                          seed, require_label=args.split != "source", hflip=p.bool("hflip"))
    result = train(model, optimizer, sampler.sample, supervised_forward, [segmentation_loss],
                   p.int("iterations", lo=1), args.curve, power=p.float("poly_power", lo=0.0),
                   description=args.section)
    save_checkpoint(args.out, model, {"stage": args.section, "seconds": result["seconds"]})


if __name__ == "__main__":
    run_stage(main)
