"""Benchmark: how the prepared frames are stored, measured on what training reads, one random frame pair
(t - 1, t) with its two label maps, at the paper's 512 x 1024.

- **npy**: the clip format of ``videoda.data.clips`` (uncompressed .npy, a frame read at its offset with one
  ``preadv``; labels alike);
- **png**: every frame a PNG (lossless, OpenCV compression level 1, its fastest), labels a grey PNG, decoded with
  ``cv2.imdecode`` (plus the BGR -> RGB conversion training needs);
- **jpeg**: every frame a JPEG (quality 95, lossy: not byte-identical to the decoded source), labels a PNG.

Frames come from the embedded benchmark's generator (``--frames`` distinct frames; noise-free renderings compress
better than camera frames, so PNG/JPEG sizes here are a lower bound). Reported per format: MiB per frame on disk
(image + labels) and milliseconds per pair, page cache warm (the files were just written) and evicted before each
read (``posix_fadvise(DONTNEED)``: what a dataset larger than RAM costs; the disk behind a VM may still cache).

Usage (repo root, venv active):  python benchmarks/frame_format.py [--frames 24 --pairs 40 --json F]
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

from videoda.data.clips import Clip, load_clip, save_clip
from videoda.data.synth import make_styles, render_sequence

MIB = 2 ** 20


def evict(paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_encoded(folder, images, labels, ext, params):
    folder.mkdir()
    for t, (image, label) in enumerate(zip(images, labels)):
        ok1, im = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        ok2, lb = cv2.imencode(".png", label, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok1 and ok2
        (folder / f"{t:05d}{ext}").write_bytes(im.tobytes())
        (folder / f"{t:05d}_labels.png").write_bytes(lb.tobytes())
    return sorted(folder.iterdir())


def read_encoded_pair(folder, ext, t):
    def decode(path, flags):
        return cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), flags)
    images = [cv2.cvtColor(decode(folder / f"{i:05d}{ext}", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for i in (t - 1, t)]
    labels = [decode(folder / f"{i:05d}_labels.png", cv2.IMREAD_UNCHANGED) for i in (t - 1, t)]
    return np.stack(images), np.stack(labels)


def time_pairs(read, files_of, n_frames, pairs, seed, cold):
    rng = np.random.default_rng(seed)
    times = []
    for t in rng.integers(1, n_frames, size=pairs):
        if cold:
            evict(files_of(t))
        start = time.perf_counter()
        read(t)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=24, help="frames rendered and stored per format")
    ap.add_argument("--pairs", type=int, default=40, help="random pairs timed per format and cache state")
    ap.add_argument("--dir", default=None, help="where the files go (default: the system's temporary folder)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    start = time.perf_counter()
    images, labels, _ = render_sequence(0, args.height, args.width, args.frames, make_styles(0.6, 0)[1])
    render_s = time.perf_counter() - start
    root = Path(tempfile.mkdtemp(prefix="frame_format-", dir=args.dir))
    try:
        clip_dir = save_clip(root / "npy" / "clip", Clip("clip", images, labels, np.ones(args.frames, bool),
                                                         np.array([f"{t:05d}" for t in range(args.frames)])))
        folders = {"png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]), "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])}
        files = {"npy": sorted(clip_dir.iterdir())}
        for name, (ext, params) in folders.items():
            files[name] = write_encoded(root / name, images, labels, ext, params)
        os.sync()      # written back, so that DONTNEED can evict the pages
        clip = load_clip(clip_dir)
        readers = {"npy": lambda t: (clip.images[[t - 1, t]], clip.labels[[t - 1, t]])}
        pair_files = {"npy": lambda t: files["npy"]}
        for name, (ext, _) in folders.items():
            readers[name] = lambda t, ext=ext, name=name: read_encoded_pair(root / name, ext, t)
            pair_files[name] = lambda t, ext=ext, name=name: [root / name / f"{i:05d}{suffix}" for i in (t - 1, t)
                                                              for suffix in (ext, "_labels.png")]
        ref_images, ref_labels = readers["npy"](5)
        assert np.array_equal(ref_images, images[4:6]) and np.array_equal(ref_labels, labels[4:6])
        assert np.array_equal(readers["png"](5)[0], ref_images)     # lossless
        rows = {}
        for name in readers:
            size = sum(p.stat().st_size for p in files[name]) / args.frames / MIB
            warm = time_pairs(readers[name], pair_files[name], args.frames, args.pairs, 0, cold=False)
            cold = time_pairs(readers[name], pair_files[name], args.frames, args.pairs, 1, cold=True)
            rows[name] = {"mib_per_frame": round(size, 3), "ms_per_pair_warm": round(warm, 2),
                          "ms_per_pair_evicted": round(cold, 2)}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"{args.frames} frames at {args.height} x {args.width} (rendered in {render_s:.1f} s), median of "
          f"{args.pairs} random pairs (2 frames + 2 label maps); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'format':8} {'MiB/frame':>10} {'ms/pair warm':>13} {'ms/pair evicted':>16}")
    for name, r in rows.items():
        print(f"{name:8} {r['mib_per_frame']:>10.3f} {r['ms_per_pair_warm']:>13.2f} {r['ms_per_pair_evicted']:>16.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"height": args.height, "width": args.width, "frames": args.frames,
                                               "pairs": args.pairs, "formats": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
