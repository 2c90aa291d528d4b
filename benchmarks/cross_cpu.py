"""Benchmark: are the results byte-identical on a second CPU model? A small pipeline, natively and emulated.

Usage (from the repo root, with the venv active):  python benchmarks/cross_cpu.py [--iterations 10] [--no-qemu]

Runs resolve_params -> synth -> prepare -> flow (OpenCV DIS) -> train_source -> evaluate with the stage scripts
on a small embedded benchmark (params.yaml with fewer, shorter clips and a few training iterations), in a
temporary folder, four times: on this CPU and under ``qemu-x86_64 -cpu <model>`` (default Haswell: AVX2 and FMA,
no AVX-512, an Intel vendor string: a second CPU model), each with the pins of ``videoda/numerics.py``
(``VIDEODA_NUMERICS=pinned``, the default) and without them (``native``). It prints, per run, the wall time and
the SHA-256 of reports/metrics.json, reports/flow.json, the prepared clips and the trained weights, and whether
each matches this CPU's run in the same mode. The pinned runs must match; the native ones differ where this CPU
has AVX-512. Needs ``qemu-user`` (Debian: ``apt-get install qemu-user``); emulation takes a few minutes.
"""
import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from videoda.config.fields import read_params
from videoda.numerics import FORCED, MODE_VARIABLE, PINS
from videoda.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]

SMALL = {      # a small run: about 25 s natively, a few minutes emulated
    "synth": {"frames_per_clip": 10, "source_sequences": 3, "target_train_clips": 2, "target_val_clips": 2},
    "train_source": {"batch_size": 4},
    "flow": {"method": "dis"},
}


def stage_commands(iterations):
    return [
        ["stages/resolve_params.py", "--out", "data/params"],
        ["stages/synth.py", "--params", "data/params/synth.json", "--out", "data/synth"],
        ["stages/prepare.py", "--params", "data/params/prepare.json", "--out", "data/prepared"],
        ["stages/flow.py", "--params", "data/params/flow.json", "--data", "data/prepared",
         "--out", "data/flow/target_train.h5", "--report", "reports/flow.json"],
        ["stages/train_supervised.py", "--stage", "train_source", "--params", "data/params/train_source.json",
         "--split", "source", "--out", "models/source_only.pt", "--curve", "reports/curves/source_only.tsv"],
        ["stages/evaluate.py", "--params", "data/params/evaluate.json", "--model", "source_only=models/source_only.pt",
         "--metrics", "reports/metrics.json"],
    ]


def write_params(folder, iterations):
    """The repository's params.yaml (composed from conf/: the embedded profile, our method) made small."""
    params = read_params(REPO / "params.yaml")
    for section, values in SMALL.items():
        params.get(section).update(values)
    params.get("train_source").update(iterations=iterations)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def clean_env(mode):
    """This environment without any pin variable, so that only videoda's own pins (or none) are in effect."""
    env = {k: v for k, v in os.environ.items() if k not in PINS and k not in FORCED}
    env["PYTHONPATH"] = str(REPO)
    env[MODE_VARIABLE] = mode
    return env


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def tree_digest(folder):
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def weights_digest(path):
    """The trained tensors' bytes (a checkpoint file's zip also records its temporary file name)."""
    import torch
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode() + tensor.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_pipeline(folder, mode, prefix, iterations):
    folder.mkdir(parents=True)
    write_params(folder, iterations)
    env = clean_env(mode)
    start = time.perf_counter()
    for cmd in stage_commands(iterations):
        done = subprocess.run(prefix + [sys.executable, str(REPO / cmd[0])] + cmd[1:], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(prefix)} {cmd[0]} failed ({mode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    return wall, {
        "metrics.json": digest(folder / "reports/metrics.json"),
        "flow.json": digest(folder / "reports/flow.json"),
        "prepared": tree_digest(folder / "data/prepared"),
        "weights": weights_digest(folder / "models/source_only.pt"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10, help="train_source iterations (batch 4)")
    ap.add_argument("--cpu", default="Haswell", help="the CPU model qemu emulates (qemu-x86_64 -cpu help)")
    ap.add_argument("--no-qemu", action="store_true", help="only the native runs (pinned vs native)")
    ap.add_argument("--keep", help="keep the runs in this folder")
    args = ap.parse_args()
    qemu = shutil.which("qemu-x86_64")
    if not qemu and not args.no_qemu:
        sys.exit("error: qemu-x86_64 not found (apt-get install qemu-user), or run with --no-qemu")
    runners = [("this CPU", [])] + ([] if args.no_qemu else [(f"qemu {args.cpu}", [qemu, "-cpu", args.cpu])])
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cross_cpu_"))
    results = {}
    try:
        for runner, prefix in runners:
            for mode in ("pinned", "native"):
                name = f"{runner} / {mode}"
                wall, digests = run_pipeline(root / f"{len(results)}", mode, prefix, args.iterations)
                results[name] = (runner, mode, wall, digests)
                print(f"{name:24s} {wall:7.1f} s  " + "  ".join(f"{k} {v}" for k, v in digests.items()), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    cpu = cpu_model()
    print(f"\nthis CPU: {cpu}, {os.cpu_count()} cores; {args.iterations} train_source iterations")
    same_everywhere = True
    for mode in ("pinned", "native"):
        ref = results[f"this CPU / {mode}"][3]
        for name, (runner, m, _, digests) in results.items():
            if m != mode or runner == "this CPU":
                continue
            same = {k: digests[k] == ref[k] for k in ref}
            print(f"{name} vs this CPU: " + ", ".join(f"{k} {'identical' if s else 'DIFFERS'}" for k, s in same.items()))
            same_everywhere &= mode != "pinned" or all(same.values())
    if not args.no_qemu:
        print("pinned: byte-identical across the two CPU models" if same_everywhere else
              "pinned: NOT identical across the two CPU models")
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
