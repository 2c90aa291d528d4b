"""Benchmark: wall time of a full `dvc repro`, stage by stage, then of a no-op `dvc repro`.

Usage (from the repo root, with the venv active):
    python benchmarks/pipeline_time.py [--noop-runs 3] [--in-place]

Copies the git-tracked files to a temporary folder (the figures of a fresh clone: nothing cached), or with
``--in-place`` works in this repository (its dvc.lock then comes from the run: a real `dvc repro`, one stage at a
time), and runs ``dvc repro --single-item <stage>`` for every stage of dvc.yaml in its order (a topological order),
timing each (``--in-place``: forced, ``--force``), then the no-op runs. Prints the seconds per stage, the total and the no-op time.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from videoda.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]


def timed(cmd, cwd):
    # the copy's own videoda, not the one an editable install points to
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def fresh_copy(tmp):
    files = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    for f in files:
        if f == "dvc.lock":   # a fresh run: nothing is cached
            continue
        (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, Path(tmp) / f)
    subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)


def run(cwd, noop_runs, force=False):
    stages = list(yaml.safe_load((Path(cwd) / "dvc.yaml").read_text())["stages"])
    times = {stage: timed(["dvc", "repro", "--single-item", *["--force"] * force, stage], cwd) for stage in stages}
    noop = min(timed(["dvc", "repro"], cwd) for _ in range(noop_runs))
    return times, noop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--noop-runs", type=int, default=3)
    ap.add_argument("--in-place", action="store_true", help="run in this repository (its dvc.lock comes from it), "
                    "every stage forced")
    args = ap.parse_args()
    if args.in_place:
        times, noop = run(REPO, args.noop_runs, force=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            fresh_copy(tmp)
            times, noop = run(tmp, args.noop_runs)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores")
    for stage, seconds in times.items():
        print(f"  {stage:<16} {seconds:7.1f} s")
    print(f"full dvc repro, stage by stage: {sum(times.values()):.1f} s")
    print(f"no-op dvc repro (best of {args.noop_runs}): {noop:.2f} s")


if __name__ == "__main__":
    main()
