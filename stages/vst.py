"""Stage `vst`: video self-training from the VAT model on target pairs with online-refined pseudo labels
(Sec. 4.4.2, Eq. 12-14). Round 1 reads the pseudo labels of stage `pseudo_labels`; each further round
regenerates them with the current model (the same generator), then trains again.
"""

import argparse
from pathlib import Path

import torch
from rich.progress import track

from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_labels import pseudo_label_config, read_pseudo_labels
from videoda.domain_adaptation.self_training import self_train, unlabelled_clips, vst_config
from videoda.domain_adaptation.train import seed_everything, write_curve
from videoda.errors import run_stage
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint, save_checkpoint
from videoda.params import Section, load_params


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
    cfg, label_cfg = vst_config(params), pseudo_label_config(params)
    seed_everything(seed)
    torch.set_num_threads(Section(params, "vst").int("threads", lo=1))

    model, _ = load_checkpoint(args.init)
    if not Section(params, "vst").bool("enabled"):    # a method without self-training (videoda/presets.py)
        write_curve(args.curve, [])
        save_checkpoint(args.out, model, {"stage": "vst", "enabled": False, "init": str(args.init)})
        return
    clips = unlabelled_clips(load_split(args.data, "target_train"))
    pseudo = read_pseudo_labels(Path(args.pseudo), clips)
    source = load_split(args.data, "source") if cfg.lambda_source > 0 else None
    with FlowStore(args.flow) as store:
        for c in clips:
            store.check_clip(c.name, len(c), *c.images.shape[1:3])
        rows = self_train(model, clips, pseudo, store, cfg, label_cfg, seed, source, progress=track)
    write_curve(args.curve, rows)
    save_checkpoint(args.out, model, {"stage": "vst", "rounds": cfg.rounds})


if __name__ == "__main__":
    run_stage(main)
