"""Benchmark: peak memory and speed of every stage as the dataset grows (issue 13, "measured at scale").

Usage (from the repo root, with the venv active):
  python benchmarks/scale.py [--sizes 4,16,64] [--height 128 --width 256] [--frames 30] [--iterations 3]
                             [--batch-size 1] [--paper-model] [--work DIR] [--json FILE] [--stages a,b] [--keep]

For each size N, in a fresh folder ``<work>/clips_<N>`` (never the repository's own data/): the embedded benchmark
with N source sequences, N target-train clips and max(1, N // 8) target-val clips (Cityscapes-VPS: 400 and 50) of
``--frames`` frames at ``--height`` x ``--width`` (stage ``synth``); params.yaml is the repository's with these
sizes, the resolution, ``--iterations`` steps of ``--batch-size`` pairs for every trainer, DIS flow without EPE, and
the tiny model (resnet18, 2 stages; ``--paper-model``: the paper's ResNet-50 DeepLabv2, random weights). Then
stage ``resolve_params`` and every stage of dvc.yaml in its order (default all but ``report``), each by its own
command in dvc.yaml, as its own process: the benchmark knows the stages only by their commands and outputs.

Per stage: the peak resident memory of the largest process of the stage (``os.wait4``'s ``ru_maxrss``: the stage
or a child it waited for, e.g. a data-loader worker; not their sum), wall and CPU seconds, the size on disk of its
outputs, and a rate: seconds per iteration for the trainers (from the ``<stage>: N steps in X s`` line they print,
else the wall time), otherwise items (frames, flows) per second of wall time, interpreter start-up and imports
included (``flow``: from the time it prints), and between consecutive sizes the marginal rate, extra items over
extra seconds, which leaves the start-up out. Prints a table and writes JSON.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from videoda.config.fields import lookup, read_params, with_overrides
from videoda.errors import ParamError
from videoda.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
TRAINERS = ("train_source", "train_oracle", "vat", "vst")
PAPER_MODEL = {"model.backbone": "resnet50", "model.num_layers": 4, "model.norm": "frozen_batch",
               "model.aspp_rates": [6, 12, 18, 24], "model.pretrained": None}
STEPS_LINE = re.compile(r"^(\w+): (\d+) steps in ([0-9.]+) s", re.M)        # videoda.domain_adaptation.train
FLOW_LINE = re.compile(r"^flow: (\d+) flows of \d+ clips with \S+ in ([0-9.]+) s", re.M)   # stages/flow.py


def clip_counts(n):
    return {"source_sequences": n, "target_train_clips": n, "target_val_clips": max(1, n // 8)}


def first_key(params, *keys):
    """The first of ``keys`` that params.yaml has (a key renamed by a newer config layer, or not yet)."""
    for key in keys:
        try:
            lookup(params, key)
            return key
        except ParamError:
            continue
    raise ParamError(f"params.yaml: none of {list(keys)} is present")


def bench_params(n, args):
    """The repository's params.yaml (composed from conf/: the embedded profile, our method) at size ``n``."""
    params = read_params(REPO / "params.yaml")
    sets = {f"synth.{k}": v for k, v in clip_counts(n).items()}
    sets.update({"synth.height": args.height, "synth.width": args.width, "synth.frames_per_clip": args.frames,
                 "synth.label_every": min(5, args.frames), "flow.method": "dis", "flow.epe": False,
                 "flow.compare": [], "vst.equal_proportions": [], "vst.rounds": 1})
    if "profile" in params:
        sets["profile"] = "embedded"
    if "method" in params:
        sets["method"] = "ours"
    for dataset in ("source", "target"):       # one resolution for both datasets, or one each
        for dim in ("height", "width"):
            sets[first_key(params, f"prepare.{dataset}.{dim}", f"prepare.{dim}")] = getattr(args, dim)
    for stage in TRAINERS:
        sets.update({f"{stage}.iterations": args.iterations, f"{stage}.batch_size": args.batch_size})
    if args.paper_model:
        sets.update(PAPER_MODEL)
    return with_overrides(params, sets)


def dvc_commands(params):
    """[(stage, argv, outs)] of dvc.yaml in its order, ``${key}`` interpolated from ``params``; the script runs
    from this repository with this interpreter."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        cmd = re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(params, m.group(1).strip())), stage["cmd"])
        argv = shlex.split(cmd)
        if argv[0] != "python" or not argv[1].startswith("stages/"):
            raise SystemExit(f"dvc.yaml: stage {name}: expected 'python stages/<script> ...', got {cmd!r}")
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        outs += [next(iter(o)) for o in stage.get("metrics", []) + stage.get("plots", []) if isinstance(o, dict)]
        out.append((name, [sys.executable, str(REPO / argv[1]), *argv[2:]], outs))
    return out


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_measured(argv, cwd, log):
    """Run ``argv`` in ``cwd`` (output to ``log``); its exit code, wall seconds and rusage (its own and that of
    every descendant it waited for: ``ru_maxrss`` is the largest single process's peak, KiB on Linux)."""
    with open(log, "wb") as f:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=environment())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)     # reaped here: Popen must not wait for it again
    return proc.returncode, wall, usage


def disk_bytes(paths, cwd):
    total = 0
    for p in paths:
        p = Path(cwd) / p
        files = [p] if p.is_file() else (f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        total += sum(f.stat().st_size for f in files)
    return total


def work_items(name, argv, n, args, log_text):
    """(items, unit) a stage processes at size ``n``, for its rate; seconds of work it reports, if any."""
    counts, f = clip_counts(n), args.frames
    frames = {"source": counts["source_sequences"] * f, "target_train": counts["target_train_clips"] * f,
              "target_val": counts["target_val_clips"] * f}
    if name in TRAINERS:
        found = {m.group(1): (int(m.group(2)), float(m.group(3))) for m in STEPS_LINE.finditer(log_text)}
        steps, seconds = found.get(name, (args.iterations, None))
        return steps, "iteration", seconds
    if name == "flow":
        found = FLOW_LINE.search(log_text)
        return (int(found.group(1)), "flow", float(found.group(2))) if found else (None, "flow", None)
    per_stage = {"synth": (sum(frames.values()), "frame"), "prepare": (sum(frames.values()), "frame"),
                 "pseudo_labels": (frames["target_train"], "frame"),
                 "evaluate": (frames["target_val"] * argv.count("--model"), "model-frame")}
    items, unit = per_stage.get(name, (None, None))
    return items, unit, None


def measure_size(n, args, folder):
    folder.mkdir(parents=True)
    params = bench_params(n, args)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    results = {}
    for name, argv, outs in dvc_commands(params):
        if name != "resolve_params" and name not in args.stages:
            continue
        log = folder / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        code, wall, usage = run_measured(argv, folder, log)
        text = log.read_text(errors="replace")
        if code != 0:
            raise SystemExit(f"size {n}: stage {name} failed (exit {code}); its output, {log}:\n{text[-3000:]}")
        if name == "resolve_params":
            continue
        items, unit, seconds = work_items(name, argv, n, args, text)
        entry = {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 2),
                 "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                 "outputs_mib": round(disk_bytes(outs, folder) / 2 ** 20, 2), "items": items, "unit": unit}
        timed = seconds if seconds else wall            # the stage's own timing, else the whole process's
        entry["timing"] = "stage line" if seconds else "wall, start-up included"
        if name in TRAINERS:
            entry["s_per_iteration"] = round(timed / max(items, 1), 4)
        elif items:
            entry["per_second"] = round(items / timed, 3)
        results[name] = entry
        print(f"  clips {n}: {name}: {entry}", flush=True)
    return results


def marginal_rates(sizes):
    """{stage: [rate between sizes i and i + 1, ...]}: extra items over extra wall seconds, start-up left out (None
    where the larger size took no longer, as noise on a busy machine can make it)."""
    out = {}
    for a, b in zip(sizes, sizes[1:]):
        for name, eb in b["stages"].items():
            ea = a["stages"].get(name)
            if ea is None or name in TRAINERS or not eb.get("items") or not ea.get("items"):
                continue
            extra_s = eb["wall_s"] - ea["wall_s"]
            rate = (eb["items"] - ea["items"]) / extra_s if extra_s > 0 else None
            out.setdefault(name, []).append(round(rate, 3) if rate else None)
    return out


def machine():
    cpu = cpu_model()
    total = next((int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), None)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": total, "python": platform.python_version()}


def print_table(report):
    sizes, settings = report["sizes"], report["settings"]
    table = Table(title=f"peak RSS (MiB) and rate of each stage at {settings['height']} x {settings['width']}, "
                        f"{settings['frames']} frames a clip; clips = source sequences = target-train clips")
    table.add_column("stage")
    table.add_column("rate unit")
    for s in sizes:
        table.add_column(f"{s['clips']} clips\nRSS", justify="right")
        table.add_column("rate", justify="right")
    table.add_column("RSS last\n/ first", justify="right")
    table.add_column("marginal\nrate", justify="right")
    names = list(dict.fromkeys(name for s in sizes for name in s["stages"]))
    for name in names:
        entries = [s["stages"].get(name) for s in sizes]
        first = next(e for e in entries if e)
        unit = ("s / iteration" if "s_per_iteration" in first else f"{first['unit']}s / s" if first.get("unit")
                else "wall s")
        row, rss = [name, unit], []
        for e in entries:
            if e is None:
                row += ["-", "-"]
                continue
            rss.append(e["peak_rss_mib"])
            rate = e.get("s_per_iteration", e.get("per_second", e["wall_s"]))
            row += [f"{e['peak_rss_mib']:.0f}", f"{rate:.3g}"]
        marginal = (report["marginal_per_second"].get(name) or [None])[-1]
        row += [f"{rss[-1] / rss[0]:.2f}" if len(rss) > 1 else "-", f"{marginal:.3g}" if marginal else "-"]
        table.add_row(*row)
    Console(width=max(120, 40 + 16 * len(sizes))).print(table)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4,16,64", help="clips per split, comma-separated (e.g. 20,100,400)")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--frames", type=int, default=30, help="frames per clip (Cityscapes-VPS: 30)")
    ap.add_argument("--iterations", type=int, default=3, help="steps of each trainer")
    ap.add_argument("--batch-size", type=int, default=1, help="frame pairs per step (the paper: 1)")
    ap.add_argument("--paper-model", action="store_true", help="ResNet-50 DeepLabv2 (random weights)")
    ap.add_argument("--stages", help="comma-separated dvc.yaml stages to run (default: all but report)")
    ap.add_argument("--work", help="folder for the runs (default: a new temporary folder); never in the repo")
    ap.add_argument("--keep", action="store_true", help="keep each size's folder (default: removed once measured)")
    ap.add_argument("--json", help="where to write the figures (default: <work>/scale.json)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    all_stages = [name for name, *_ in dvc_commands(read_params(REPO / "params.yaml")) if name != "resolve_params"]
    args.stages = args.stages.split(",") if args.stages else [s for s in all_stages if s != "report"]
    unknown = sorted(set(args.stages) - set(all_stages))
    if unknown or min(sizes) < 1 or args.iterations < 1 or args.batch_size < 1 or args.frames < 2:
        raise SystemExit(f"bad arguments: unknown stages {unknown}, or a size, --iterations, --batch-size < 1, "
                         f"or --frames < 2")
    work = Path(args.work or tempfile.mkdtemp(prefix="videoda_scale_")).resolve()
    if work == REPO or REPO in work.parents:
        raise SystemExit(f"--work {work}: inside the repository; the benchmark writes its own data elsewhere")
    report = {"machine": machine(), "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
              "settings": {"sizes": sizes, "height": args.height, "width": args.width, "frames": args.frames,
                           "iterations": args.iterations, "batch_size": args.batch_size,
                           "model": "paper (resnet50, 4 stages, ASPP 6-24)" if args.paper_model
                           else "params.yaml's model", "stages": args.stages},
              "sizes": []}
    for n in sizes:
        folder = work / f"clips_{n}"
        if folder.exists():
            shutil.rmtree(folder)
        print(f"size {n}: {clip_counts(n)} in {folder}", flush=True)
        report["sizes"].append({"clips": n, **clip_counts(n), "frames_per_clip": args.frames,
                                "stages": measure_size(n, args, folder)})
        if not args.keep:
            shutil.rmtree(folder)
    report["marginal_per_second"] = marginal_rates(report["sizes"])
    out = Path(args.json or work / "scale.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"machine: {report['machine']}; figures in {out}")


if __name__ == "__main__":
    main()
