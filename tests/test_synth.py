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


def test_benchmark_is_written_frame_by_frame_with_the_bytes_of_whole_sequences(tmp_path):
    """write_benchmark renders one frame at a time (iter_sequence) and appends each flow to its .npy file: the
    same random draws in the same order as rendering the whole sequence first (the code before), and the same
    bytes as np.save of the stacked flows."""
    import io

    from videoda.config.data import Synth
    from videoda.data.synth import Scene as Scene_, iter_sequence, shade, write_benchmark
    from videoda.utils.images import read_label_png, read_rgb

    def whole_sequence(seed, height, width, n_frames, style):      # the generator as it was
        rng = np.random.default_rng(seed)
        scene = Scene_(rng, height, width, n_frames)
        images, labels, flows = [], [], []
        for t in range(n_frames):
            r = scene.render(t)
            images.append(shade(scene, r, style, rng, t))
            labels.append(r[0])
            if t < n_frames - 1:
                flows.append(r[5])
        return np.stack(images), np.stack(labels), np.stack(flows)

    _, style = make_styles(0.6, seed=2)
    for old, new in zip(whole_sequence(9, 24, 40, 5, style), render_sequence(9, 24, 40, 5, style)):
        assert old.dtype == new.dtype and np.array_equal(old, new)
    assert [f is None for *_, f in iter_sequence(9, 24, 40, 5, style)] == [False] * 4 + [True]

    cfg = Synth(seed=2, shift=0.6, height=24, width=40, frames_per_clip=6, label_every=5, source_sequences=1,
                target_train_clips=1, target_val_clips=1)
    write_benchmark(tmp_path, cfg)
    source_style, target_style = make_styles(0.6, 2)
    images, labels, flows = whole_sequence(2 * 100003 + 1, 24, 40, 6, target_style)    # train clip 1: job 1
    expected = io.BytesIO()
    np.save(expected, flows)
    assert (tmp_path / "flow_gt/train/0001.npy").read_bytes() == expected.getvalue()
    frames = sorted((tmp_path / "cityscapes_vps/train/img_all").glob("*.png"))
    assert np.array_equal(np.stack([read_rgb(p) for p in frames]), images)
    src_images, src_labels, _ = whole_sequence(2 * 100003, 24, 40, 6, source_style)
    src = sorted((tmp_path / "viper/train/img").rglob("*.png"))
    assert np.array_equal(np.stack([read_rgb(p) for p in src]), src_images)
    lab = sorted((tmp_path / "viper/train/cls").rglob("*.png"))
    assert len(lab) == 6 and read_label_png(lab[0]).shape == src_labels[0].shape
