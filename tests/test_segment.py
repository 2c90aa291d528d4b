"""``videoda segment``: overlay video, temporal-consistency score, and its errors."""

import json

import cv2
import numpy as np
import pytest
import torch

from videoda.cli import DIS_PRESET_NAMES, main
from videoda.data.classes import NUM_CLASSES, colorize
from videoda.data.synth import make_styles, render_sequence
from videoda.flow.backends import DIS_PRESETS, DisFlow
from videoda.model import DeepLabV2, save_checkpoint
from videoda.segment import (DEFAULT_SIZE, consecutive_flows, consistency_counts, consistency_percent, model_size,
                             overlay)

torch.set_num_threads(1)

H, W, T, FPS = 48, 96, 8, 10


def tiny_model(num_classes=NUM_CLASSES):
    torch.manual_seed(0)
    return DeepLabV2(num_classes, backbone="resnet18", norm="group", num_layers=2, aspp_rates=(1, 2))


def write_video(path, frames_rgb, fps=FPS):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames_rgb.shape[2:0:-1])
    assert writer.isOpened()
    for f in frames_rgb:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    images, _, _ = render_sequence(0, H, W, T, make_styles(0.6, 0)[1])
    write_video(root / "in.mp4", images)
    save_checkpoint(root / "model.pt", tiny_model(), {"stage": "test"})
    return root


def run(assets, out, *extra):
    return main(["segment", str(assets / "in.mp4"), "--model", str(assets / "model.pt"), "--out", str(out),
                 "--threads", "1", *extra])


def test_segment_end_to_end(assets, tmp_path, capsys):
    out, report_path = tmp_path / "out" / "overlay.mp4", tmp_path / "out" / "report.json"
    assert run(assets, out, "--height", "32", "--width", "64", "--json", str(report_path)) == 0
    frames, fps = read_video(out)
    assert len(frames) == T and all(f.shape == (H, W, 3) for f in frames)
    assert fps == pytest.approx(FPS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["overlay.mp4", "report.json"]  # no temp left
    report = json.loads(report_path.read_text())
    assert {"frames", "temporal_consistency", "seconds", "consistent_pixels", "counted_pixels", "model_size",
            "frame_size", "frames_per_second"} <= set(report)
    assert report["frames"] == T and report["frame_size"] == [H, W] and report["model_size"] == [32, 64]
    assert 0 < report["counted_pixels"] <= (T - 1) * 32 * 64
    assert 0 <= report["temporal_consistency"] <= 100
    assert report["temporal_consistency"] == pytest.approx(
        100 * report["consistent_pixels"] / report["counted_pixels"])
    stdout = capsys.readouterr().out
    assert f"{report['temporal_consistency']:.2f} %" in stdout and "8 frames" in stdout


def test_batches_do_not_change_the_score(assets, tmp_path):
    reports = []
    for bs in ("3", "8"):   # 3: pairs straddle batch boundaries (frames 2-3 and 5-6)
        assert run(assets, tmp_path / f"{bs}.mp4", "--batch-size", bs, "--json", str(tmp_path / f"{bs}.json")) == 0
        reports.append(json.loads((tmp_path / f"{bs}.json").read_text()))
    a, b = reports
    assert a["model_size"] == list(DEFAULT_SIZE)   # the checkpoint stores no resolution
    assert (a["consistent_pixels"], a["counted_pixels"]) == (b["consistent_pixels"], b["counted_pixels"])
    assert a["counted_pixels"] > (T - 1) * DEFAULT_SIZE[0] * DEFAULT_SIZE[1] // 2   # every pair counted


def test_max_frames_and_single_frame(assets, tmp_path, capsys):
    assert run(assets, tmp_path / "3.mp4", "--max-frames", "3") == 0
    assert len(read_video(tmp_path / "3.mp4")[0]) == 3
    assert run(assets, tmp_path / "1.mp4", "--max-frames", "1", "--json", str(tmp_path / "1.json")) == 0
    report = json.loads((tmp_path / "1.json").read_text())
    assert report["frames"] == 1 and report["temporal_consistency"] is None and report["counted_pixels"] == 0
    assert "n/a" in capsys.readouterr().out


def test_consistency_hand_checked():
    # Frame t is frame t-1 moved 1 px to the right; its new left column shows labels 0 and 2.
    prev = np.array([[0, 0, 1, 1],
                     [2, 2, 3, 3]])
    cur = np.array([[0, 0, 0, 1],
                    [2, 2, 2, 3]])
    flow = np.zeros((2, 4, 2), np.float32)
    flow[..., 0] = -1   # F_{t->t-1}: pixel x of frame t was at x - 1; column 0 came from outside: not counted
    assert consistency_counts(prev, cur, flow) == (6, 6)
    assert consistency_percent(6, 6) == 100.0
    # No motion: the warped labels are prev itself, wrong at (0, 2) and (1, 2): 6 of 8.
    assert consistency_counts(prev, cur, np.zeros_like(flow)) == (6, 8)
    # The wrong direction: warped rows [0, 1, 1, out], [2, 3, 3, out]: only column 0 agrees, 2 of 6.
    assert consistency_counts(prev, cur, -flow) == (2, 6)
    assert consistency_percent(2, 6) == pytest.approx(100 / 3)
    # Batched: the counts of the pairs add up.
    assert consistency_counts(np.stack([prev, prev]), np.stack([cur, cur]), np.stack([flow, -flow])) == (8, 12)
    assert consistency_percent(0, 0) is None


def test_consecutive_flows_point_to_the_previous_frame():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (64, 160), dtype=np.uint8), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    # The pattern moves 2 px to the right per frame: frame t at x shows frame t-1 at x - 2.
    images = np.stack([np.repeat(texture[:, 40 - 2 * t:120 - 2 * t, None], 3, axis=2) for t in range(3)])
    flows = consecutive_flows(DisFlow("medium"), images)
    assert flows.shape == (2, 64, 80, 2)
    inner = flows[:, 8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(-2, abs=0.25)
    assert np.median(inner[..., 1]) == pytest.approx(0, abs=0.25)


def test_overlay_blends_bgr_at_frame_size():
    frame = np.full((4, 6, 3), (10, 20, 30), np.uint8)   # BGR
    pred = np.array([[0, 9], [11, 0]], np.uint8)            # 2x2, upsampled by nearest to 4x6
    full = np.repeat(np.repeat(pred, 2, axis=0), 3, axis=1)
    assert np.array_equal(overlay(frame, pred, 0.0), frame)
    assert np.array_equal(overlay(frame, pred, 1.0), colorize(full)[..., ::-1])
    half = overlay(frame, pred, 0.5).astype(int)
    expected = (colorize(full)[..., ::-1].astype(int) + frame.astype(int)) / 2
    assert np.abs(half - expected).max() <= 0.5


def test_model_size_options_then_checkpoint_then_default():
    assert model_size({}) == DEFAULT_SIZE == (64, 128)
    assert model_size({"height": 32, "width": 48}) == (32, 48)
    assert model_size({"height": 32, "width": 48}, width=100) == (32, 100)
    assert model_size({"height": "x"}, 16, 24) == (16, 24)
    assert DIS_PRESET_NAMES == tuple(DIS_PRESETS)


def bad_checkpoint(path, kind):
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "hello":   # torch.load raises a KeyError on this one, not a ValueError
        path.write_text("hello\n")
    elif kind == "other_keys":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "bare_state_dict":
        torch.save(tiny_model().state_dict(), path)
    else:   # a DeepLabV2 of another label space
        save_checkpoint(path, tiny_model(num_classes=7))
    return path


@pytest.mark.parametrize("case", ["missing_video", "text_as_mp4", "empty_mp4", "missing_model", "text",
                                  "hello", "other_keys", "bare_state_dict", "seven_classes"])
def test_bad_input_exits_2_and_writes_nothing(assets, tmp_path, capsys, case):
    video, model = assets / "in.mp4", assets / "model.pt"
    if case == "missing_video":
        video = tmp_path / "nope.mp4"
    elif case == "text_as_mp4":
        video = tmp_path / "x.mp4"
        video.write_text("this is not a video\n")
    elif case == "empty_mp4":
        video = tmp_path / "empty.mp4"
        video.write_bytes(b"")
    elif case == "missing_model":
        model = tmp_path / "nope.pt"
    else:
        model = bad_checkpoint(tmp_path / f"{case}.pt", case)
    out = tmp_path / "out" / "overlay.mp4"
    code = main(["segment", str(video), "--model", str(model), "--out", str(out), "--threads", "1",
                 "--json", str(tmp_path / "out" / "r.json")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(video if "video" in case or "mp4" in case else model) in err
    if case in ("text", "hello", "other_keys", "bare_state_dict", "seven_classes"):
        assert "does not match" in err
    if case == "seven_classes":
        assert "predicts 7 classes, which does not match the class set 'shin2021' of 15 (--classes)" in err
    assert not (tmp_path / "out").exists()


def test_bad_option_exits_2(assets, tmp_path):
    for extra in (["--alpha", "1.5"], ["--batch-size", "0"], ["--dis-preset", "slow"]):
        with pytest.raises(SystemExit) as e:
            run(assets, tmp_path / "o.mp4", *extra)
        assert e.value.code == 2
    assert not (tmp_path / "o.mp4").exists()
