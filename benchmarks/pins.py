"""Benchmark: what the CPU pins (videoda/numerics.py) cost, library by library, on the embedded default's stages.

Usage (from the repo root, with the venv active, after `dvc repro`):
    python benchmarks/pins.py [--rounds 3] [--iterations 100]

Runs the training stages train_source and vat (``--iterations`` steps each, no snapshots) and the data stages
prepare and flow on the committed run's params and prepared data (``data/``, ``models/source_only.pt``), in a
temporary folder, under four settings, interleaved round by round so that the machine's load falls on all alike:
``torch pinned`` (numpy's and OpenCV's pins, and the torch pins this project had until issue 32: ATen's capability
AVX2, oneDNN's ISA AVX2, MKL's COMPATIBLE branch), ``pinned`` (the default now: numpy's and OpenCV's pins),
``native`` (``VIDEODA_NUMERICS=native``: every pin off) and ``torch only pinned`` (native, plus the torch pins).
OpenMP's wait policy as in the caller's environment (a stage's default: ``benchmarks/omp_wait.py``). Prints the
median seconds per stage and setting, and each setting's ratio to ``torch pinned``.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from videoda.numerics import MODE_VARIABLE, PINS
from videoda.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
# the torch pins of videoda/numerics.py until issue 32 (AVX2 kernels; MKL's vendor-independent branch)
TORCH_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}


def settings():
    base = {k: v for k, v in os.environ.items()
            if k not in PINS and k not in TORCH_PINS and k != "OPENBLAS_CORETYPE" and k != MODE_VARIABLE}
    return {
        "torch pinned": {**base, MODE_VARIABLE: "pinned", **TORCH_PINS},
        "pinned": {**base, MODE_VARIABLE: "pinned"},
        "native": {**base, MODE_VARIABLE: "native"},
        "torch only pinned": {**base, MODE_VARIABLE: "native", **TORCH_PINS},
    }


def params_file(tmp, stage, iterations):
    params = json.loads((REPO / "data/params" / f"{stage}.json").read_text())
    if iterations:
        params[stage].update(iterations=iterations, snapshot_every=0)
    path = Path(tmp) / f"{stage}.params.json"
    path.write_text(json.dumps(params))
    return str(path)


def commands(tmp, iterations):
    data = str(REPO / "data/prepared")
    return {
        "prepare": ["stages/prepare.py", "--params", params_file(tmp, "prepare", 0), "--out", f"{tmp}/prepared"],
        "flow": ["stages/flow.py", "--params", params_file(tmp, "flow", 0), "--data", data,
                 "--out", f"{tmp}/flow.h5", "--report", f"{tmp}/flow.json"],
        "train_source": ["stages/train_supervised.py", "--stage", "train_source", "--split", "source",
                         "--params", params_file(tmp, "train_source", iterations), "--data", data,
                         "--out", f"{tmp}/so.pt", "--curve", f"{tmp}/so.tsv"],
        "vat": ["stages/vat.py", "--params", params_file(tmp, "vat", iterations), "--data", data,
                "--init", str(REPO / "models/source_only.pt"), "--out", f"{tmp}/vat.pt", "--curve", f"{tmp}/vat.tsv"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=100, help="training steps per training stage")
    args = ap.parse_args()
    modes = settings()
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for stage, cmd in commands(tmp, args.iterations).items():
                for mode, env in modes.items():
                    start = time.perf_counter()
                    subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    times.setdefault(stage, {}).setdefault(mode, []).append(time.perf_counter() - start)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; median of {args.rounds} rounds, seconds per stage "
          f"(training: {args.iterations} steps), ratio to torch pinned")
    print(f"{'stage':<14}" + "".join(f"{mode:>22}" for mode in modes))
    for stage, by_mode in times.items():
        pinned = statistics.median(by_mode["torch pinned"])
        print(f"{stage:<14}" + "".join(f"{statistics.median(t):>14.1f} x{statistics.median(t) / pinned:.2f}  "
                                        for t in by_mode.values()))


if __name__ == "__main__":
    main()
