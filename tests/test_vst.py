"""VST pieces: the regularisers' values, pseudo-label PNGs, online refinement of a batch of pairs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from videoda.data.clips import Clip
from videoda.data.pairs import PairLoader
from videoda.domain_adaptation.losses import ignored_entropy_loss, kld_regulariser
from videoda.domain_adaptation.self_training import PseudoLabelPairs, VSTBatches, vst_losses
from videoda.flow.store import FlowWriter
from videoda.utils.images import read_label_png, write_ids


def test_entropy_regulariser_counts_only_ignored_pixels():
    # pixel 0: uniform over 2 classes (entropy log 2), pixel 1: certain (entropy ~0)
    logits = torch.tensor([[[[0.0, 50.0]], [[0.0, 0.0]]]])          # (1, 2, 1, 2)
    assert ignored_entropy_loss(logits, torch.tensor([[[255, 255]]])).item() == pytest.approx(math.log(2) / 2)
    assert ignored_entropy_loss(logits, torch.tensor([[[255, 0]]])).item() == pytest.approx(math.log(2))
    assert ignored_entropy_loss(logits, torch.tensor([[[1, 0]]])).item() == 0.0


def test_kld_regulariser_by_hand():
    # p = (0.8, 0.2): KL(u || p) = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
    logits = torch.log(torch.tensor([0.8, 0.2])).view(1, 2, 1, 1).repeat(1, 1, 1, 2)
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert kld_regulariser(logits, torch.tensor([[[0, 255]]])).item() == pytest.approx(expected, rel=1e-5)
    assert kld_regulariser(logits, torch.tensor([[[255, 255]]])).item() == 0.0
    uniform = torch.zeros(1, 2, 1, 1)
    assert kld_regulariser(uniform, torch.tensor([[[1]]])).item() == pytest.approx(0.0, abs=1e-7)


def test_vst_losses_weigh_the_regulariser_and_the_source_term():
    logits = torch.zeros(1, 2, 3, 1, 1)                            # (B, T, C, H, W), uniform
    batch = {"labels": torch.tensor([[[[0]], [[255]]]]), "source_labels": torch.tensor([[[[1]], [[1]]]])}
    outputs = {"logits": logits, "source_logits": logits}
    losses = {}
    for term in vst_losses("entropy", 0.5, 2.0):
        losses.update(term(outputs, batch))
    assert losses["seg_t"].item() == pytest.approx(math.log(3))              # frame 0 only
    assert losses["reg"].item() == pytest.approx(0.5 * math.log(3))          # frame 1's ignored pixel
    assert losses["seg_s"].item() == pytest.approx(2.0 * 2 * math.log(3))   # both source frames


def test_pseudo_label_pngs_round_trip(tmp_path):
    labels = np.array([[0, 14, 255], [3, 255, 7]], np.uint8)
    write_ids(tmp_path / "f.png", labels)
    np.testing.assert_array_equal(read_label_png(tmp_path / "f.png"), labels)


def shift_store(path):
    """A flow store of a clip "c" of 2 frames of 1 x 5 whose content moves one pixel right per frame:
    F_{a->b} = (b - a, 0)."""
    flows = {(a, b): np.tile(np.array([b - a, 0], np.float32), (1, 5, 1)) for a, b in ((0, 1), (1, 0))}
    with FlowWriter(path, [1], 1, 5, "gt") as writer:
        writer.add_clip("c", 2, flows)
    return path


def test_refinement_applies_cutout_to_both_frames_before_flipping(tmp_path):
    pseudo = {"c": np.array([[[1, 2, 2, 3, 3]], [[9, 1, 2, 4, 3]]], np.uint8)}   # frame 1 = frame 0 moved right
    clip = Clip("c", np.zeros((2, 1, 5, 3), np.uint8), np.full((2, 1, 5), 255, np.uint8), np.zeros(2, bool),
                np.array(["a", "b"]))
    pairs = PseudoLabelPairs([clip], 1, pseudo, "cutout", shift_store(tmp_path / "f.h5"))
    labels = VSTBatches(PairLoader(pairs, 1, seed=0, hflip=False), "cutout", 2.0, 0.7).sample()["labels"][0]
    # frame 1 reads frame 0 one pixel to the left: [out, 1, 2, 2, 3] -> keep 1, 2, 3 at x = 1, 2, 4
    assert labels[1].tolist() == [[255, 1, 2, 255, 3]]
    # frame 0 reads frame 1 one pixel to the right: [1, 2, 4, 3, out] -> keep x = 0, 1 and 3
    assert labels[0].tolist() == [[1, 2, 255, 3, 255]]
    none = PairLoader(PseudoLabelPairs([clip], 1, pseudo, "none"), 1, seed=0, hflip=False)
    assert VSTBatches(none, "none", 2.0, 0.7).sample()["labels"][0].tolist() == pseudo["c"].tolist()
    # flipped (seed 2 flips its one pair): the refined labels, mirrored
    flipped = VSTBatches(PairLoader(pairs, 1, seed=2, hflip=True), "cutout", 2.0, 0.7).sample()["labels"][0]
    assert flipped.tolist() == labels.flip(-1).tolist()


def test_vst_config_reads_params_and_names_a_bad_key():
    from videoda.config.fields import load_params
    from videoda.config.stages import stage_config
    from videoda.errors import ParamError

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = stage_config("vst", params)
    assert cfg.tau == params["flow"]["tau"] and cfg.refine == params["vst"]["refine"]
    params["vst"]["refine"] = "sideways"
    with pytest.raises(ParamError, match=r"vst\.refine"):
        stage_config("vst", params)


def test_a_later_rounds_pseudo_labels_go_to_files_and_read_back_as_generated(tmp_path):
    """VST's rounds after the first write their regenerated labels clip by clip and read them a pair at a time:
    the pairs read back are exactly the labels generated in memory."""
    import dataclasses

    from videoda.config.fields import read_params, with_overrides
    from videoda.config.stages import stage_config
    from videoda.domain_adaptation.pseudo_labels import SINGLE_FRAME, clip_maxima, label_stream
    from videoda.domain_adaptation.self_training import regenerate_pseudo_labels
    from videoda.model import DeepLabV2

    torch.manual_seed(0)
    model = DeepLabV2(15, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,), group_norm_groups=8)
    rng = np.random.default_rng(0)
    clips = [Clip(name, rng.integers(0, 256, (3, 16, 32, 3), dtype=np.uint8), np.full((3, 16, 32), 255, np.uint8),
                  np.zeros(3, bool), np.array([f"{name}_{t}" for t in range(3)])) for name in ("a", "b")]
    params = with_overrides(read_params(Path(__file__).resolve().parents[1] / "params.yaml"),
                            {"vst.pseudo_label": "cbst"})      # labels a portion of each class, via a spill
    cfg = stage_config("vst", params).labels
    cfg = dataclasses.replace(cfg, batch_size=2)
    # in memory: each clip's single-frame maxima (CBST thresholds them), labelled in one list
    maxima = [(clip.name, clip_maxima(model, clip, None, cfg, (SINGLE_FRAME,))[SINGLE_FRAME]) for clip in clips]
    expected = {name: labels.numpy() for name, labels, _ in label_stream(maxima, cfg)}
    files = regenerate_pseudo_labels(model, clips, None, cfg, tmp_path / "labels")
    for clip in clips:
        assert np.array_equal(files[clip.name][[0, 1, 2]], expected[clip.name])
    assert (expected["a"] != 255).any()                      # something was labelled: the check can fail
