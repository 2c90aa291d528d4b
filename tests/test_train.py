"""Training utilities: the poly schedule, the pair sampler, the segmentation loss."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from videoda.data.classes import NUM_CLASSES
from videoda.data.clips import Clip
from videoda.data.pairs import PairDataset, PairLoader
from videoda.domain_adaptation.losses import cross_entropy_2d
from videoda.domain_adaptation.train import SUPERVISED, make_optimizer, poly_lr_, seed_everything, train
from videoda.errors import DataError
from videoda.model import DeepLabV2


def clip(n, labeled_every=1, name="c"):
    """Frames of 4 x 6 pixels that vary across the width, so that a horizontal flip shows: pixel (y, x) of frame t
    is 10 t + x; a labelled frame's label is 3 + x (void elsewhere)."""
    labeled = np.array([(t + 1) % labeled_every == 0 for t in range(n)])
    cols = np.arange(6, dtype=np.uint8)
    labels = np.where(labeled[:, None, None], np.broadcast_to(3 + cols, (n, 4, 6)), 255).astype(np.uint8)
    images = (10 * np.arange(n, dtype=np.uint8)[:, None, None, None] + cols[None, None, :, None]
              + np.zeros((1, 4, 6, 3), np.uint8))
    return Clip(name, images, labels, labeled, np.array([f"{name}_{t}" for t in range(n)]))


def test_poly_schedule_updates_every_param_group():
    w1, w2 = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = make_optimizer([{"params": [w1], "lr": 1.0}, {"params": [w2], "lr": 10.0}], "sgd", 1.0)
    poly_lr_(opt, 50, 100, power=0.9)
    factor = 0.5 ** 0.9
    assert opt.param_groups[0]["lr"] == pytest.approx(factor)
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * factor)


def test_pairs_are_tau_apart_and_flipped_together():
    s = PairLoader(PairDataset([clip(8)], tau=3), batch_size=16, seed=0, hflip=True)
    batch = s.sample()
    assert batch["images"].shape == (16, 2, 4, 6, 3) and batch["labels"].shape == (16, 2, 4, 6)
    images, labels = batch["images"][..., 0].long(), batch["labels"]         # (B, 2, H, W)
    t_minus, t = images[:, 0, 0].min(1).values // 10, images[:, 1, 0].min(1).values // 10
    assert torch.all(t - t_minus == 3)
    # Each frame's and each label map's columns run left to right (not flipped) or right to left (flipped).
    ramp = torch.arange(6)
    image_flipped = [[bool(torch.equal(images[b, i] % 10, ramp.flip(0).expand(4, 6))) for i in (0, 1)]
                     for b in range(16)]
    label_flipped = [[bool(torch.equal(labels[b, i] - 3, ramp.flip(0).expand(4, 6))) for i in (0, 1)]
                     for b in range(16)]
    for b in range(16):
        for i in (0, 1):
            assert image_flipped[b][i] or torch.equal(images[b, i] % 10, ramp.expand(4, 6))
            assert label_flipped[b][i] or torch.equal(labels[b, i] - 3, ramp.expand(4, 6))
    flipped = [fi[0] for fi in image_flipped]
    assert all(fi[0] == fi[1] == fl[0] == fl[1] for fi, fl in zip(image_flipped, label_flipped))
    assert any(flipped) and not all(flipped)            # both cases occur with hflip=True
    unflipped = PairLoader(PairDataset([clip(8)], tau=3), batch_size=16, seed=0, hflip=False).sample()
    assert torch.equal(unflipped["labels"] - 3, ramp.expand(16, 2, 4, 6))


def test_oracle_pairs_have_a_labelled_frame_t():
    s = PairLoader(PairDataset([clip(10, labeled_every=5)], tau=1, require_label=True), batch_size=32, seed=0)
    labels = s.sample()["labels"]
    assert torch.all(labels[:, 1] != 255) and torch.all(labels[:, 0] == 255)


def test_too_short_clip_is_an_error_naming_it():
    with pytest.raises(DataError, match="'short'.*too short"):
        PairDataset([clip(2, name="short")], tau=2)


def test_sampler_is_deterministic():
    a = PairLoader(PairDataset([clip(9), clip(7, name="d")], 1), 4, seed=7).sample()
    b = PairLoader(PairDataset([clip(9), clip(7, name="d")], 1), 4, seed=7).sample()
    assert torch.equal(a["images"], b["images"])


def test_cross_entropy_ignores_void_and_survives_an_unlabelled_batch():
    logits = torch.zeros(1, 3, 1, 2, requires_grad=True)
    labels = torch.tensor([[[0, 255]]])
    assert cross_entropy_2d(logits, labels).item() == pytest.approx(np.log(3))
    empty = cross_entropy_2d(logits, torch.full((1, 1, 2), 255))
    assert empty.item() == 0.0
    empty.backward()   # still differentiable


def test_a_run_is_the_same_bytes_whether_new_tensors_are_filled_or_not():
    """Deterministic mode's NaN fill of every new tensor is turned off (``set_deterministic``: it costs 3-7% of a
    CPU step): no kernel of a training step reads uninitialised memory, so the weights are the same bytes."""
    def run(fill):
        seed_everything(0)
        torch.utils.deterministic.fill_uninitialized_memory = fill       # after set_deterministic turned it off
        model = DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,))
        optimizer = make_optimizer(model.param_groups(1e-3), "adam", 1e-3)
        loader = PairLoader(PairDataset([clip(4)], 1, require_label=True), 2, seed=0)
        cfg = SimpleNamespace(iterations=3, loss_limit=0, optim=SimpleNamespace(poly_power=0.9))
        train(model, optimizer, loader, SUPERVISED, cfg)
        return [p.detach().clone() for p in model.parameters()]

    try:
        filled, unfilled = run(True), run(False)
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = False
    assert all(torch.equal(a, b) for a, b in zip(filled, unfilled))
