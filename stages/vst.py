"""Stage `vst`: video self-training from the VAT model on target pairs with online-refined pseudo labels
(Sec. 4.4.2, Eq. 12-14). Round 1 reads the pseudo labels of stage `pseudo_labels`; each further round
regenerates them with the current model (the same generator), then trains again.
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from videoda.data.clips import DataError
from videoda.data.classes import IGNORE_ID
from videoda.data.pairs import PairSampler, load_split
from videoda.data.prepare import read_label_png
from videoda.domain_adaptation.pseudo_labels import generate_pseudo_labels, pseudo_label_config
from videoda.domain_adaptation.self_training import (REFINEMENTS, REGULARISERS, refined_pair_labels, vst_forward,
                                                     vst_losses)
from videoda.domain_adaptation.train import make_optimizer, seed_everything, train, write_curve
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint, save_checkpoint
from videoda.params import Section, load_params
from videoda.utils.stage import run_stage


def read_pseudo_labels(root, clips):
    """{clip: (T, H, W) uint8} from the pseudo_labels stage's PNGs; each must match its frame's size."""
    out = {}
    for clip in clips:
        frames = []
        for name in clip.frame_names:
            path = root / clip.name / f"{name}.png"
            labels = read_label_png(path)
            if labels.shape != clip.labels.shape[1:]:
                raise DataError(f"{path}: pseudo label of size {labels.shape}, the frame is "
                                f"{clip.labels.shape[1:]} (rerun the pseudo_labels stage)")
            frames.append(labels)
        out[clip.name] = np.stack(frames)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True, help="checkpoint to start from (models/vat.pt)")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--pseudo", default="data/pseudo_labels")
    ap.add_argument("--flow", default="data/flow/target_train.h5")
    ap.add_argument("--out", required=True)
    ap.add_argument("--curve", required=True)
    args = ap.parse_args()
    params = load_params()
    seed = Section(params).int("seed", lo=0)
    p, f = Section(params, "vst"), Section(params, "flow")
    seed_everything(seed)
    torch.set_num_threads(p.int("threads", lo=1))
    tau = f.int("tau", lo=1)
    refine, regulariser = p.choice("refine", REFINEMENTS), p.choice("regulariser", REGULARISERS)
    lambda_source, rounds = p.float("lambda_source", lo=0.0), p.int("rounds", lo=1)
    iterations, batch_size, lr = p.int("iterations", lo=1), p.int("batch_size", lo=1), p.float("lr", lo=0.0)
    cfg = pseudo_label_config(params)

    model, _ = load_checkpoint(args.init)
    # Unsupervised: the target clips' ground truth is dropped before anything can train on it.
    clips = [dataclasses.replace(c, labels=np.full_like(c.labels, IGNORE_ID), labeled=np.zeros_like(c.labeled))
             for c in load_split(args.data, "target_train")]
    pseudo = read_pseudo_labels(Path(args.pseudo), clips)
    source = PairSampler(load_split(args.data, "source"), tau, batch_size, seed + 1) if lambda_source > 0 else None
    rows = []
    with FlowStore(args.flow) as store:
        for c in clips:
            store.check_clip(c.name, len(c), *c.images.shape[1:3])
        for r in range(rounds):
            if r > 0:
                pseudo, _ = generate_pseudo_labels(model, clips, store, cfg, progress=track)
            target = PairSampler(clips, tau, batch_size, seed + 100 * r, hflip=p.bool("hflip"),
                                 pair_labels=refined_pair_labels(pseudo, store, refine, cfg.occ_alpha,
                                                                 cfg.occ_threshold))

            def sample_batch():
                batch = target.sample()
                if source is not None:
                    s = source.sample()
                    batch.update(source_images=s["images"], source_labels=s["labels"])
                return batch

            optimizer = make_optimizer(model.param_groups(lr), p.choice("optimizer", ["sgd", "adam"]), lr,
                                       p.float("momentum", lo=0.0, hi=1.0), p.float("weight_decay", lo=0.0))
            result = train(model, optimizer, sample_batch, vst_forward,
                           vst_losses(regulariser, p.float("lambda_reg", lo=0.0), lambda_source), iterations,
                           None, power=p.float("poly_power", lo=0.0), description=f"vst round {r + 1}")
            rows += [{**row, "step": row["step"] + r * iterations, "round": r + 1} for row in result["rows"]]
    write_curve(args.curve, rows)
    save_checkpoint(args.out, model, {"stage": "vst", "rounds": rounds})


if __name__ == "__main__":
    run_stage(main)
