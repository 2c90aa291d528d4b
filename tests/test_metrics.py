"""Hand-computed checks of mIoU and VPQ^s, and the ``python -m videoda eval`` scorer end to end."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from videoda.cli import main
from videoda.metrics import ConfusionMatrix, VPQStuff

NAMES = ("a", "b", "c")


def row(*runs):
    """One-row label map from (class, length) runs, e.g. row((0, 51), (1, 49))."""
    return np.concatenate([np.full(n, c, np.uint8) for c, n in runs])[None]


def vpq1(pred, gt, **kw):
    """VPQ^s of a single annotated frame (k = 0 only), C = 3."""
    m = VPQStuff(3, ks=(0,), class_names=NAMES, **kw)
    m.update(pred[None], gt[None])
    return m


# ---------------------------------------------------------------- mIoU


def test_confusion_matrix_miou_hand_computed():
    gt = np.array([[0, 0, 1, 255], [1, 1, 2, 2]], np.uint8)
    pred = np.array([[0, 1, 1, 0], [1, 1, 2, 0]], np.uint8)
    cm = ConfusionMatrix(4, class_names=("a", "b", "c", "d"))
    cm.update(pred, gt)
    # void pixel (0, 3) is skipped: a: 1 / (2 + 2 - 1), b: 3 / (3 + 4 - 3), c: 1 / (2 + 1 - 1), d absent
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 4, 1 / 2, np.nan])
    assert cm.mat[0, 1] == 1 and cm.mat[2, 0] == 1 and cm.mat.sum() == 7  # rows gt, columns pred
    assert cm.miou() == pytest.approx(100 * 19 / 36)
    assert cm.to_dict() == {"miou": 52.7778, "iou": {"a": 33.3333, "b": 75.0, "c": 50.0, "d": None}}
    cm2 = ConfusionMatrix(4, class_names=("a", "b", "c", "d"))
    cm2.update(torch.from_numpy(pred[None]), torch.from_numpy(gt[None]))  # batched tensors count the same
    np.testing.assert_array_equal(cm2.mat, cm.mat)


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"pred holds ids \[3\]"):
        cm.update(np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"pred holds ids \[255\]"):
        cm.update(torch.full((2, 2), 255), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"gt holds ids \[7\]"):
        cm.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8))


# ---------------------------------------------------------------- VPQ^s, one frame


def test_vpq_iou_just_above_half_is_tp():
    m = vpq1(row((0, 100)), row((0, 51), (1, 49)))  # tube a: IoU 51/100; b: gt only; c: absent
    assert m.tp[0].tolist() == [1, 0, 0] and m.fn[0].tolist() == [0, 1, 0] and m.fp[0].tolist() == [0, 0, 0]
    r = m.compute()
    assert r["k0"] == pytest.approx(100 * (0.51 + 0) / 2)  # c is not counted, else 17.0
    assert r["per_class"] == {"a": 51.0, "b": 0.0, "c": None}


@pytest.mark.parametrize("n_gt", [50, 49])  # IoU exactly 0.5 and just below: no match
def test_vpq_iou_not_above_half_is_fp_and_fn(n_gt):
    m = vpq1(row((0, 100)), row((0, n_gt), (1, 100 - n_gt)))
    assert m.tp[0, 0] == 0 and m.fp[0, 0] == 1 and m.fn[0, 0] == 1 and m.fn[0, 1] == 1
    assert m.compute()["k0"] == 0.0


def test_vpq_class_only_in_prediction_is_fp_only():
    m = vpq1(row((0, 90), (2, 10)), row((0, 100)))
    assert m.fp[0].tolist() == [0, 0, 1] and m.fn[0].tolist() == [0, 0, 0] and m.tp[0].tolist() == [1, 0, 0]
    assert m.compute()["k0"] == pytest.approx(100 * (0.9 + 0) / 2)  # b absent from both: not averaged


def test_vpq_void_pixels_are_excluded():
    # 70 void gt pixels predicted a: excluded, a is a perfect match (counting them: IoU 0.3, PQ 0)
    m = vpq1(row((0, 100)), row((0, 30), (255, 70)))
    assert m.compute()["k0"] == 100.0
    assert m.tp[0, 0] == 1 and m.iou_sum[0, 0] == 1.0


def test_vpq_unmatched_prediction_mostly_on_void_is_not_fp():
    gt = row((0, 50), (255, 50))
    # b: 10 pixels on gt a, 50 on void -> more than half void, ignored as in VPSNet's eval_vpq.py
    m = vpq1(row((0, 40), (1, 60)), gt)
    assert m.fp[0, 1] == 0 and m.compute()["k0"] == 80.0
    # b: 15 on gt a, 5 on void -> a FP; a: non-void tube [0, 35) -> IoU 35/50
    m = vpq1(row((0, 35), (1, 20), (0, 45)), gt)
    assert m.fp[0, 1] == 1 and m.compute()["k0"] == pytest.approx(100 * (0.7 + 0) / 2)


def test_vpq_sums_over_clips_before_dividing():
    m = VPQStuff(3, ks=(0,), class_names=NAMES)
    m.update(row((0, 10))[None], row((0, 10))[None])  # a: TP, IoU 1
    m.update(row((1, 10))[None], row((0, 10))[None])  # a: FN, b: FP
    # PQ_a = 1 / (1 + 0.5) (a per-clip average would give 50)
    assert m.compute()["k0"] == pytest.approx(100 * (2 / 3 + 0) / 2)


# ---------------------------------------------------------------- VPQ^s, windows


def test_vpq_tube_matching_over_a_two_frame_window():
    gt = np.stack([row((0, 10)), row((0, 10))])
    pred = np.stack([row((0, 10)), row((0, 2), (1, 8))])
    m = VPQStuff(3, ks=(0, 5), label_stride=5, class_names=NAMES)
    m.update(pred, gt)
    # k=0: frame 1 TP (IoU 1), frame 2 IoU 0.2 -> FP + FN: PQ_a = 1 / 2; b FP in frame 2
    # k=5: one window, tube a IoU 12/20 = 0.6 -> TP: PQ_a = 0.6; b FP
    r = m.compute()
    assert r == {"k0": 25.0, "k5": 30.0, "mean": 27.5, "per_class": {"a": 55.0, "b": 0.0, "c": None}}


def test_vpq_six_frame_clip_windows_and_final_average():
    gt = np.zeros((6, 1, 10), np.uint8)
    pred = gt.copy()
    pred[5] = 1  # last annotated frame all wrong
    m = VPQStuff(3, class_names=NAMES)  # ks = 0, 5, 10, 15, label_stride 5 -> 1, 2, 3, 4 frames
    m.update(pred, gt)
    assert m.num_windows.tolist() == [6, 5, 4, 3]
    assert m.tp[:, 0].tolist() == [5, 4, 4, 3] and m.fp[:, 1].tolist() == [1, 1, 1, 1]
    # a per k: 5/5.5; window 4-5 has IoU 10/20 = 0.5 (no match): 4/5; IoU 20/30: (3 + 2/3)/4; (2 + 3/4)/3
    pq_a = [10 / 11, 4 / 5, 11 / 12, 11 / 12]
    r = m.compute()
    for key, pq in zip(("k0", "k5", "k10", "k15"), pq_a):
        assert r[key] == pytest.approx(100 * pq / 2, abs=1e-4)  # (PQ_a + PQ_b = 0) / 2
    assert r["mean"] == pytest.approx(100 * sum(pq_a) / 8, abs=1e-4)
    assert r["per_class"]["a"] == pytest.approx(100 * sum(pq_a) / 4, abs=1e-4)
    assert r["per_class"]["b"] == 0.0 and r["per_class"]["c"] is None
    m.update(pred, gt)
    assert m.num_windows.tolist() == [12, 10, 8, 6]


def test_vpq_short_clip_has_no_long_windows():
    m = VPQStuff(3, class_names=NAMES)
    m.update(np.zeros((3, 1, 4), np.uint8), np.zeros((3, 1, 4), np.uint8))
    assert m.num_windows.tolist() == [3, 2, 1, 0]
    r = m.compute()
    assert r["k15"] is None and r["k10"] == 100.0 and r["mean"] == 100.0


def test_vpq_rejects_bad_input():
    m = VPQStuff(15)
    z = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        m.update(z, z[:, :3])
    with pytest.raises(ValueError, match=r"preds holds ids \[15\]"):
        m.update(z + 15, z)
    with pytest.raises(ValueError, match=r"gt holds ids \[20\]"):
        m.update(z, z + 20)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        m.update(z[0], z[0])
    with pytest.raises(ValueError, match="multiples"):
        VPQStuff(15, ks=(0, 3))


# ---------------------------------------------------------------- CLI


def write_png(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), labels.astype(np.uint8))


def make_dataset(tmp_path, seed=0):
    """Two clips; clip 0001 has non-padded frame indices 5, 10, 15 so only a numeric sort orders them."""
    rng = np.random.default_rng(seed)
    frames = [("0001", f) for f in (5, 10, 15)] + [("0002", f) for f in (25, 30)]
    data = {}
    for clip, f in frames:
        gt = rng.integers(0, 3, (4, 6)).astype(np.uint8)
        gt[0, 0] = 255
        pred = np.where(rng.random((4, 6)) < 0.7, gt, rng.integers(0, 3, (4, 6))) % 255
        name = f"{clip}_{f}_city_000000_{f:06d}"
        write_png(tmp_path / "gt" / f"{name}_gtFine_labelTrainIds.png", gt)
        pred_name = f"{name}_leftImg8bit.png" if clip == "0002" else f"{name}_gtFine_labelTrainIds.png"
        write_png(tmp_path / "pred" / pred_name, pred)
        data.setdefault(clip, []).append((pred.astype(np.uint8), gt))
    return data


def expected(data):
    cm, vpq = ConfusionMatrix(15), VPQStuff(15)
    for frames in data.values():
        for p, g in frames:
            cm.update(p, g)
        vpq.update(np.stack([p for p, _ in frames]), np.stack([g for _, g in frames]))
    return {**cm.to_dict(), "vpq": vpq.compute(), "frames": 5, "clips": 2}


def run_eval(tmp_path, *extra):
    return main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "out" / "scores.json"), *extra])


def test_cli_eval_end_to_end(tmp_path, capsys):
    data = make_dataset(tmp_path)
    assert run_eval(tmp_path) == 0
    report = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert report == expected(data)
    assert list(report["vpq"]) == ["k0", "k5", "k10", "k15", "mean", "per_class"]
    assert report["iou"]["sky"] is None  # class 9 never appears
    assert "road" in capsys.readouterr().out
    # the frame order matters: a lexicographic sort (10, 15, 5) scores differently
    lexi = {"0001": [data["0001"][i] for i in (1, 2, 0)], "0002": data["0002"]}
    assert expected(lexi)["vpq"] != report["vpq"]


def test_cli_missing_prediction_exits_2_without_output(tmp_path):
    make_dataset(tmp_path)
    missing = next((tmp_path / "pred").glob("0001_10_*.png"))
    missing.unlink()
    proc = subprocess.run([sys.executable, "-m", "videoda", "eval", "--pred", str(tmp_path / "pred"),
                           "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "out" / "scores.json")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert missing.name in proc.stderr and "no prediction" in proc.stderr
    assert not (tmp_path / "out" / "scores.json").exists()


@pytest.mark.parametrize("damage", ["unreadable", "size", "bad_id"])
def test_cli_bad_prediction_exits_2(tmp_path, capsys, damage):
    make_dataset(tmp_path)
    victim = next((tmp_path / "pred").glob("0002_30_*.png"))
    if damage == "unreadable":
        victim.write_bytes(b"not a png")
    else:
        write_png(victim, np.zeros((5, 6)) if damage == "size" else np.full((4, 6), 15))
    assert run_eval(tmp_path) == 2
    err = capsys.readouterr().err
    assert victim.name in err and {"unreadable": "unreadable", "size": "size", "bad_id": "[15]"}[damage] in err
    assert not (tmp_path / "out").exists()


def test_cli_cityscapes_train_ids(tmp_path, capsys):
    # Cityscapes train ids (Cityscapes-VPS labelmap): road 0, sidewalk 1, car 13, bicycle 18 (void for us),
    # void 255, rider 12 (merged into person)
    write_png(tmp_path / "gt" / "0001_0000_x_gtFine_labelmap.png", np.array([[0, 1, 13, 18, 255, 12]]))
    write_png(tmp_path / "pred" / "0001_0000_x_gtFine_labelmap.png", np.array([[0, 1, 11, 2, 2, 10]]))
    assert run_eval(tmp_path) == 2  # 13, 18 are not our train ids
    assert "--gt-ids cityscapes" in capsys.readouterr().err
    assert run_eval(tmp_path, "--gt-ids", "cityscapes") == 0
    report = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert report["miou"] == 100.0 and report["iou"]["car"] == 100.0 and report["iou"]["person"] == 100.0
    assert report["iou"]["building"] is None  # predicted only on void pixels
    assert report["vpq"]["k0"] == 100.0 and report["vpq"]["k5"] is None
    # raw Cityscapes labelIds (sky = 23) are refused rather than mis-mapped
    write_png(tmp_path / "gt" / "0001_0000_x_gtFine_labelmap.png", np.array([[7, 8, 26, 33, 0, 23]]))
    (tmp_path / "out" / "scores.json").unlink()
    assert run_eval(tmp_path, "--gt-ids", "cityscapes") == 2
    assert "[23, 26, 33]" in capsys.readouterr().err and not (tmp_path / "out" / "scores.json").exists()


def test_vpq_matches_a_direct_mask_implementation():
    """Random clips against a literal per-window, per-class transcription with boolean masks."""
    rng = np.random.default_rng(1)
    m, stats = VPQStuff(4, class_names="abcd"), np.zeros((4, 4, 4))  # k, class, (tp, iou, fp, fn)
    for _ in range(3):
        gt = rng.integers(0, 3, (6, 5, 7)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 4, gt.shape)) % 255
        m.update(pred, gt)
        for i, n in enumerate((1, 2, 3, 4)):
            for s in range(6 - n + 1):
                p, g = pred[s:s + n], gt[s:s + n]
                for c in range(4):
                    pt, gtube, void = p == c, g == c, g == 255
                    iou = (pt & gtube).sum() / max((pt & ~void).sum() + gtube.sum() - (pt & gtube).sum(), 1)
                    if pt.any() and gtube.any() and iou > 0.5:
                        stats[i, c, :2] += (1, iou)
                        continue
                    stats[i, c, 3] += gtube.any()
                    stats[i, c, 2] += pt.any() and (pt & void).sum() <= 0.5 * pt.sum()
    np.testing.assert_array_equal(m.tp, stats[..., 0])
    np.testing.assert_allclose(m.iou_sum, stats[..., 1])
    np.testing.assert_array_equal(m.fp, stats[..., 2])
    np.testing.assert_array_equal(m.fn, stats[..., 3])
    assert m.fp.sum() > 0 and m.fn.sum() > 0 and m.tp.sum() > 0


def test_stage_and_cli_share_one_evaluator(tmp_path, monkeypatch):
    """``evaluate_clips`` (stage `evaluate`) on a model's predictions and ``videoda eval`` on the same
    predictions as PNGs give the same report, from ``score_clips``; the stage writes PNGs the CLI re-scores."""
    from types import SimpleNamespace

    import videoda.evaluate as ev
    from videoda.data.classes import DEFAULT
    from videoda.eval_folder import evaluate_folder
    from videoda.metrics import score_clips

    data = make_dataset(tmp_path)
    report, mat = score_clips(((np.stack([p for p, _ in f]), np.stack([g for _, g in f])) for f in data.values()),
                              label_stride=5)
    full = expected(data)
    assert report == {k: v for k, v in full.items() if k not in ("frames", "clips")}
    assert mat.sum() == sum(int((g != 255).sum()) for f in data.values() for _, g in f)
    assert evaluate_folder(tmp_path / "pred", tmp_path / "gt") == full

    # A "model" that predicts, for each ground-truth frame (standing in as the image), the dataset's prediction.
    by_frame = {g.tobytes(): p for f in data.values() for p, g in f}
    monkeypatch.setattr(ev, "predict", lambda model, images, batch_size: np.stack([by_frame[im.tobytes()]
                                                                                  for im in images]))
    clips = []
    for name, frames in data.items():
        gts = np.stack([g for _, g in frames])
        names = sorted((tmp_path / "gt").glob(f"{name}_*.png"), key=lambda p: int(p.name.split("_")[1]))
        clips.append(SimpleNamespace(labeled=np.ones(len(frames), bool), labels=gts, images=gts,
                                     frame_names=np.array([p.stem for p in names])))
    out = tmp_path / "stage_pred"
    out.mkdir()
    stage_report, stage_mat = ev.evaluate_clips(None, clips, SimpleNamespace(label_stride=5, batch_size=16,
                                                                             classes=DEFAULT, resolution="prepared"),
                                                out)
    assert stage_report == report and np.array_equal(stage_mat, mat)
    assert len(list(out.glob("*.png"))) == 5
    assert evaluate_folder(out, tmp_path / "gt") == full


def test_headline_scores_are_miou_and_vpq_per_model():
    from videoda.evaluate import headline_scores

    entry = lambda miou, vpq: {"miou": miou, "iou": {}, "vpq": {"k0": 1.0, "mean": vpq}}  # noqa: E731
    metrics = {"source_only": entry(22.0, 10.5), "vst": entry(41.6, 27.1), "final": entry(41.6, 27.1)}
    scores = headline_scores(metrics)
    assert list(scores) == ["source_only", "vst"]          # final repeats the method's model
    assert scores["source_only"] == {"mIoU": 22.0, "VPQ": 10.5}
