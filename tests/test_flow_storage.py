"""benchmarks/flow_storage.py: each format round-trips a flow within its stated quantisation, and the measurement
reports what its files hold (the figures quoted in docs/engineering/storage.md come from these functions)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("benchmarks.flow_storage", REPO / "benchmarks/flow_storage.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def tiny_pairs(n=3, h=6, w=10, seed=0):
    rng = np.random.default_rng(seed)
    flows = rng.uniform(-300, 300, size=(n, 2, h, w, 2)).astype(np.float32)
    flows[0, 0, 0, 0] = (0.025, -0.0049)          # near the quantisation steps
    return [(fwd, bwd) for fwd, bwd in flows]


def test_davsn_and_png_encodings_round_trip_within_their_steps():
    flow = np.stack(tiny_pairs()[0], axis=0)[0]
    assert bench.davsn_encode(flow).dtype == np.int16
    assert np.abs(bench.davsn_decode(bench.davsn_encode(flow)) - flow).max() <= 0.05 + 1e-4
    image = bench.png_encode(flow)
    assert image.dtype == np.uint16 and image.shape == flow.shape[:2] + (3,) and not image[..., 2].any()
    assert np.abs(bench.png_decode(image) - flow).max() <= 1 / 128 + 1e-5


def test_each_format_reads_back_within_its_quantisation(tmp_path):
    pairs = tiny_pairs()
    bound = {"ours": lambda f: np.maximum(np.abs(f) * 2.0 ** -11, 2.0 ** -24), "davsn_npy": lambda f: 0.05 + 1e-4,
             "uvda_png": lambda f: 1 / 128 + 1e-5, "f32_npy": lambda f: 0.0}
    for name, write in bench.FORMATS.items():
        (tmp_path / name).mkdir()
        read = write(tmp_path / name, pairs)
        for t, pair in enumerate(pairs):
            for decoded, flow in zip(read(t), pair):
                assert decoded.dtype == np.float32 and decoded.shape == flow.shape, name
                assert (np.abs(decoded - flow) <= bound[name](flow)).all(), name


def test_measure_reports_sizes_errors_and_clipping(tmp_path):
    pairs = tiny_pairs(h=16, w=32)
    pairs[1][0][0, 0, 0] = 600.0                   # beyond the PNG's +-512 px
    rows = bench.measure(pairs, tmp_path, repeats=2)
    assert list(rows) == list(bench.FORMATS)
    field = 16 * 32 * 2
    assert rows["f32_npy"]["bytes_per_pair"] >= 2 * field * 4 and rows["f32_npy"]["epe_max_px"] == 0
    assert 2 * field * 2 <= rows["davsn_npy"]["bytes_per_pair"] < rows["f32_npy"]["bytes_per_pair"]
    assert rows["davsn_npy"]["epe_max_px"] <= 0.05 * 2 ** 0.5 + 1e-4
    assert rows["uvda_png"]["epe_max_px"] == pytest.approx(600 - 65535 / 64 + 512, abs=0.02)   # clipped at 511.98
    assert rows["uvda_png"]["clipped"] == pytest.approx(1 / (len(pairs) * 2 * field))
    assert rows["ours"]["clipped"] == 0 and rows["ours"]["epe_max_px"] <= 600 * 2.0 ** -11 * 2 ** 0.5
    assert all(r["ms_per_pair"] > 0 for r in rows.values())
