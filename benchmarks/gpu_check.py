"""GPU check: the device tests, the training-step speed of the paper's model in fp32 and bf16, and the embedded
pipeline on the GPU, in one run that fits a lent H200's minutes (issue 13, point 7; docs/guides/gpus-and-clusters.md).

Usage, from the repository root (no dataset, no weights: random tensors and a random initialisation):

    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/gpu_check.json     # the same code, on a CPU

Parts (``--parts``, default all):
- ``tests``: ``pytest tests/test_device.py`` (its CUDA tests run where there is a GPU);
- ``bench``: one training step of ``train_source`` (1 source pair), ``vat`` (1 source + 1 target pair, the
  sequence discriminator, its alternating step) and ``vst`` (1 target pair, cross-entropy + entropy
  regulariser), through the pipeline's own training loop (``train``), at 512 x 1024 with the paper's model
  (DeepLabv2, ResNet-50, 4 stages, ASPP 6/12/18/24, frozen BN, SGD), for each variant: fp32 NCHW, fp32
  channels-last (the pipeline's fp32 on CUDA), bf16 autocast channels-last (its bf16), all with the pipeline's
  deterministic settings, and bf16 without them, with cuDNN's autotuning (what determinism costs). Frames per
  second, peak GPU memory (``torch.cuda.max_memory_allocated``), the step's FLOPs (``torch.utils.flop_counter``:
  convolutions and matrix products, forward and backward, multiply-add = 2) and the achieved TFLOP/s against the
  H200's dense peaks (bf16 989, TF32 494, fp32 67: NVIDIA's datasheet), and which ops warned that they have no
  deterministic kernel;
- ``ddp``: ``benchmarks/ddp_scaling.py``: the same ``train_source`` step (1 pair) plain and wrapped in
  DistributedDataParallel (a world of one: the wrapping's cost), and with two processes where two devices are;
- ``pipeline``: every stage of dvc.yaml in order (its commands, without DVC) on the embedded benchmark in a
  temporary folder with ``compute.device`` set (``flow.compare: [dis]``: ptlflow may be missing there), with
  each stage's seconds and the resulting ``reports/scores.json`` beside the committed CPU one.

``--tiny``: 64 x 128 frames, a ResNet-18 model, 1 + 2 steps, and the pipeline's training stages cut to
``--pipeline-iterations`` (default 3 with ``--tiny``): the code paths at a size a CPU runs in a few minutes.
Everything is printed and written to ``--out`` as JSON.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from videoda.config.fields import read_params, with_overrides
from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.domain_adaptation.adversarial import vat_objective
from videoda.domain_adaptation.self_training import vst_forward, vst_losses
from videoda.domain_adaptation.train import SUPERVISED, Curve, Objective, make_optimizer, seed_everything, train
from videoda.model import DeepLabV2
from videoda.utils.device import Runtime, channels_last, resolve_runtime

REPO = Path(__file__).resolve().parents[1]
# NVIDIA's H200 SXM datasheet, dense (no sparsity), TFLOP/s
H200_PEAK = {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}
STAGES = ("train_source", "vat", "vst")
FRAMES_PER_STEP = {"train_source": 2, "vat": 4, "vst": 2}


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    channels_last: bool
    deterministic: bool = True      # False: no deterministic mode, cuDNN autotuning (what determinism costs)


VARIANTS = [Variant("fp32", "fp32", False), Variant("fp32+channels_last", "fp32", True),
            Variant("bf16+channels_last", "bf16", True),
            Variant("bf16+channels_last+nondeterministic_autotuned", "bf16", True, deterministic=False)]


@dataclasses.dataclass(frozen=True)
class LayoutRuntime(Runtime):
    """The pipeline's Runtime with the memory layout chosen by the variant (the pipeline: channels-last on CUDA)."""
    channels_last: bool = True

    def module(self, module):
        module = module.to(self.device)
        return channels_last(module) if self.channels_last else module


def log(*parts):
    print(*parts, flush=True)


def environment(device):
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "machine": platform.machine(), "cpus": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), cudnn=torch.backends.cudnn.version(),
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def run_tests(timeout):
    """tests/test_device.py in a child process: its verdict and its output's tail."""
    start = time.perf_counter()
    # in this process, one test at a time (-o addopts=: no xdist workers sharing the GPU, and none needed there)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-s", "-p", "no:cacheprovider", "-o", "addopts=",
           "tests/test_device.py"]
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        rc, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        partial = e.stdout or b""
        rc, out = "timeout", partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    tail = "\n".join(out.strip().splitlines()[-25:])
    log(tail)
    return {"returncode": rc, "seconds": round(time.perf_counter() - start, 1), "tail": tail}


def run_ddp(device, tiny, size, warmup, steps, timeout):
    """benchmarks/ddp_scaling.py: a training step with and without DistributedDataParallel's wrapping (a world
    of one), and with two processes where there are two devices (the CPU, or two GPUs); its printed lines."""
    two = device.type == "cpu" or torch.cuda.device_count() >= 2
    cmd = [sys.executable, "benchmarks/ddp_scaling.py", "--device", str(device), "--size", f"{size[0]}x{size[1]}",
           "--model", "embedded" if tiny else "paper", "--batch", "1", "--warmup", str(warmup), "--steps", str(steps),
           "--cases", "plain", "ddp1", *(["plain-half", "ddp2"] if two else [])]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    log(done.stdout + done.stderr[-2000:])
    return {"returncode": done.returncode, "stdout": done.stdout, "command": shlex.join(cmd)}


def model_for(tiny):
    if tiny:
        return DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=2, aspp_rates=(1, 2, 3, 4),
                         group_norm_groups=16)
    return DeepLabV2(NUM_CLASSES, backbone="resnet50", norm="frozen_batch", num_layers=4, aspp_rates=(6, 12, 18, 24))


def batch_pool(stage, size, device, count=2):
    """``count`` random batches of one pair (two for vat: source and target), pinned when they go to a GPU, so
    that the copy is asynchronous as from the pipeline's loader."""
    g = torch.Generator().manual_seed(0)
    h, w = size
    pool = []
    for _ in range(count):
        labels = torch.randint(0, NUM_CLASSES, (1, 2, h, w), generator=g)
        labels[:, :, : h // 8] = IGNORE_ID               # unlabelled pixels, as pseudo labels have
        batch = {"images": torch.randint(0, 256, (1, 2, h, w, 3), dtype=torch.uint8, generator=g), "labels": labels}
        if stage == "vat":
            batch["labeled"] = torch.ones(1, 2, dtype=torch.bool)
            batch["target_images"] = torch.randint(0, 256, (1, 2, h, w, 3), dtype=torch.uint8, generator=g)
        if device.type == "cuda":
            batch = {k: v.pin_memory() for k, v in batch.items()}
        pool.append(batch)
    return pool


def schedule(iterations):
    """A phase's training settings as ``train`` reads them (``videoda.config.Training``), the paper's SGD's."""
    return SimpleNamespace(iterations=iterations, loss_limit=0, optim=SimpleNamespace(momentum=0.9, poly_power=0.9))


def training_setup(stage, compute, tiny, iterations):
    """(model, optimizer, objective) of ``stage`` on ``compute``, as the stage builds them."""
    model = compute.module(model_for(tiny))      # initialised on the CPU, then moved (as the stages do)
    optimizer = make_optimizer(model.param_groups(2.5e-4), "sgd", 2.5e-4, 0.9, 5e-4)     # the paper's SGD
    if stage == "train_source":
        return model, optimizer, SUPERVISED
    if stage == "vst":
        return model, optimizer, Objective(vst_forward, tuple(vst_losses("entropy", 0.1, 0.0)))
    vat = SimpleNamespace(discriminator="sequence", disc_input="softmax", dice="tube", lambda_v=0.01, lambda_dice=1.0,
                          disc_channels=64, optimizer_d="adam", lr_d=1e-4, train=schedule(iterations))
    return model, optimizer, vat_objective(vat, compute=compute)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(stage, compute, tiny, size):
    """FLOPs of one training step (forward, losses, backward, and D's step for vat), counted by torch."""
    seed_everything(0, compute)
    model, optimizer, objective = training_setup(stage, compute, tiny, 1)
    pool = batch_pool(stage, size, compute.device, count=1)
    counter = FlopCounterMode(display=False)
    with counter:
        train(model, optimizer, SimpleNamespace(sample=lambda: pool[0]), objective, schedule(1),
              Curve(name=f"{stage} flops"), compute=compute)
    return counter.get_total_flops()


def measure(stage, variant, device, tiny, size, warmup, steps, flops):
    compute = LayoutRuntime(device, variant.precision, 0, channels_last=variant.channels_last)
    seed_everything(0, compute)                 # the pipeline's deterministic settings for this device
    if not variant.deterministic:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    model, optimizer, objective = training_setup(stage, compute, tiny, warmup + steps)
    pool = batch_pool(stage, size, device)
    cycle = iter(range(10 ** 9))
    batches = SimpleNamespace(sample=lambda: pool[next(cycle) % len(pool)])
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with warnings.catch_warnings(record=True) as caught:          # ops without a deterministic kernel
        warnings.simplefilter("always")
        train(model, optimizer, batches, objective, schedule(warmup), Curve(name=f"{stage} {variant.name} warm-up"),
              compute=compute)
    nondeterministic = sorted({str(w.message).split(" does not have")[0] for w in caught
                               if "deterministic" in str(w.message)})
    sync(device)
    start = time.perf_counter()
    train(model, optimizer, batches, objective, schedule(steps), Curve(name=f"{stage} {variant.name}"), compute=compute)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    row = {"stage": stage, "variant": variant.name, "deterministic": variant.deterministic,
           "seconds_per_step": round(seconds, 4),
           "frames_per_second": round(FRAMES_PER_STEP[stage] / seconds, 2),
           "gflops_per_step": round(flops / 1e9, 1), "achieved_tflops": round(flops / seconds / 1e12, 3),
           "fraction_of_bf16_dense_peak": round(flops / seconds / 1e12 / H200_PEAK["bf16"], 4),
           "fraction_of_tf32_dense_peak": round(flops / seconds / 1e12 / H200_PEAK["tf32"], 4),
           "nondeterministic_ops": nondeterministic}
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    del model, optimizer, objective, pool
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def run_bench(device, tiny, size, warmup, steps):
    variants = VARIANTS
    rows = []
    for stage in STAGES:
        flops = step_flops(stage, LayoutRuntime(device, "fp32", 0), tiny, size)
        for variant in variants:
            try:
                if variant.precision == "bf16":
                    resolve_runtime(str(device), "bf16")         # a GPU without native bf16: said, not raised
                row = measure(stage, variant, device, tiny, size, warmup, steps, flops)
            except Exception as e:   # noqa: BLE001 - one failed variant (e.g. out of memory) must not end the check
                row = {"stage": stage, "variant": variant.name, "error": f"{type(e).__name__}: {e}"[:500]}
            rows.append(row)
            log(json.dumps(row))
    speedups = {}
    for stage in STAGES:
        by = {r["variant"]: r for r in rows if r["stage"] == stage and "error" not in r}
        if "fp32" in by and "bf16+channels_last" in by:
            speedups[stage] = round(by["fp32"]["seconds_per_step"] / by["bf16+channels_last"]["seconds_per_step"], 2)
    return {"size": list(size), "warmup_steps": warmup, "timed_steps": steps, "peaks_tflops": H200_PEAK,
            "rows": rows, "bf16_channels_last_speedup_over_fp32": speedups}


def stage_commands():
    """(stage name, argv) of every stage of dvc.yaml, in the file's order (each after the ones it reads)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "python" and argv[1].startswith("stages/"), stage["cmd"]
        out.append((name, [sys.executable, str(REPO / argv[1]), *argv[2:]]))
    return out


def run_pipeline(device, iterations, timeout):
    """The embedded benchmark through every stage, with compute.device set, in a temporary folder."""
    overrides = {"compute.device": str(device), "flow.compare": ["dis"]}
    if iterations:
        overrides.update({f"{section}.iterations": iterations
                          for section in ("train_source", "train_oracle", "vat", "vst")})
    params = with_overrides(read_params(REPO / "params.yaml"), overrides)
    result = {"device": str(device), "iterations": iterations or "params.yaml's", "stages": {}}
    deadline = time.perf_counter() + timeout
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for name, argv in stage_commands():
            start = time.perf_counter()
            try:
                done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, env=env,
                                      timeout=max(deadline - start, 1))
            except subprocess.TimeoutExpired:
                result["stages"][name] = {"error": "timeout"}
                log(f"pipeline {name}: timeout")
                break
            seconds = round(time.perf_counter() - start, 1)
            timing = [line for line in done.stdout.splitlines() if " steps in " in line]
            result["stages"][name] = {"seconds": seconds, "returncode": done.returncode, "log": timing}
            log(f"pipeline {name}: {seconds} s, exit {done.returncode} {' '.join(timing)}")
            if done.returncode != 0:
                result["stages"][name]["stderr"] = done.stderr[-3000:]
                log(done.stderr[-3000:])
                break
        scores = Path(tmp) / "reports/scores.json"
        if scores.is_file():
            result["scores"] = json.loads(scores.read_text())
            result["scores_committed_cpu_run"] = json.loads((REPO / "reports/scores.json").read_text())
            log("scores on", device, json.dumps(result["scores"]))
            log("scores of the committed CPU run", json.dumps(result["scores_committed_cpu_run"]))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    ap.add_argument("--tiny", action="store_true", help="64 x 128, ResNet-18: the code paths at a CPU's size")
    ap.add_argument("--parts", default="tests,bench,ddp,pipeline",
                    help="comma-separated: tests, bench, ddp, pipeline")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per measurement (default 5; tiny 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 20; tiny 2)")
    ap.add_argument("--pipeline-iterations", type=int, default=None,
                    help="training iterations of every training stage in the pipeline part (default: params.yaml's; "
                         "tiny 3)")
    ap.add_argument("--out", default=str(Path(os.environ.get("OUT", ".")) / "gpu_check.json"))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - {"tests", "bench", "ddp", "pipeline"}
    if unknown:
        raise SystemExit(f"error: --parts: unknown {sorted(unknown)}")
    device = resolve_runtime(args.device).device
    size = (64, 128) if args.tiny else (512, 1024)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    steps = args.steps if args.steps is not None else (2 if args.tiny else 20)
    iterations = args.pipeline_iterations if args.pipeline_iterations is not None else (3 if args.tiny else None)
    report = {"environment": environment(device), "tiny": args.tiny}
    log(json.dumps(report["environment"]))
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [("tests", "tests/test_device.py", lambda: run_tests(timeout=150)),
            ("bench", f"training steps at {size[0]} x {size[1]} on {device}",
             lambda: run_bench(device, args.tiny, size, warmup, steps)),
            ("ddp", f"DistributedDataParallel's cost at {size[0]} x {size[1]} on {device}",
             lambda: run_ddp(device, args.tiny, size, warmup, steps, timeout=180)),
            ("pipeline", f"embedded pipeline with compute.device = {device}",
             lambda: run_pipeline(device, iterations, timeout=240))]
    for part, title, job in jobs:
        if part not in parts:
            continue
        log(f"== {title}")
        try:
            report[part] = job()
        except Exception as e:   # noqa: BLE001 - a broken part is reported; the other parts still run
            report[part] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            log(report[part]["error"])
        report["seconds"] = round(time.perf_counter() - start, 1)
        out.write_text(json.dumps(report, indent=2) + "\n")      # after each part: a timeout keeps what ran
    if "bench" in report and "rows" in report["bench"]:
        speedups = report["bench"]["bf16_channels_last_speedup_over_fp32"]
        log("bf16+channels_last speed-up over fp32:", json.dumps(speedups))
    log(f"== done in {report['seconds']} s; {out}")


if __name__ == "__main__":
    main()
