"""The embedded benchmark: determinism, exact ground-truth flow, the shift knob."""

import numpy as np
import pytest

from videoda.data.classes import CLASSES
from videoda.data.synth import Scene, make_styles, render_sequence


def test_generator_is_deterministic_in_the_seed():
    _, style = make_styles(0.6, seed=3)
    a = render_sequence(11, 32, 64, 4, style)
    b = render_sequence(11, 32, 64, 4, style)
    c = render_sequence(12, 32, 64, 4, style)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_styles_are_deterministic_and_shift_zero_means_no_palette_shift():
    s1, t1 = make_styles(0.6, seed=0)
    _, t2 = make_styles(0.6, seed=0)
    np.testing.assert_array_equal(t1.palette, t2.palette)
    s0, t0 = make_styles(0.0, seed=0)
    np.testing.assert_array_equal(s0.palette, t0.palette)
    assert t0.noise_std == 0 and t0.occluder_prob == 0
    assert np.abs(t1.palette - s1.palette).max() > 10


def test_shift_out_of_range_names_the_param():
    with pytest.raises(ValueError, match="synth.shift"):
        make_styles(1.5, seed=0)


def test_ground_truth_flow_moves_each_surface_onto_itself():
    """Forward flow maps a pixel of frame t onto the same class in frame t + 1 (up to occlusion)."""
    scene = Scene(np.random.default_rng(5), 64, 128, 10)
    agree, total = 0, 0
    for t in range(5):
        lab0, *_, flow = scene.render(t)
        lab1 = scene.render(t + 1)[0]
        ys, xs = np.mgrid[0:64, 0:128]
        x1 = np.round(xs + 0.5 + flow[..., 0] - 0.5).astype(int)
        y1 = np.round(ys + 0.5 + flow[..., 1] - 0.5).astype(int)
        inside = (x1 >= 0) & (x1 < 128) & (y1 >= 0) & (y1 < 64)
        agree += (lab1[y1[inside], x1[inside]] == lab0[inside]).sum()
        total += inside.sum()
    assert agree / total > 0.93
    # ...and the scene really moves: several pixels per frame near the bottom.
    assert np.abs(flow[-10:]).max() > 3


def test_flow_is_wrong_if_shifted():
    """The check above can fail: a flow off by 3 px agrees much less."""
    scene = Scene(np.random.default_rng(5), 64, 128, 4)
    lab0, *_, flow = scene.render(1)
    lab1 = scene.render(2)[0]
    ys, xs = np.mgrid[0:64, 0:128]

    def agreement(f):
        x1 = np.round(xs + f[..., 0]).astype(int)
        y1 = np.round(ys + f[..., 1]).astype(int)
        m = (x1 >= 0) & (x1 < 128) & (y1 >= 0) & (y1 < 64)
        return (lab1[y1[m], x1[m]] == lab0[m]).mean()

    assert agreement(flow) > agreement(flow + np.array([0, 3.0], np.float32)) + 0.02


def test_every_class_appears():
    _, style = make_styles(0.6, seed=0)
    seen = set()
    for seed in range(6):
        seen |= set(np.unique(render_sequence(seed, 64, 128, 2, style)[1]).tolist())
    assert seen == set(range(len(CLASSES)))
