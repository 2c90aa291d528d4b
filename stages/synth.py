"""Stage `synth`: generate the embedded sim-to-real driving-video benchmark in the real datasets' layouts.

- source ("simulation", VIPER layout): every frame labelled, VIPER class ids;
- target ("real", Cityscapes-VPS layout): train and val clips, labels on every `label_every`-th frame;
- the ground-truth forward flow of every target clip: ``flow_gt/<split>/<clip>.npy``, float32
  (T - 1, H, W, 2), flow[t] maps frame t to frame t + 1 in pixels (x, y).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse

from videoda.config.data import Synth
from videoda.config.fields import read_stage_config
from videoda.data.synth import write_benchmark
from videoda.errors import run_stage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="data/params/synth.json", help="the stage's resolved params")
    ap.add_argument("--out", default="data/synth")
    args = ap.parse_args()
    write_benchmark(args.out, read_stage_config(Synth, args.params), show_progress=True)


if __name__ == "__main__":
    run_stage(main)
