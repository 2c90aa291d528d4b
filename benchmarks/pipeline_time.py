"""Benchmark: wall time of a full `dvc repro` on a fresh copy of the repository, then of a no-op `dvc repro`.

Usage (from the repo root, with the venv active):  python benchmarks/pipeline_time.py [--stages synth ...]
Copies the git-tracked files to a temporary folder, so the figures are those of a fresh clone.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from videoda.utils.machine import cpu_model


def timed(cmd, cwd):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--noop-runs", type=int, default=3)
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files"], cwd=repo, check=True, capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            if f == "dvc.lock":   # a fresh run: nothing is cached
                continue
            (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, Path(tmp) / f)
        subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)
        full = timed(["dvc", "repro"], tmp)
        noop = min(timed(["dvc", "repro"], tmp) for _ in range(args.noop_runs))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores")
    print(f"full dvc repro (fresh copy): {full:.1f} s")
    print(f"no-op dvc repro (best of {args.noop_runs}): {noop:.2f} s")


if __name__ == "__main__":
    main()
