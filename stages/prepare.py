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
    jobs = [("source", src, src.split), ("target_train", tgt, tgt.train_split), ("target_val", tgt, tgt.val_split)]
    # Every split of both datasets is listed and checked (roots, split folders, file names, lengths) before any
    # frame is decoded: a bad target root fails at once, not after the whole source has been converted.
    specs = [list_split(data, split, cfg.min_frames) for _, data, split in jobs]
    # Each split is its own DVC output, written atomically by prepare_split.
    for (name, data, split), split_specs in zip(jobs, specs):
        prepare_split(data, split, Path(args.out) / name, cfg.min_frames, cfg.classes, split_specs,
                      keep_original=name == "target_val",     # evaluate.resolution: labels scores them
                      show_progress=True)


if __name__ == "__main__":
    run_stage(main)
