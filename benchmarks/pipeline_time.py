"""Benchmark: wall time of a full `dvc repro`, stage by stage, then of a no-op `dvc repro`.

Usage (from the repo root, with the venv active):
    python benchmarks/pipeline_time.py [--noop-runs 3] [--in-place | --compare REV]

Copies the git-tracked files to a temporary folder (the figures of a fresh clone: nothing cached), or with
``--in-place`` works in this repository (its dvc.lock then comes from the run: a real `dvc repro`, one stage at a
time), and runs ``dvc repro --single-item <stage>`` for every stage of dvc.yaml in its order (a topological order),
timing each (``--in-place``: forced, ``--force``), then the no-op runs. Prints the seconds per stage, the total and the no-op time.

``--compare REV`` (a git revision, e.g. ``HEAD``): a before/after measurement in one run. Two fresh copies, REV's
committed files and this working tree's files (untracked ones too), run stage by stage interleaved (REV's stage,
then this tree's), so that the machine's load falls on both alike; prints both times per stage and their ratio,
then compares every stage's outputs (the md5s in each copy's ``dvc.lock``) and names those that differ.
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


def fresh_copy(tmp, rev=None):
    """The tracked files (and the untracked ones git does not ignore) of this working tree, or ``rev``'s committed
    files, in ``tmp``, without dvc.lock (a fresh run: nothing is cached), as a new git repository."""
    Path(tmp).mkdir(parents=True, exist_ok=True)
    if rev is not None:
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        (Path(tmp) / "dvc.lock").unlink(missing_ok=True)
    else:
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               check=True, capture_output=True, text=True).stdout.split()
        for f in files:
            if f == "dvc.lock" or not (REPO / f).is_file():     # a file deleted but not yet committed
                continue
            (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, Path(tmp) / f)
    subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)


def run(cwd, noop_runs, force=False):
    stages = list(yaml.safe_load((Path(cwd) / "dvc.yaml").read_text())["stages"])
    times = {stage: timed(["dvc", "repro", "--single-item", *["--force"] * force, stage], cwd) for stage in stages}
    noop = min(timed(["dvc", "repro"], cwd) for _ in range(noop_runs))
    return times, noop


def stage_outputs(cwd):
    """{(stage, output path): md5} from ``cwd``'s dvc.lock."""
    lock = yaml.safe_load((Path(cwd) / "dvc.lock").read_text())["stages"]
    return {(stage, out["path"]): out.get("md5") for stage, entry in lock.items() for out in entry.get("outs", [])}


def compare(rev):
    """REV's pipeline and this tree's, stage by stage interleaved: their seconds, and the outputs that differ."""
    with tempfile.TemporaryDirectory() as tmp:
        before, after = Path(tmp, "rev"), Path(tmp, "tree")
        fresh_copy(before, rev)
        fresh_copy(after)
        stages = list(yaml.safe_load((after / "dvc.yaml").read_text())["stages"])
        times = {}
        for stage in stages:
            times[stage] = [timed(["dvc", "repro", "--single-item", stage], cwd) for cwd in (before, after)]
        old, new = stage_outputs(before), stage_outputs(after)
    differ = sorted(f"{stage}: {path}" for stage, path in old.keys() | new.keys()      # one copy's only: differs too
                    if old.get((stage, path)) != new.get((stage, path)))
    return times, differ


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--noop-runs", type=int, default=3)
    ap.add_argument("--in-place", action="store_true", help="run in this repository (its dvc.lock comes from it), "
                    "every stage forced")
    ap.add_argument("--compare", metavar="REV", help="also run REV's committed files, stage by stage interleaved "
                    "with this tree's; print both times and the outputs that differ")
    args = ap.parse_args()
    if args.compare:
        times, differ = compare(args.compare)
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores; seconds per stage, {args.compare} then this tree")
        for stage, (old, new) in times.items():
            print(f"  {stage:<16} {old:7.1f} s {new:7.1f} s  x{new / old:.2f}")
        old, new = (sum(t[i] for t in times.values()) for i in (0, 1))
        print(f"full dvc repro, stage by stage: {old:.1f} s -> {new:.1f} s (x{new / old:.2f})")
        print("outputs that differ: " + ("; ".join(differ) if differ else "none (every dvc.lock md5 is the same)"))
        return
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
