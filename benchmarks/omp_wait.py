"""Benchmark: GNU OpenMP's wait policy (torch's threads) for a training stage alone and for two side by side.

Usage (from the repo root, with the venv active, after `dvc repro`):
    python benchmarks/omp_wait.py [--rounds 3] [--iterations 80] [--spin 3000,30000]

Runs stage ``train_source`` (``--iterations`` steps, no snapshots; the committed run's params and prepared data, in
a temporary folder) under each wait policy, interleaved round by round so that the machine's load falls on all
alike: ``default`` (GNU OpenMP's own: an idle thread spins a while, then sleeps; what a stage runs with) and
``PASSIVE`` (it sleeps at once: ``videoda.numerics.share_cores``), each ``alone`` (one process) and ``two at once``
(two copies started together on the same cores, as the test suite's workers or ``dvc exp run -j 2`` run them).
``--spin N,...``: also the default policy with a bounded spin of N iterations (``GOMP_SPINCOUNT``).
Prints the median seconds: ``alone``, the training loop's own (the stage's timing line, without its start-up);
``two at once``, the wall time until both finished. Results are the same bytes under every policy.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from videoda.numerics import SHARED_CORES, share_cores
from videoda.utils.machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pins import REPO, commands  # noqa: E402  (the same stage commands as the pins benchmark)


def policies(spins=()):
    base = {k: v for k, v in os.environ.items() if k not in SHARED_CORES and k != "GOMP_SPINCOUNT"}
    return {"default": base, "PASSIVE": share_cores(dict(base)),
            **{f"spin {n}": {**base, "GOMP_SPINCOUNT": str(n)} for n in spins}}


def run_alone(cmd, env):
    out = subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return float(re.search(r"steps in ([0-9.]+) s", out.stdout).group(1))


def run_two(cmds, env):
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for cmd in cmds]
    if any(p.wait() for p in procs):
        raise SystemExit("a train_source run failed")
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--spin", default="", help="bounded spins to measure too, e.g. 3000,30000 (GOMP_SPINCOUNT)")
    args = ap.parse_args()
    modes = policies([int(n) for n in args.spin.split(",") if n])
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp, str(k)) for k in (0, 1)]      # each copy writes its own outputs
        for folder in folders:
            folder.mkdir()
        cmds = [commands(str(folder), args.iterations)["train_source"] for folder in folders]
        for _ in range(args.rounds):
            for name, env in modes.items():
                times.setdefault(("alone", name), []).append(run_alone(cmds[0], env))
            for name, env in modes.items():
                times.setdefault(("two at once", name), []).append(run_two(cmds, env))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; train_source, {args.iterations} steps; median of "
          f"{args.rounds} rounds (alone: the training loop; two at once: wall time until both finished)")
    for how in ("alone", "two at once"):
        medians = {name: statistics.median(times[(how, name)]) for name in modes}
        print(f"{how:<12}" + "".join(f"  {name} {t:.1f} s (x{t / medians['default']:.2f})" for name, t in medians.items()))


if __name__ == "__main__":
    main()
