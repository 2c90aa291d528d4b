"""Scoring at the label files' resolution (``evaluate.resolution: labels``, DA-VSN's protocol): the network's
logits upsampled once from the output stride, bilinear with the corners aligned, to the original labels that
``prepare`` keeps (``labels_original.npy``), counted a frame at a time; against hand-computed cases."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from videoda.data import cityscapes_vps
from videoda.data.classes import DEFAULT
from videoda.data.clips import ORIGINAL_LABELS, Clip, load_clip, write_original_labels
from videoda.data.prepare import prepare_split
from videoda.errors import DataError, ParamError
from videoda.evaluate import evaluate_clips, predict_and_count, predict_at
from videoda.metrics import clip_counts

from helpers import dataset_settings


class CoarseModel(nn.Module):
    """A model whose logits at the output stride are ``coarse`` (C, h, w) for every frame."""

    def __init__(self, coarse):
        super().__init__()
        self.coarse = nn.Parameter(torch.as_tensor(coarse, dtype=torch.float32), requires_grad=False)

    def coarse_logits(self, x):
        return self.coarse.expand(len(x), *self.coarse.shape)

    def forward(self, x):
        return nn.functional.interpolate(self.coarse_logits(x), size=x.shape[-2:], mode="bilinear",
                                         align_corners=False)


def cfg(resolution, num_classes=2, label_stride=5, batch_size=2):
    classes = SimpleNamespace(num_classes=num_classes, names=[str(i) for i in range(num_classes)],
                              evaluated_ids=list(range(num_classes)))
    return SimpleNamespace(resolution=resolution, label_stride=label_stride, batch_size=batch_size, classes=classes)


# class 0's logit rises from 0 to 1 across two coarse columns, class 1's is 0.2 everywhere (one row)
RAMP = [[[0.0, 1.0]], [[0.2, 0.2]]]


def test_logits_are_upsampled_once_with_the_corners_aligned():
    # align_corners=True samples class 0 at x = 0, 1/4, 1/2, 3/4, 1 of the ramp: 0, .25, .5, .75, 1; above 0.2 from
    # the second pixel on. (align_corners=False would sample 0, .1, .5, .9, 1 and give class 1 two pixels.)
    pred = predict_at(CoarseModel(RAMP), np.zeros((1, 2, 4, 3), np.uint8), (1, 5))
    assert pred.tolist() == [[[1, 0, 0, 0, 0]]]


def test_a_clip_is_scored_at_its_original_labels_by_hand():
    # prepared at 2 x 4, labels kept at 1 x 5; pred [1, 0, 0, 0, 0] against gt [1, 1, 0, 0, 0]:
    # class 0: TP 3, FN 0, FP 1 -> IoU 3/4; class 1: TP 1, FN 1, FP 0 -> IoU 1/2; mIoU 62.5
    clip = Clip("c", np.zeros((1, 2, 4, 3), np.uint8), np.zeros((1, 2, 4), np.uint8), np.ones(1, bool),
                np.array(["f0"]), original_labels=np.array([[[1, 1, 0, 0, 0]]], np.uint8))
    preds, counts = predict_and_count(CoarseModel(RAMP), clip, cfg("labels"))
    assert preds.shape == (1, 1, 5) and counts["confusion"].tolist() == [[3, 0], [1, 1]]
    report, _ = evaluate_clips(CoarseModel(RAMP), [clip], cfg("labels"))
    assert report["miou"] == 62.5 and report["iou"] == {"0": 75.0, "1": 50.0}
    # the default is untouched: the model's forward at the prepared 2 x 4 (corners not aligned: class 0 sampled at
    # 0, .25, .75, 1), against the prepared labels (all class 0): class 0 IoU 6/8, class 1 0/2, mIoU 37.5
    report, _ = evaluate_clips(CoarseModel(RAMP), [clip], cfg("prepared"))
    assert report["iou"] == {"0": 75.0, "1": 0.0} and report["miou"] == 37.5


def test_counted_a_frame_at_a_time_equals_the_whole_clip():
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(3, 2, 3))
    labeled = np.array([True, False, True, False, False, True])
    original = rng.integers(0, 3, (3, 6, 9)).astype(np.uint8)
    original[0, 0, :4] = 255                       # void
    clip = Clip("c", rng.integers(0, 255, (6, 4, 6, 3), dtype=np.uint8), np.zeros((6, 4, 6), np.uint8), labeled,
                np.array([f"f{t}" for t in range(6)]), original_labels=original)
    preds, counts = predict_and_count(CoarseModel(coarse), clip, cfg("labels", num_classes=3, label_stride=1))
    whole = clip_counts(preds, original, 1, 3)
    assert all(np.array_equal(counts[k], whole[k]) for k in whole)
    assert np.array_equal(preds, predict_at(CoarseModel(coarse), clip.images[np.flatnonzero(labeled)], (6, 9)))


def test_without_original_labels_the_prepared_labels_are_the_originals():
    clip = Clip("c", np.zeros((1, 1, 5, 3), np.uint8), np.array([[[1, 1, 0, 0, 0]]], np.uint8), np.ones(1, bool),
                np.array(["f0"]))
    _, counts = predict_and_count(CoarseModel(RAMP), clip, cfg("labels"))
    assert counts["confusion"].tolist() == [[3, 0], [1, 1]]


def write_vps(root, size, annotated=(0, 2)):
    """A Cityscapes-VPS val split of one 3-frame clip at ``size``, frames ``annotated`` labelled (left half road,
    right half car, a void corner)."""
    h, w = size
    ids = np.zeros((h, w), np.uint8)
    ids[:, w // 2:] = 13                               # Cityscapes train id 13: car
    ids[0, 0] = 255
    for t in range(3):
        cityscapes_vps.write_frame(root, "val", 1, t, np.full((h, w, 3), 40 * t, np.uint8),
                                   ids if t in annotated else None)
    return ids


def test_prepare_keeps_the_labels_at_their_files_resolution(tmp_path):
    ids = write_vps(tmp_path / "vps", (8, 16))
    data = dataset_settings("cityscapes_vps", tmp_path / "vps", (4, 8))
    table = DEFAULT.table("cityscapes")
    [kept] = prepare_split(data, "val", tmp_path / "kept", keep_original=True)
    [plain] = prepare_split(data, "val", tmp_path / "plain")
    clip = load_clip(kept)
    expected = np.vectorize(lambda i: table.get(int(i), 255))(ids).astype(np.uint8)
    assert clip.original_labels.shape == (2, 8, 16)
    assert np.array_equal(clip.original_labels[0], expected) and np.array_equal(clip.original_labels[1], expected)
    # the prepared files are those of before, and nothing is kept when the label files have the prepared size
    assert sorted(p.name for p in kept.iterdir()) == sorted([*(p.name for p in plain.iterdir()), ORIGINAL_LABELS])
    assert all((kept / p.name).read_bytes() == p.read_bytes() for p in plain.iterdir())
    [same] = prepare_split(dataset_settings("cityscapes_vps", tmp_path / "vps", (8, 16)), "val", tmp_path / "same",
                           keep_original=True)
    assert not (same / ORIGINAL_LABELS).exists() and load_clip(same).original_labels is None


def test_original_labels_of_the_wrong_count_are_an_error_naming_the_file(tmp_path):
    write_vps(tmp_path / "vps", (8, 16))
    [kept] = prepare_split(dataset_settings("cityscapes_vps", tmp_path / "vps", (4, 8)), "val", tmp_path / "kept",
                           keep_original=True)
    write_original_labels(kept / ORIGINAL_LABELS, [np.zeros((8, 16), np.uint8)], 1)
    with pytest.raises(DataError, match=f"{ORIGINAL_LABELS}: expected uint8 \\(2, H, W\\)"):
        load_clip(kept)
    with pytest.raises(DataError, match="label map 1 has shape"):
        write_original_labels(tmp_path / "x.npy", [np.zeros((8, 16), np.uint8), np.zeros((4, 8), np.uint8)], 2)
    assert not (tmp_path / "x.npy").exists()


def test_evaluate_config_reads_the_resolution():
    from helpers import composed
    from videoda.config.stages import stage_config
    params = composed()
    assert stage_config("evaluate", params).resolution == "prepared"          # the default: as before
    params["evaluate"]["resolution"] = "labels"
    assert stage_config("evaluate", params).resolution == "labels"
    params["vat"]["validate_every"] = 100
    assert stage_config("vat", params).train.validation.resolution == "labels"   # the trainers score alike
    params["evaluate"]["resolution"] = "full"
    with pytest.raises(ParamError, match="evaluate.resolution"):
        stage_config("evaluate", params)
