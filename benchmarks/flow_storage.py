"""Benchmark: our flow store against the formats the peer codebases ship, on the embedded benchmark's exact flows.

- **ours**: ``videoda.flow.store`` (HDF5, float16, gzip level 1 + shuffle, one chunk a field), read with
  ``FlowStore.flow``;
- **davsn_npy**: DA-VSN's int16 ``.npy`` of flow x 10 (``np.save``, uncompressed), read with ``np.load`` / 10;
- **uvda_png**: UnifiedVideoDA's KITTI-like 16-bit PNG, u and v as round(flow x 64 + 2^15), the third channel
  zero, written with OpenCV, read with ``cv2.imread(IMREAD_UNCHANGED)``;
- **f32_npy**: float32 ``.npy``, the reference (no error).

A frame pair is a forward flow F_{t->t+1} (the ground truth, ``flow.gt_root``) and its backward flow F_{t+1->t}
(``invert_flow``, as the ``gt`` backend makes it; NaN, no correspondence, set to 0 since int16 and PNG cannot
hold it). Measured at the benchmark's resolution on every pair, and at 512 x 1024 on ``--pairs`` of them resized
with their vectors scaled (bilinear upsampling, as FlowNet2's output is). Reported per format: bytes per pair on
disk, the end-point error the encoding adds against the float32 flow (mean and max, px; a value out of the
format's range is clipped to it, counted in ``clipped``) and the median read time of a pair, page cache warm.

Usage (repo root, venv active):  python benchmarks/flow_storage.py [--pairs 8 --repeats 5 --out F.json]
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from videoda.errors import DataError, run_stage
from videoda.flow.backends import invert_flow, resize_flow
from videoda.flow.store import FlowStore, FlowWriter

PNG_SCALE, PNG_OFFSET = 64, 2 ** 15      # KITTI's layout: 1/64 px steps, +-512 px
DAVSN_SCALE = 10                         # DA-VSN: 0.1 px steps, +-3276.7 px


def davsn_encode(flow):
    return np.round(np.clip(flow * DAVSN_SCALE, -32768, 32767)).astype(np.int16)


def davsn_decode(stored):
    return stored.astype(np.float32) / DAVSN_SCALE


def png_encode(flow):
    uv = np.round(np.clip(flow * PNG_SCALE + PNG_OFFSET, 0, 65535)).astype(np.uint16)
    return np.dstack([uv, np.zeros(flow.shape[:2], np.uint16)])


def png_decode(image):
    return (image[..., :2].astype(np.float32) - PNG_OFFSET) / PNG_SCALE


def write_ours(folder, pairs):
    """One store, one clip whose frame t -> t+1 flows are the pairs; a reader of pair t (forward, backward)."""
    h, w = pairs[0][0].shape[:2]
    path = folder / "flows.h5"
    with FlowWriter(path, [1], h, w, "benchmark") as writer:
        flows = {key: f for t, (fwd, bwd) in enumerate(pairs) for key, f in (((t, t + 1), fwd), ((t + 1, t), bwd))}
        writer.add_clip("clip", len(pairs) + 1, flows)
    store = FlowStore(path)
    return lambda t: (store.flow("clip", t, t + 1), store.flow("clip", t + 1, t))


def write_npy(folder, pairs, encode, decode):
    for t, pair in enumerate(pairs):
        for kind, flow in zip(("fwd", "bwd"), pair):
            np.save(folder / f"{t:05d}_{kind}.npy", encode(flow))
    return lambda t: tuple(decode(np.load(folder / f"{t:05d}_{kind}.npy")) for kind in ("fwd", "bwd"))


def write_png(folder, pairs):
    for t, pair in enumerate(pairs):
        for kind, flow in zip(("fwd", "bwd"), pair):
            assert cv2.imwrite(str(folder / f"{t:05d}_{kind}.png"), png_encode(flow))
    return lambda t: tuple(png_decode(cv2.imread(str(folder / f"{t:05d}_{kind}.png"), cv2.IMREAD_UNCHANGED))
                           for kind in ("fwd", "bwd"))


FORMATS = {
    "ours": write_ours,
    "davsn_npy": lambda folder, pairs: write_npy(folder, pairs, davsn_encode, davsn_decode),
    "uvda_png": write_png,
    "f32_npy": lambda folder, pairs: write_npy(folder, pairs, lambda f: f.astype(np.float32), lambda a: a),
}
RANGES = {"ours": 65504, "davsn_npy": 32767 / DAVSN_SCALE, "uvda_png": (65535 - PNG_OFFSET) / PNG_SCALE,
          "f32_npy": np.inf}


def measure(pairs, folder, repeats):
    """Per format: bytes per pair, EPE against ``pairs`` (mean, max), clipped share, median read time (ms). The
    formats' reads are interleaved, so that a change of the machine's load weighs on all of them alike."""
    reference = np.stack([np.stack(pair) for pair in pairs])
    readers, rows = {}, {}
    for name, write in FORMATS.items():
        (folder / name).mkdir()
        readers[name] = write(folder / name, pairs)
        epe = np.linalg.norm(np.stack([np.stack(readers[name](t)) for t in range(len(pairs))]) - reference, axis=-1)
        rows[name] = {"bytes_per_pair": round(sum(p.stat().st_size for p in (folder / name).iterdir()) / len(pairs)),
                      "epe_mean_px": float(epe.mean()), "epe_max_px": float(epe.max()),
                      "clipped": float((np.abs(reference) > RANGES[name]).mean())}
    times = {name: [] for name in readers}
    for _ in range(repeats):
        for t in range(len(pairs)):
            for name, read in readers.items():
                start = time.perf_counter()
                read(t)
                times[name].append(time.perf_counter() - start)
    for name in rows:
        rows[name]["ms_per_pair"] = round(1000 * statistics.median(times[name]), 3)
    return rows


def ground_truth_pairs(gt_root):
    """Every (forward, backward) pair of the ground-truth flows under ``gt_root``, float32 (H, W, 2) each."""
    paths = sorted(Path(gt_root).glob("*.npy"))
    if not paths:
        raise DataError(f"{gt_root}: no ground-truth flow (*.npy) found (run stage synth, or pass --gt-root)")
    pairs = []
    for path in paths:
        for fwd in np.load(path).astype(np.float32):
            pairs.append((fwd, np.nan_to_num(invert_flow(fwd), nan=0.0)))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt-root", default="data/synth/flow_gt/train", help="the embedded benchmark's flows")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=8, help="pairs resized to --height x --width (evenly spaced)")
    ap.add_argument("--repeats", type=int, default=5, help="reads of every pair for the median time")
    ap.add_argument("--dir", default=None, help="where the files go (default: the system's temporary folder)")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    pairs = ground_truth_pairs(args.gt_root)
    picked = np.linspace(0, len(pairs) - 1, min(args.pairs, len(pairs))).round().astype(int)
    large = [tuple(resize_flow(f[None], (args.height, args.width))[0] for f in pairs[i]) for i in picked]
    root = Path(tempfile.mkdtemp(prefix="flow_storage-", dir=args.dir))
    try:
        sets = {}
        for label, flows in (("native", pairs), ("large", large)):
            (root / label).mkdir()
            h, w = flows[0][0].shape[:2]
            sets[label] = {"height": h, "width": w, "pairs": len(flows),
                           "formats": measure(flows, root / label, args.repeats)}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    print(f"flow storage, {args.gt_root}: {sets['native']['pairs']} exact pairs (forward + inverted backward) at "
          f"{sets['native']['height']} x {sets['native']['width']}, and {sets['large']['pairs']} of them resized to "
          f"{args.height} x {args.width} with vectors scaled; read time: median of {args.repeats} warm reads a "
          f"pair; {cpu}, {os.cpu_count()} CPUs")
    for label, s in sets.items():
        print(f"\n{s['height']} x {s['width']} ({s['pairs']} pairs)")
        print(f"{'format':10} {'KiB/pair':>10} {'x f32':>6} {'EPE mean px':>12} {'EPE max px':>11} {'clipped':>8} "
              f"{'ms/pair':>8} {'x ours':>7}")
        rows = s["formats"]
        for name, r in rows.items():
            print(f"{name:10} {r['bytes_per_pair'] / 1024:>10.1f} "
                  f"{r['bytes_per_pair'] / rows['f32_npy']['bytes_per_pair']:>6.2f} {r['epe_mean_px']:>12.5f} "
                  f"{r['epe_max_px']:>11.4f} {r['clipped']:>8.2%} {r['ms_per_pair']:>8.3f} "
                  f"{r['ms_per_pair'] / rows['ours']['ms_per_pair']:>7.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"gt_root": args.gt_root, "repeats": args.repeats, "cpu": cpu,
                                              "cpus": os.cpu_count(), "sets": sets}, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
