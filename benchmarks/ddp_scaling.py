"""Training on several processes: what DistributedDataParallel costs and buys (docs/guides/gpus-and-clusters.md).

    python benchmarks/ddp_scaling.py                          # CPU: 64 x 128, the embedded model, 2 cores
    python benchmarks/ddp_scaling.py --device cuda --size 512x1024 --model paper --batch 1 --cases plain ddp1

Each case is its own process (its own threads and CUDA context) running ``train_source``'s step (forward of a
batch of frame pairs, per-frame cross-entropy, backward, optimiser step) through the pipeline's training loop
(``train``) on random frames, after ``--warmup`` steps:

- ``plain``: one process, no DDP, ``--threads`` torch threads (the pipeline's one-process run);
- ``plain-half``: the same with half the threads (what each of two processes gets on the same cores);
- ``ddp1``: one process wrapped in DDP (a world of one): the cost of the wrapping itself;
- ``ddp2``: two processes (gloo on the CPU, NCCL on GPUs), half the threads each, the same per-process batch:
  twice the global batch.

Printed: seconds per step (median), frame pairs per second (global), and the gradient all-reduce per step (the
model's parameters, float32). On the CPU ``ddp2`` vs ``plain`` says whether two processes beat one with twice the
threads on the same cores; ``ddp2`` vs 2 x ``plain-half`` is the data-parallel efficiency. The GPU figures the
docs/engineering/performance.md estimates N GPUs from are ``plain`` and ``ddp1`` at 512 x 1024 with the paper's model.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import json
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist

from videoda.config.fields import load_params
from videoda.config.stages import stage_config
from videoda.data.classes import NUM_CLASSES
from videoda.domain_adaptation.train import SUPERVISED, Curve, make_optimizer, seed_everything, train
from videoda.model import DeepLabV2
from videoda.model.build import build_model
from videoda.utils.device import Runtime, resolve_device
from videoda.utils.distributed import SINGLE, init_process_group, launch_ranks, rank_world
from videoda.utils.machine import cpu_model

CASES = ("plain", "plain-half", "ddp1", "ddp2")


class RandomPairs:
    """Endless batches of random frame pairs and labels on ``device`` (no data loading in the measurement)."""

    def __init__(self, batch, height, width, device, seed):
        g = torch.Generator().manual_seed(seed)
        self.batch = {"images": torch.randint(0, 256, (batch, 2, height, width, 3), dtype=torch.uint8, generator=g),
                      "labels": torch.randint(0, NUM_CLASSES, (batch, 2, height, width), generator=g)}
        self.batch = {k: v.to(device) for k, v in self.batch.items()}

    def sample(self):
        return self.batch


class Timed:
    """A batch source that records when each batch is asked for: the step times, without touching the loop."""

    def __init__(self, source, device):
        self.source, self.device, self.times = source, device, []

    def sample(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())
        return self.source.sample()


def build(kind):
    """The embedded model (params.yaml's ``model``) or the paper's DeepLabv2-ResNet-50 (randomly initialised: no
    weights file needed), as the paper profile (conf/profile/paper.yaml) sets it."""
    if kind == "paper":
        return DeepLabV2(NUM_CLASSES, backbone="resnet50", norm="frozen_batch", num_layers=4, aspp_rates=(6, 12, 18, 24))
    return build_model(stage_config("train_source", load_params()).model)


def run_case(args):
    """One case, in this process (for ddp2: in each of its two ranks)."""
    case = args.case
    if case == "ddp2" and launch_ranks(2, 1, "localhost:29400", "ddp-scaling"):
        return
    world = rank_world() or SINGLE
    threads = max(1, args.threads // 2) if case in ("plain-half", "ddp2") else args.threads
    torch.set_num_threads(threads)
    device = resolve_device(args.device, local_rank=world.local_rank)
    init_process_group(world, device)
    compute = Runtime(device, "fp32", 0, world)
    seed_everything(0, compute)
    model = compute.module(build(args.model))
    optimizer = make_optimizer(model.param_groups(1e-4), "sgd", 1e-4)
    net = model              # ddp2: train() wraps it in DDP, as the stages do
    if case == "ddp1":       # a world of one, wrapped all the same: the cost of the wrapping and its all-reduce
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://localhost:{args.port}",
                                rank=0, world_size=1)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    batches = Timed(RandomPairs(args.batch, *args.size, device, seed=world.rank), device)
    steps = SimpleNamespace(iterations=args.warmup + args.steps + 1, loss_limit=0,
                            optim=SimpleNamespace(poly_power=0.9))
    train(net, optimizer, batches, SUPERVISED, steps, Curve(name=case, every=10 ** 9), compute=compute)
    seconds = statistics.median(np.diff(batches.times)[args.warmup:].tolist())
    if world.is_main:
        print("RESULT " + json.dumps({
            "case": case, "processes": world.size, "threads_per_process": threads, "seconds_per_step": seconds,
            "pairs_per_second": world.size * args.batch / seconds,
            "allreduce_mib_per_step": sum(p.numel() for p in model.parameters()) * 4 / 2 ** 20}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="64x128", type=lambda s: tuple(int(x) for x in s.split("x")))
    ap.add_argument("--model", choices=("embedded", "paper"), default="embedded")
    ap.add_argument("--batch", type=int, default=8, help="frame pairs per process and step")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of one process (halved for two)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--port", type=int, default=29431, help="ddp1's one-rank process group")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)     # the child process's case
    args = ap.parse_args()
    if args.case:
        return run_case(args)
    print(f"{cpu_model()}; device {args.device}; {args.model} model at {args.size[0]}x{args.size[1]}, "
          f"batch {args.batch} pairs per process, {args.steps} steps after {args.warmup}")
    results = []
    for case in args.cases:
        done = subprocess.run([sys.executable, *sys.argv, "--case", case], capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"case {case} failed:\n{done.stderr[-2000:]}")
        results.append(json.loads(lines[0][len("RESULT "):]))
        r = results[-1]
        print(f"{case:11s} {r['processes']} x {r['threads_per_process']} threads: {r['seconds_per_step']:.4f} s/step, "
              f"{r['pairs_per_second']:.1f} pairs/s; all-reduce {r['allreduce_mib_per_step']:.1f} MiB/step")
    by = {r["case"]: r for r in results}
    if "plain" in by and "ddp1" in by:
        print(f"DDP wrapping overhead (ddp1 / plain step time): x{by['ddp1']['seconds_per_step'] / by['plain']['seconds_per_step']:.3f}")
    if "plain" in by and "ddp2" in by:
        print(f"two processes vs one with all threads (throughput): x{by['ddp2']['pairs_per_second'] / by['plain']['pairs_per_second']:.3f}")
    if "plain-half" in by and "ddp2" in by:
        print(f"data-parallel efficiency (ddp2 / 2 x plain-half): "
              f"{by['ddp2']['pairs_per_second'] / (2 * by['plain-half']['pairs_per_second']):.3f}")


if __name__ == "__main__":
    main()
