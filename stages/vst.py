"""Stage `vst`: video self-training (Sec. 4.4.2, Eq. 12-14) from the VAT model on target pairs with online-refined
pseudo labels: round 1 reads stage `pseudo_labels`' labels, each further round makes them again with its model."""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import time

import torch

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.self_training import VST
from videoda.domain_adaptation.self_training import VSTData, self_train
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import seed_everything, skip_phase, timing_line, write_curve
from videoda.domain_adaptation.validation import Validator
from videoda.errors import run_stage
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint, save_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/vst.json", help="the stage's resolved params")
    ap.add_argument("--init", required=True, help="checkpoint to start from (models/vat.pt)")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--pseudo", default="data/pseudo_labels")
    ap.add_argument("--flow", default="data/flow/target_train.h5")
    ap.add_argument("--out", required=True)
    ap.add_argument("--curve", required=True)
    args = ap.parse_args()
    cfg = read_stage_config(VST, args.params)
    if cfg.enabled and cfg.compute.launch("vst"):    # several processes: this one ran them as ranks, now done
        return
    compute = cfg.compute.runtime()          # a missing device: an error before anything is written
    if not cfg.enabled:              # a method without self-training (conf/method/)
        return skip_phase("vst", args.init, args.out, args.curve)
    seed_everything(cfg.seed, compute)
    torch.set_num_threads(cfg.train.threads)
    model = compute.module(load_checkpoint(args.init, map_location=compute.device)[0])
    with FlowStore(args.flow) as store:
        data = VSTData.from_prepared(args.data, args.pseudo, store, cfg)
        validation = Validator.for_stage(cfg.train.validation, args.data, args.curve)     # + validation curve
        inputs = [f"{args.data}/target_train", *validation.inputs, args.pseudo, args.flow]
        snapshot = Snapshot.for_stage("vst", args.out, cfg.train.snapshot_every, run_params(args.params), __file__,
                                      args.init, inputs + [f"{args.data}/source"] * (data.source is not None), compute)
        start = time.perf_counter()
        rows = self_train(model, data, cfg, compute, snapshot, scratch=args.out, validation=validation)
        seconds = time.perf_counter() - start      # all rounds, with the pseudo labels regenerated between them
    if not compute.world.is_main:            # every rank holds the same weights; rank 0 writes
        return
    write_curve(args.curve, rows)
    save_checkpoint(args.out, model, {"stage": "vst", "rounds": cfg.rounds})
    snapshot.remove()
    print(timing_line("vst", cfg.rounds * cfg.train.iterations, seconds) + f" on {compute.describe()}")


if __name__ == "__main__":
    run_stage(main)
