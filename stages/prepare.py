"""Stage `prepare`: turn the source and target datasets into the internal clip format at training resolution.

Later stages read ``data/prepared/{source,target_train,target_val}/*.npz`` and never know which dataset they
came from (VIPER or the embedded benchmark as source, Cityscapes-VPS or the embedded benchmark as target).
"""

import argparse
from pathlib import Path

from videoda.data.prepare import prepare_split
from videoda.errors import run_stage
from videoda.params import Section, load_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args()
    p = Section(load_params(), "prepare")
    size = (p.int("height", lo=8), p.int("width", lo=8))
    min_frames = p.int("min_frames", lo=2)
    src_ds = p.choice("source.dataset", ["viper"])
    tgt_ds = p.choice("target.dataset", ["cityscapes_vps"])
    jobs = [("source", src_ds, p.str("source.root"), p.str("source.split")),
            ("target_train", tgt_ds, p.str("target.root"), p.str("target.train_split")),
            ("target_val", tgt_ds, p.str("target.root"), p.str("target.val_split"))]
    ego = p.bool("source.ignore_ego_vehicle")
    # Each split is its own DVC output, written atomically by prepare_split.
    for name, dataset, root, split in jobs:
        prepare_split(dataset, root, split, Path(args.out) / name, size, min_frames=min_frames,
                      ignore_ego_vehicle=ego)


if __name__ == "__main__":
    run_stage(main)
