"""Stage `vst`: video self-training from the VAT model on target pairs with online-refined pseudo labels
(Sec. 4.4.2, Eq. 12-14). Round 1 reads the pseudo labels of stage `pseudo_labels`; each further round
regenerates them with the current model (the same generator), then trains again.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import time

import torch
from rich.progress import track

from videoda.config.compute import run_params
from videoda.config.fields import read_stage_config
from videoda.config.self_training import VST
from videoda.data.pairs import load_split
from videoda.domain_adaptation.self_training import PseudoLabelFiles, self_train, unlabelled_clips
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import seed_everything, timing_line, write_curve
from videoda.errors import run_stage
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint, save_checkpoint
from videoda.utils.distributed import main_only


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
    seed_everything(cfg.seed, compute.device)
    torch.set_num_threads(cfg.train.threads)
    model = compute.module(load_checkpoint(args.init, map_location=compute.device)[0])
    if not cfg.enabled:              # a method without self-training (conf/method/)
        write_curve(args.curve, [])
        save_checkpoint(args.out, model, {"stage": "vst", "enabled": False, "init": str(args.init)})
        return
    clips = unlabelled_clips(load_split(args.data, "target_train"))
    pseudo = PseudoLabelFiles(args.pseudo, clips)       # read a pair at a time
    source = load_split(args.data, "source") if cfg.lambda_source > 0 else None
    with FlowStore(args.flow) as store:
        for c in clips:
            store.check_clip(c.name, len(c), *c.images.shape[1:3])
        data = [f"{args.data}/target_train", args.pseudo, args.flow]
        data += [f"{args.data}/source"] if cfg.lambda_source > 0 else []
        snapshot = Snapshot.for_stage("vst", args.out, cfg.train.snapshot_every, run_params(args.params), __file__,
                                      init=args.init, data=data, world=compute.world)
        start = time.perf_counter()
        rows = self_train(model, clips, pseudo, store, cfg, source, progress=main_only(track, compute.world),
                          workers=compute.workers, snapshot=snapshot, compute=compute, scratch=args.out)
        seconds = time.perf_counter() - start      # all rounds, with the pseudo labels regenerated between them
    if not compute.world.is_main:            # every rank holds the same weights; rank 0 writes
        return
    write_curve(args.curve, rows)
    save_checkpoint(args.out, model, {"stage": "vst", "rounds": cfg.rounds})
    snapshot.remove()
    print(timing_line("vst", cfg.rounds * cfg.train.iterations, seconds) + f" on {compute.describe()}")


if __name__ == "__main__":
    run_stage(main)
