"""Benchmark: FlowNet2 on a CPU, stock ptlflow as a user gets it vs ours (``videoda.flow.backends``).

- **stock**: ``ptlflow.get_model("flownet2", ckpt_path=...)``, ``eval()``, ``torch.no_grad()``; ptlflow's own
  correlation (its pure-PyTorch fallback when ``spatial_correlation_sampler`` is not installed, as here), torch's
  default thread count, denormals left as they are.
- **ours**: ``load_flownet2(...)``, as stage ``flow`` runs it: the exact shift-and-multiply correlation, weights
  kept channels-last, ``torch.inference_mode()``, flush-denormal on; the same default thread count.
- **ours+compile** (``--compile``): ours through ``torch.compile`` (inductor, weight freezing). Not used by the
  stage; shown for what a compiler adds, and its compile time.

Each is measured in its own Python process (so nothing global, e.g. flush-denormal, leaks from one to the other),
alternating stock and ours for ``--rounds`` rounds, each process timing ``--runs`` forward passes after a warm-up.
The input is one synthetic frame pair from the embedded benchmark's generator at ``--height`` x ``--width``.

Weights: ``--ckpt PATH`` (e.g. ptlflow's 'things' file), or by default RANDOM weights with ptlflow's own
initialisation (seed 0): the pretrained file cannot be fetched here. Random weights measure the speed of the
code paths and how far their flows differ; they are NOT a measurement of the model.

Usage (repo root, venv active):  python benchmarks/flownet2_speed.py [--rounds 2 --runs 3 --compile --json F]
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from videoda.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]


def flush_denormal_active():
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def count_denormals(model, run):
    """Denormal values among the outputs of every convolution, in one (untimed) forward pass."""
    tiny, counts = torch.finfo(torch.float32).tiny, [0, 0]

    def hook(module, inputs, out):
        a = out.detach().abs()
        counts[0] += int(((a > 0) & (a < tiny)).sum())
        counts[1] += a.numel()
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    run()
    for h in handles:
        h.remove()
    return counts


def worker(args):
    """One measurement in this process: prints a JSON line, saves the flow to ``args.out``."""
    pair = np.load(args.input)
    device = torch.device(args.device)
    first, second = (torch.from_numpy(x).to(device).expand(args.batch, -1, -1, -1).contiguous() for x in pair)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.worker == "stock":
        import ptlflow
        model = ptlflow.get_model("flownet2", ckpt_path=str(args.ckpt)).eval().to(device)

        def run():
            with torch.no_grad():
                return model({"images": torch.stack((first, second), dim=1)})["flows"][:, 0].permute(0, 2, 3, 1)
    else:
        from videoda.flow.backends import load_flownet2, run_ptlflow
        model = load_flownet2(args.ckpt).to(device)
        if args.worker == "ours+compile":
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True
            compiled = torch.compile(model)
        else:
            compiled = model

        def run():
            return run_ptlflow(compiled, first, second)
    start = time.perf_counter()
    flow = run()                                   # warm-up (and, for ours+compile, the compilation)
    sync()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        flow = run()
        sync()
        times.append((time.perf_counter() - start) / args.batch)
    np.save(args.out, flow[:1].float().cpu().numpy())
    denormals = count_denormals(model, run) if device.type == "cpu" and args.worker != "ours+compile" else None
    print(json.dumps({"times": times, "warmup": warmup, "threads": torch.get_num_threads(),
                      "flush_denormal": flush_denormal_active(), "denormals": denormals}))


def run_worker(mode, args, ckpt, inp, out):
    cmd = [sys.executable, __file__, "--worker", mode, "--ckpt", str(ckpt), "--input", str(inp), "--out", str(out),
           "--runs", str(args.runs), "--device", args.device, "--batch", str(args.batch)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{mode} worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_pair(height, width):
    """Two consecutive frames of one embedded-benchmark sequence, as ptlflow reads them: BGR floats in [0, 1]."""
    from videoda.data.synth import make_styles, render_sequence
    from videoda.flow.backends import to_flownet_input
    images = render_sequence(0, height, width, 2, make_styles(0.6, 0)[1])[0]
    return to_flownet_input(images).numpy()[:, None]          # (2 frames, batch 1, 3, H, W)


def correlation_timing(height, width, runs, device="cpu"):
    from ptlflow.models.flownet.submodules import correlate

    from videoda.flow.correlation import flownet_correlation
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 256, height // 8, width // 8, generator=g).to(device) for _ in range(2)]
    out = {}
    with torch.no_grad():
        for name, fn in (("stock", correlate), ("ours", flownet_correlation)):
            fn(*feats)
            sync()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                res = fn(*feats)
                sync()
                times.append(time.perf_counter() - start)
            out[name] = (statistics.median(times), res)
    diff = (out["ours"][1] - out["stock"][1]).abs().max().item()
    return out["stock"][0], out["ours"][0], diff, out["stock"][1].abs().max().item()


def denormal_penalty(runs):
    """How much denormal floats slow this CPU: a 256 -> 256 3 x 3 convolution at 64 x 128 whose weights are half
    denormal (as weight decay leaves dead filters), and a chain of products of denormal numbers, each with
    flush-denormal off and on (restored afterwards)."""
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval()
    with torch.no_grad():
        w = torch.randn(conv.weight.shape, generator=g) * 0.02
        conv.weight.copy_(torch.where(torch.rand(w.shape, generator=g) < 0.5, torch.full_like(w, 1e-39), w))
    x = torch.randn(1, 256, 64, 128, generator=g)
    tiny, half = torch.full((2048, 2048), 1e-39), torch.full((2048, 2048), 0.5)
    tests = {"conv, half its weights denormal": lambda: conv(x),
             "products of denormals": lambda: tiny * half * half * half}
    before = flush_denormal_active()
    out = {}
    with torch.no_grad():
        for name, fn in tests.items():
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                fn()
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
                out[f"{name}, flush {'on' if flush else 'off'}"] = 1000 * statistics.median(times)
    torch.set_flush_denormal(before)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2, help="alternating stock / ours processes")
    ap.add_argument("--runs", type=int, default=3, help="timed forward passes per process")
    ap.add_argument("--ckpt", type=Path, help="a ptlflow FlowNet2 checkpoint; default: random weights")
    ap.add_argument("--compile", action="store_true", help="also measure ours through torch.compile")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1, help="frame pairs per forward pass (copies of the one pair)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    tmp = Path(tempfile.mkdtemp(prefix="flownet2_speed."))
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp)


def measure(args, tmp):
    if args.ckpt:
        ckpt, weights = args.ckpt, f"checkpoint {args.ckpt.name}"
    else:
        import ptlflow
        torch.manual_seed(0)
        ckpt = tmp / "flownet2-random-seed0.ckpt"
        torch.save({"state_dict": ptlflow.get_model("flownet2").state_dict()}, ckpt)
        weights = "RANDOM weights (ptlflow's own initialisation, seed 0): not a measurement of the model"
    inp = tmp / "pair.npy"
    np.save(inp, make_pair(args.height, args.width))

    modes = ["stock", "ours"] + (["ours+compile"] if args.compile else [])
    results = {m: [] for m in modes}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for mode in modes:
            results[mode].append(run_worker(mode, args, ckpt, inp, tmp / f"{mode}.npy"))
            res = results[mode][-1]
            print(f"  round {r + 1} {mode}: median {statistics.median(res['times']):.4f} s/pair "
                  f"(warm-up {res['warmup']:.1f} s)", flush=True)
            load.append(os.getloadavg()[0])
    flows = {m: np.load(tmp / f"{m}.npy") for m in modes}
    c_stock, c_ours, c_diff, c_max = correlation_timing(args.height, args.width, args.runs, args.device)
    # Denormals are a CPU matter: on a GPU the question does not arise.
    denormal_ms = denormal_penalty(args.runs) if args.device == "cpu" else {}

    median = {m: statistics.median(t for res in results[m] for t in res["times"]) for m in modes}
    summary = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}"
                   + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
        "load_average_1min": [round(x, 2) for x in load],
        "resolution": [args.height, args.width], "batch": args.batch, "weights": weights,
        "seconds_per_pair": median,
        "frames_per_second": {m: 1 / t for m, t in median.items()},
        "speedup_vs_stock": {m: median["stock"] / median[m] for m in modes},
        "per_round_speedup": [statistics.median(results["stock"][r]["times"])
                              / statistics.median(results["ours"][r]["times"]) for r in range(args.rounds)],
        "max_flow_difference_px": {m: float(np.abs(flows[m] - flows["stock"]).max()) for m in modes},
        "max_flow_px": float(np.abs(flows["stock"]).max()),
        "threads": {m: results[m][0]["threads"] for m in modes},
        "flush_denormal": {m: results[m][0]["flush_denormal"] for m in modes},
        "denormal_conv_outputs": {m: results[m][0]["denormals"] for m in modes},
        "compile_seconds": results["ours+compile"][0]["warmup"] if args.compile else None,
        "denormal_penalty_ms": denormal_ms,
        "correlation_ms": {"stock": 1000 * c_stock, "ours": 1000 * c_ours, "max_difference": c_diff,
                           "max_value": c_max},
    }
    print(f"machine: {summary['machine']}; 1-min load average during the runs: {summary['load_average_1min']}")
    print(f"FlowNet2, one frame pair at {args.height} x {args.width}, {weights}")
    print(f"batches of {args.batch} pair(s), each method in its own process, {args.rounds} rounds x {args.runs} "
          f"runs, median:")
    for m in modes:
        den = summary["denormal_conv_outputs"][m]
        den = f", denormal conv outputs {den[0]} of {den[1]}" if den else ""
        print(f"  {m:13s} {median[m]:7.4f} s/pair ({1 / median[m]:6.2f} fps)  x{summary['speedup_vs_stock'][m]:.2f}"
              f"  max |flow - stock| {summary['max_flow_difference_px'][m]:.1e} px  "
              f"[{summary['threads'][m]} threads, flush-denormal {'on' if summary['flush_denormal'][m] else 'off'}"
              f"{den}]")
    print(f"  per-round speed-up of ours: {', '.join(f'x{s:.2f}' for s in summary['per_round_speedup'])}; "
          f"flows up to {summary['max_flow_px']:.1f} px")
    if args.compile:
        print(f"  ours+compile: compiling took {summary['compile_seconds']:.0f} s (once per input shape)")
    print(f"FlowNetC correlation alone, 256 x {args.height // 8} x {args.width // 8} features (this process, "
          f"{torch.get_num_threads()} threads): stock {1000 * c_stock:.2f} ms, ours {1000 * c_ours:.2f} ms, "
          f"x{c_stock / c_ours:.0f}, max |difference| {c_diff:.1e} (values up to {c_max:.2f})")
    if denormal_ms:
        print("denormals on this CPU (ms, median): " + ", ".join(f"{k} {v:.1f}" for k, v in denormal_ms.items()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
