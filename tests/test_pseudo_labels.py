"""Pseudo-label thresholds (Eq. 3, 4, 11; Algorithm 1) against hand-computed cases."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.domain_adaptation.pseudo_label_analysis import TABLE7_GENERATORS, knob_at_proportion, table7_p_miou
from videoda.domain_adaptation.pseudo_labels import (AGGREGATED, CLASS_BALANCED, CLIP, GENERATORS, IMAGE,
                                                     SINGLE_FRAME, Generator, adaptive_thresholds,
                                                     class_balanced_thresholds, class_quantile, label_stream,
                                                     label_with_thresholds, make_pseudo_labels)
from videoda.config.stages import stage_config
from videoda.errors import ParamError


def label_config(**changes):
    """The pseudo-label config of the repo's params.yaml with some fields changed."""
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    return dataclasses.replace(stage_config("pseudo_labels", params).labels, **changes)


def labels_of(maxima, cfg):
    """``label_stream`` collected: ({name: labels (T, H, W) uint8 numpy}, the final thresholds)."""
    out, theta = {}, None
    for name, labels, theta in label_stream(maxima, cfg):
        out[name] = labels.numpy()
    return out, theta


def clip_instance():
    # A "clip" of 2 frames of 1 x 6 pixels; class 0 has ten pixels, class 2 one, class 1 none.
    conf = np.array([[[0.95, 0.9, 0.8, 0.7, 0.6, 0.5]], [[0.4, 0.3, 0.2, 0.1, 0.99, 0.5]]])
    pred = np.array([[[0, 0, 0, 0, 0, 0]], [[0, 0, 0, 0, 2, 3]]])
    return conf, pred


def test_quantile_is_the_top_fraction_of_the_class():
    conf, pred = clip_instance()
    # class 0 sorted descending: .95 .9 .8 .7 .6 .5 .4 .3 .2 .1; top 45% -> index floor(4.5) = 4 -> 0.6
    assert class_quantile(conf, pred, 0, 0.45) == pytest.approx(0.6)
    assert class_quantile(conf, pred, 0, 0.0) == pytest.approx(0.95)
    assert class_quantile(conf, pred, 0, 1.0) == pytest.approx(0.1)
    assert class_quantile(conf, pred, 1, 0.5) is None


def test_clip_adaptive_thresholds_by_hand_with_absent_class_and_ema():
    conf, pred = clip_instance()
    theta0 = np.full(4, 0.9)
    # alpha 0.5, gamma 1: portion = 0.5 * 0.9 = 0.45 for every class at theta 0.9.
    theta1 = adaptive_thresholds(conf, pred, theta0, alpha=0.5, beta=0.9, gamma=1.0)
    # class 0: Psi = 0.6 -> 0.9*0.9 + 0.1*0.6 = 0.87; class 1 absent: keeps 0.9;
    # class 2: one pixel, Psi = 0.99 -> 0.909; class 3: one pixel 0.5 -> 0.86.
    np.testing.assert_allclose(theta1, [0.87, 0.9, 0.909, 0.86])
    # Second clip: the EMA starts from theta1, and the portion uses the previous theta (0.87 for class 0).
    theta2 = adaptive_thresholds(conf, pred, theta1, alpha=0.5, beta=0.9, gamma=1.0)
    # class 0: portion 0.435 -> index floor(4.35) = 4 -> Psi 0.6 -> 0.9*0.87 + 0.06 = 0.843
    assert theta2[0] == pytest.approx(0.843)
    assert theta2[1] == pytest.approx(0.9)


def test_gamma_shrinks_the_portion_of_hard_classes():
    conf, pred = clip_instance()
    theta = np.array([0.5, 0.9, 0.9, 0.9])
    # portion for class 0: 1.0 * 0.5^2 = 0.25 -> index floor(2.5) = 2 -> 0.8
    out = adaptive_thresholds(conf, pred, theta, alpha=1.0, beta=0.0, gamma=2.0)
    assert out[0] == pytest.approx(0.8)


def test_thresholds_stay_below_one():
    conf = np.ones((1, 2, 2))
    pred = np.zeros((1, 2, 2), int)
    out = adaptive_thresholds(conf, pred, np.array([0.999]), alpha=0.2, beta=0.0, gamma=8)
    assert out[0] < 1.0


def test_labels_and_class_balanced_thresholds():
    conf, pred = clip_instance()
    theta = class_balanced_thresholds([("c", (conf, pred))], portion=0.2, num_classes=4)
    # class 0 top 20%: index 2 -> 0.8; absent class 1 -> 1 (never labelled)
    assert theta[0] == pytest.approx(0.8) and theta[1] == 1.0
    labels = label_with_thresholds(conf, pred, theta)
    assert labels[0, 0].tolist() == [0, 0, 255, 255, 255, 255]          # only > 0.8 kept
    assert labels[1, 0, 4] == 255                                       # 0.99 is not > 0.99


def test_aggregation_with_occluded_and_out_of_frame_neighbours():
    """Eq. 10 on a 3-frame clip of 2 x 4 pixels, 2 classes (class-0 probability checked by hand)."""
    import torch

    from videoda.domain_adaptation.pseudo_labels import aggregate_clip

    images = np.full((3, 2, 4, 3), 128, np.uint8)
    images[2, :, 1] = 250                       # frame 2, column 1: a different colour (occluded content)
    probs = torch.zeros(3, 2, 2, 4)
    for t, p0 in enumerate([1.0, 0.0, 0.2]):
        probs[t, 0], probs[t, 1] = p0, 1 - p0

    def flow(a, b):
        f = np.zeros((2, 4, 2), np.float32)
        if (a, b) == (1, 2):
            f[..., 0] = 1.0                     # frame 1 sees frame 2 one pixel to the right
        return f

    agg = aggregate_clip(probs, images, flow, alpha=1.0, threshold=0.7)[:, 0]
    # frame 0: itself and frame 1 -> (1 + 0) / 2
    np.testing.assert_allclose(agg[0], 0.5)
    # frame 1: col 0 reads frame 2's col 1 (occluded) -> (0 + 1) / 2; cols 1-2 -> (0 + 1 + 0.2) / 3;
    # col 3 reads outside frame 2 -> not counted -> (0 + 1) / 2
    np.testing.assert_allclose(agg[1], [[0.5, 0.4, 0.4, 0.5]] * 2, rtol=1e-6)
    # frame 2: col 1 differs from frame 1 -> itself only; elsewhere (0.2 + 0) / 2
    np.testing.assert_allclose(agg[2], [[0.1, 0.2, 0.1, 0.1]] * 2, rtol=1e-6)
    # the aggregated maps are still distributions
    np.testing.assert_allclose(aggregate_clip(probs, images, flow, 1.0, 0.7).sum(1), 1.0, rtol=1e-6)


def shifted_pair():
    """Frame t sees the reference frame shifted one pixel to the right: F_{t->ref} = (+1, 0)."""
    import torch

    labels = torch.tensor([[[1, 1, 2, 2, 255]]])
    ref = torch.tensor([[[0, 1, 1, 3, 2]]])           # ref shifted: ref[x + 1] should equal labels[x]
    flow = torch.zeros(1, 2, 1, 5)
    flow[:, 0] = 1.0
    return labels, ref, flow


def test_cutout_keeps_only_agreeing_labels_on_a_known_shift():
    from videoda.domain_adaptation.pseudo_labels import cutout_refine

    labels, ref, flow = shifted_pair()
    # warped ref onto t: [ref1, ref2, ref3, ref4, out] = [1, 1, 3, 2, 255]
    assert cutout_refine(labels, ref, flow).tolist() == [[[1, 1, 255, 2, 255]]]


def test_fillin_fills_only_unlabelled_visible_pixels():
    import torch

    from videoda.domain_adaptation.pseudo_labels import fillin_refine

    labels = torch.tensor([[[1, 255, 255, 2, 255]]])
    ref = torch.tensor([[[0, 1, 7, 3, 2]]])
    flow = torch.zeros(1, 2, 1, 5)
    flow[:, 0] = 1.0
    images = torch.full((1, 3, 1, 5), 100, dtype=torch.uint8)
    ref_images = images.clone()
    ref_images[..., 3] = 255                         # what pixel 2 of frame t sees in the reference: occluded
    out = fillin_refine(labels, ref, flow, images, ref_images, alpha=1.0, threshold=0.7)
    # pixel 1 <- ref[2] = 7 (visible); pixel 2 would read ref[3] but it is occluded; pixel 4 reads out of frame
    assert out.tolist() == [[[1, 7, 255, 2, 255]]]


def test_labels_at_proportion_bisects_the_knob_by_hand():
    """Table 7's protocol: the knob (alpha, CBST's portion) is tuned until the labelled share is the target.
    One clip, one class, confidences 0.05 .. 0.95: with beta = 0 and gamma = 0 the clip threshold is the value
    at index floor(alpha * 10) of the descending list, and labels are the pixels strictly above it, so a share
    of 0.3 labels the three most confident pixels."""
    conf = np.linspace(0.05, 0.95, 10, dtype=np.float32).reshape(1, 2, 5)
    pred = np.zeros((1, 2, 5), np.uint8)
    cfg = label_config(pseudo_label="clip", alpha=0.5, beta=0.0, gamma=0.0, init_theta=0.9)
    alpha, reached = knob_at_proportion([("a", (conf, pred))], cfg, 0.3)
    assert reached == pytest.approx(0.3) and 0.3 <= alpha < 0.4
    labels, _ = labels_of([("a", (conf, pred))], dataclasses.replace(cfg, alpha=alpha))
    kept = labels["a"] != IGNORE_ID
    assert kept.sum() == 3 and np.all(conf[kept] > 0.65)
    portion, reached = knob_at_proportion([("a", (conf, pred))], dataclasses.replace(cfg, pseudo_label="cbst"), 0.6)
    assert reached == pytest.approx(0.6) and 0.6 <= portion < 0.7
    # Out of reach (all confidences equal: nothing is strictly above the threshold): the nearest end.
    flat = np.full((1, 2, 5), 0.5, np.float32)
    _, reached = knob_at_proportion([("a", (flat, pred))], cfg, 0.3)
    assert reached == 0.0


def test_table7_scores_each_generator_at_the_same_proportion():
    from types import SimpleNamespace
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (4, 6, 8)).astype(np.uint8)
    clips = [SimpleNamespace(name="c", labeled=np.array([True, False, True, False]), labels=gt)]
    pred = np.where(rng.random(gt.shape) < 0.8, gt, (gt + 1) % 3).astype(np.uint8)
    conf = np.where(pred == gt, 0.6, 0.4) + 0.3 * rng.random(gt.shape)
    single = [("c", (conf.astype(np.float32), pred))]
    aggregated = [("c", (conf.astype(np.float32), gt.copy()))]     # a perfect "aggregated" prediction
    cfg = label_config(pseudo_label="clip_agg", alpha=0.5, beta=0.0, gamma=0.0, init_theta=0.9,
                       equal_proportions=(0.5,))
    out = table7_p_miou({SINGLE_FRAME: single, AGGREGATED: aggregated}, clips, cfg)
    assert set(out) == {"0.5"} and set(out["0.5"]) == {"cb", "ia", "ours"}
    assert all(abs(r["proportion"] - 50) < 5 for r in out["0.5"].values())
    assert out["0.5"]["ours"]["p_miou"] == 100.0 and out["0.5"]["cb"]["p_miou"] < 100.0


# --- the generators' registry ------------------------------------------------------------------------------

def test_registry_describes_each_generator():
    import yaml

    from helpers import REPO

    assert GENERATORS == {"cbst": Generator(CLASS_BALANCED), "iast": Generator(IMAGE), "clip": Generator(CLIP),
                          "clip_agg": Generator(CLIP, aggregate=True)}
    assert [name for name, g in GENERATORS.items() if g.needs_whole_set] == ["cbst"]
    assert {name: g.knob for name, g in GENERATORS.items()} == {"cbst": "cbst_portion", "iast": "alpha",
                                                                 "clip": "alpha", "clip_agg": "alpha"}
    # Table 7's "ours" is the clip-adaptive generator on aggregated predictions; CB and IA see single frames.
    assert TABLE7_GENERATORS == {"cb": "cbst", "ia": "iast", "ours": "clip_agg"}
    assert [GENERATORS[k].aggregate for k in TABLE7_GENERATORS.values()] == [False, False, True]
    with pytest.raises(ValueError, match="threshold rule"):
        Generator("per_pixel")
    # params.yaml's choice is validated against the registry's names
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert stage_config("pseudo_labels", params).labels.pseudo_label in GENERATORS
    params["vst"]["pseudo_label"] = "clip_aggregated"
    with pytest.raises(ParamError, match="'cbst', 'iast', 'clip', 'clip_agg'"):
        stage_config("pseudo_labels", params)


def test_label_stream_follows_the_threshold_rule_of_the_entry():
    """Two frames, one class: per image (IAST) the second frame gets its own threshold, per clip both share one;
    ``clip`` and ``clip_agg`` threshold alike (aggregation happens before, on the maxima)."""
    conf = np.array([[[0.9, 0.8, 0.7, 0.6]], [[0.5, 0.4, 0.3, 0.2]]], np.float32)
    pred = np.zeros(conf.shape, np.uint8)
    cfg = label_config(pseudo_label="clip", alpha=0.5, beta=0.0, gamma=0.0, init_theta=0.9, cbst_portion=0.5)
    kept = {k: (labels_of([("a", (conf, pred))], dataclasses.replace(cfg, pseudo_label=k))[0]["a"] != IGNORE_ID)
            .sum(axis=(1, 2)).tolist() for k in GENERATORS}
    assert kept["iast"] == [2, 2]          # each frame: above its own top-50% value
    assert kept["clip"] == kept["clip_agg"] == kept["cbst"] == [4, 0]      # one threshold (0.5) for the clip
    with pytest.raises(ValueError, match="vst.pseudo_label must be one of"):
        labels_of([("a", (conf, pred))], dataclasses.replace(cfg, pseudo_label="ours"))


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_make_pseudo_labels_aggregates_only_for_aggregating_entries(kind, monkeypatch, tmp_path):
    """Without an observer each clip is predicted once, aggregated only for an aggregating generator; with one
    (the analysis) both kinds of maxima are made, from the same one prediction."""
    from types import SimpleNamespace

    import torch

    import videoda.domain_adaptation.pseudo_labels as pl

    calls = []

    def fake_maxima(model, clip, store, cfg, kinds):
        calls.append((clip.name, kinds))
        return {kind: (torch.full((1, 1, 2), 0.95), torch.zeros((1, 1, 2), dtype=torch.uint8)) for kind in kinds}

    monkeypatch.setattr(pl, "clip_maxima", fake_maxima)
    clips = [SimpleNamespace(name=n, frame_names=[f"{n}0"]) for n in ("a", "b")]
    theta = make_pseudo_labels(None, clips, None, label_config(pseudo_label=kind), tmp_path / "out")
    expected = AGGREGATED if GENERATORS[kind].aggregate else SINGLE_FRAME
    assert calls == [("a", (expected,)), ("b", (expected,))]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"] and theta.shape == (NUM_CLASSES,)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "out"]                 # the spill is gone
    with pytest.raises(ValueError, match="must be one of"):
        make_pseudo_labels(None, clips, None, label_config(pseudo_label="nope"), tmp_path / "other")
