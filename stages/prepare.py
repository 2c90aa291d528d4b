"""Stage `prepare`: turn the source and target datasets into the internal clip format, each at its own training
resolution (``prepare.source.height``/``width``, ``prepare.target.height``/``width``).

Later stages read the clip folders ``data/prepared/{source,target_train,target_val}/<clip>/`` and never know
which dataset they came from (VIPER, SYNTHIA-Seq or the embedded benchmark as source, Cityscapes-VPS,
Cityscapes-Seq or the embedded benchmark as target); labels are train ids of the class set (``classes``).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
from pathlib import Path

from videoda.config.data import Prepare
from videoda.config.fields import read_stage_config
from videoda.data.prepare import list_split, prepare_split
from videoda.errors import run_stage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/prepare.json", help="the stage's resolved params")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args()
    cfg = read_stage_config(Prepare, args.params)
    src, tgt = cfg.source, cfg.target
    selection = {"conditions": src.conditions, "sequences": src.sequences, "layout": src.layout}
    jobs = [("source", src.dataset, src.root, src.split, (src.height, src.width), selection),
            ("target_train", tgt.dataset, tgt.root, tgt.train_split, (tgt.height, tgt.width), {}),
            ("target_val", tgt.dataset, tgt.root, tgt.val_split, (tgt.height, tgt.width), {})]
    # Every split of both datasets is listed and checked (roots, split folders, file names, lengths) before any
    # frame is decoded: a bad target root fails at once, not after the whole source has been converted.
    specs = [list_split(dataset, root, split, cfg.min_frames, **options)
             for _, dataset, root, split, _, options in jobs]
    # Each split is its own DVC output, written atomically by prepare_split.
    for (name, dataset, root, split, size, _), split_specs in zip(jobs, specs):
        prepare_split(dataset, root, split, Path(args.out) / name, size,
                      min_frames=cfg.min_frames, ignore_ego_vehicle=src.ignore_ego_vehicle, specs=split_specs,
                      classes=cfg.classes, crop_bottom=src.crop_bottom if name == "source" else 0)


if __name__ == "__main__":
    run_stage(main)
