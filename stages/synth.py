"""Stage `synth`: generate the embedded sim-to-real driving-video benchmark in the real datasets' layouts.

- source ("simulation", VIPER layout): every frame labelled, VIPER class ids;
- target ("real", Cityscapes-VPS layout): train and val clips, labels on every `label_every`-th frame;
- the ground-truth forward flow of every target clip: ``flow_gt/<split>/<clip>.npy``, float32
  (T - 1, H, W, 2), flow[t] maps frame t to frame t + 1 in pixels (x, y).
"""

import argparse
from pathlib import Path

import numpy as np
from rich.progress import track

from videoda.data import cityscapes_vps, viper
from videoda.data.classes import CITYSCAPES_TO_TRAIN, NUM_CLASSES, VIPER_TO_TRAIN
from videoda.data.synth import make_styles, render_sequence
from videoda.errors import run_stage
from videoda.params import Section, load_params
from videoda.utils.io import atomic_path


def inverse_map(table):
    """train id -> the first dataset id that maps to it (the generator labels in train ids)."""
    inv = np.full(256, 255, np.uint8)
    for ds_id, train_id in sorted(table.items(), reverse=True):
        if train_id < NUM_CLASSES:
            inv[train_id] = ds_id
    missing = [c for c in range(NUM_CLASSES) if inv[c] == 255]
    if missing:
        raise RuntimeError(f"no dataset id maps to train ids {missing}")
    return inv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/synth")
    args = ap.parse_args()
    params = load_params()
    seed = Section(params).int("seed", lo=0)
    p = Section(params, "synth")
    shift = p.float("shift", lo=0.0, hi=1.0)
    h, w = p.int("height", lo=16), p.int("width", lo=16)
    frames = p.int("frames_per_clip", lo=2)
    label_every = p.int("label_every", lo=1, hi=frames)
    counts = {"source": p.int("source_sequences", lo=1), "train": p.int("target_train_clips", lo=1),
              "val": p.int("target_val_clips", lo=1)}
    source_style, target_style = make_styles(shift, seed)
    to_viper, to_cityscapes = inverse_map(VIPER_TO_TRAIN), inverse_map(CITYSCAPES_TO_TRAIN)

    out = Path(args.out)
    # Three outputs (one per dataset layout), each renamed into place only when everything succeeded.
    with atomic_path(out / "viper") as viper_root, atomic_path(out / "cityscapes_vps") as vps_root, \
            atomic_path(out / "flow_gt") as flow_root:
        jobs = [("source", "train", i) for i in range(counts["source"])]
        jobs += [("target", split, i) for split in ("train", "val") for i in range(counts[split])]
        for k, (domain, split, i) in enumerate(track(jobs, description="synth")):
            # Distinct seeds per domain and split: the target never shows a source scene.
            seq_seed = seed * 100003 + k
            style = source_style if domain == "source" else target_style
            images, labels, flows = render_sequence(seq_seed, h, w, frames, style)
            if domain == "source":
                for t in range(frames):
                    viper.write_frame(viper_root, split, i + 1, t, images[t], to_viper[labels[t]])
            else:
                clip_id = i + 1
                for t in range(frames):
                    annotated = (t + 1) % label_every == 0
                    lab = to_cityscapes[labels[t]] if annotated else None
                    cityscapes_vps.write_frame(vps_root, split, clip_id, t, images[t], lab)
                flow_dir = flow_root / split
                flow_dir.mkdir(parents=True, exist_ok=True)
                np.save(flow_dir / f"{clip_id:04d}.npy", flows)


if __name__ == "__main__":
    run_stage(main)
