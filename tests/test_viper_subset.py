"""VIPER as commonly downloaded: JPEG frames, labels on a subset of frames, sequences chosen by condition; and the
tube matching loss on pairs with an unlabelled frame."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import dataset_settings

from videoda.config.data import Prepare
from videoda.config.fields import load_params, read_config
from videoda.data import viper
from videoda.data.classes import IGNORE_ID, VIPER_CLASSES
from videoda.data.clips import load_clip
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.data.prepare import prepare_split
from videoda.domain_adaptation.adversarial import DiceTerm
from videoda.domain_adaptation.losses import single_frame_dice_loss, tube_dice_loss
from videoda.errors import DataError, ParamError

REPO = Path(__file__).resolve().parents[1]
H, W = 16, 24
V = {name: i for i, name in enumerate(VIPER_CLASSES)}
FRAMES = range(0, 21)          # 21 consecutive frames, labelled every 10th (0, 10, 20), as DA-VSN's list


def frame_image(seq, t):
    y, x = np.mgrid[0:H, 0:W]
    return np.dstack([x * 9 + t, y * 12 + seq * 20, (x + y) * 4]).astype(np.uint8)


def frame_ids(t):
    ids = np.full((H, W), V["road"], np.uint8)
    ids[: 4 + t % 5] = V["sky"]
    ids[8:12, 4:12] = V["car"]
    return ids


def write_viper(root, sequences=("001", "002", "003"), label_every=10, conditions=None):
    """VIPER's published layout by hand: ``img/<seq>/<seq>_<frame>.jpg`` for every frame, indexed ``cls`` PNGs
    for every ``label_every``-th frame; ``conditions`` ({seq: condition}) -> conditions.csv."""
    for s, seq in enumerate(sequences):
        img, cls = root / "train" / "img" / seq, root / "train" / "cls" / seq
        img.mkdir(parents=True)
        cls.mkdir(parents=True)
        for t in FRAMES:
            stem = f"{seq}_{t:05d}"
            cv2.imwrite(str(img / f"{stem}.jpg"), cv2.cvtColor(frame_image(s, t), cv2.COLOR_RGB2BGR))
            if t % label_every == 0:
                cv2.imwrite(str(cls / f"{stem}.png"), frame_ids(t))
    if conditions is not None:
        viper.write_conditions(root, "train", conditions)
    return root


def test_labels_on_every_10th_frame_and_jpeg_frames(tmp_path):
    root = write_viper(tmp_path / "viper")
    out = tmp_path / "prepared" / "source"
    prepare_split(dataset_settings("viper", root, (H, W)), "train", out, min_frames=2)
    clip = load_clip(out / "002")
    assert len(clip) == 21 and list(clip.frame_names[:2]) == ["002_00000", "002_00001"]
    np.testing.assert_array_equal(np.flatnonzero(clip.labeled), [0, 10, 20])
    assert (clip.labels[~clip.labeled] == IGNORE_ID).all()           # unlabelled frames are void
    assert (clip.labels[10][:4] == 9).all() and (clip.labels[10][8:12, 4:12] == 11).all()   # sky, car
    assert np.abs(clip.images[7].astype(int) - frame_image(1, 7)).mean() < 4    # the JPEG frame, lossy


def test_pairs_always_have_a_labelled_frame_t(tmp_path):
    root = write_viper(tmp_path / "viper")
    prepare_split(dataset_settings("viper", root, (H, W)), "train", tmp_path / "p" / "source")
    clips = load_split(tmp_path / "p", "source")
    for tau in (1, 3, 10):
        sampler = PairLoader(PairDataset(clips, tau, require_label=True), batch_size=16, seed=tau)
        assert {t for _, t in sampler.dataset.index} == {10, 20}
        for _ in range(5):
            batch = sampler.sample()
            assert batch["labeled"][:, 1].all()                       # frame t is labelled
            assert (batch["labels"][:, 1] != IGNORE_ID).any(dim=(1, 2)).all()
            assert batch["labeled"][:, 0].tolist() == [tau == 10] * 16   # t - tau only when tau = 10


def test_every_frame_labelled_draws_the_same_pairs_as_before(tmp_path):
    root = write_viper(tmp_path / "viper", label_every=1)
    prepare_split(dataset_settings("viper", root, (H, W)), "train", tmp_path / "p" / "source")
    clips = load_split(tmp_path / "p", "source")
    a = PairLoader(PairDataset(clips, 1, require_label=True), 8, seed=3).sample()
    b = PairLoader(PairDataset(clips, 1), 8, seed=3).sample()
    assert all(torch.equal(a[k], b[k]) for k in a) and a["labeled"].all()


# --- sequences by condition ---------------------------------------------------------------------------------

def names(specs):
    return [s.name for s in specs]


def test_conditions_file_selects_sequences(tmp_path):
    root = write_viper(tmp_path / "viper", conditions={1: "day", 2: "night", 3: "day"})
    assert (root / "train" / "conditions.csv").read_text().splitlines()[:2] == ["sequence,condition", "001,day"]
    assert names(viper.list_sequences(root, "train", conditions=("day",))) == ["001", "003"]
    assert names(viper.list_sequences(root, "train", conditions=("night", "snow"))) == ["002"]
    assert names(viper.list_sequences(root, "train")) == ["001", "002", "003"]      # no filter
    with pytest.raises(DataError, match=r"conditions.csv: no sequence .* among \['rain'\]"):
        viper.list_sequences(root, "train", conditions=("rain",))
    out = tmp_path / "prepared"
    prepare_split(dataset_settings("viper", root, (H, W), conditions=("day",)), "train", out)
    assert sorted(p.name for p in out.iterdir()) == ["001", "003"]


def test_conditions_file_absent_needs_an_explicit_list(tmp_path):
    root = write_viper(tmp_path / "viper")
    with pytest.raises(DataError, match=r"conditions.csv: VIPER conditions file not found; .*prepare.source.sequences"):
        viper.list_sequences(root, "train", conditions=("day",))
    assert names(viper.list_sequences(root, "train", conditions=("day",), sequences=("3", "001"))) == ["001", "003"]
    listing = tmp_path / "day_sequences.txt"
    listing.write_text("# VIPER day sequences\n002\n\n003  # trailing comment\n")
    assert names(viper.list_sequences(root, "train", sequences=str(listing))) == ["002", "003"]


def test_a_bad_sequence_entry_is_one_line_naming_it(tmp_path):
    root = write_viper(tmp_path / "viper")
    with pytest.raises(DataError, match=r"^prepare.source.sequences: sequence '077' is not in .*img$") as e:
        viper.list_sequences(root, "train", sequences=("001", "077"))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="nowhere.txt: sequence list file"):
        viper.list_sequences(root, "train", sequences=str(tmp_path / "nowhere.txt"))


def test_bad_conditions_files(tmp_path):
    root = write_viper(tmp_path / "viper")
    path = root / "train" / "conditions.csv"
    path.write_text("sequence,condition\n001,day\n002,fog\n")
    with pytest.raises(DataError, match=r"conditions.csv:3: .*'002,fog'"):
        viper.list_sequences(root, "train", conditions=("day",))
    path.write_text("sequence,condition\n001,day\n003,day\n")
    with pytest.raises(DataError, match="no condition recorded for sequence '002'"):
        viper.list_sequences(root, "train", conditions=("day",))


def test_condition_params_are_checked():
    params = load_params(REPO / "params.yaml")
    cfg = read_config(Prepare, params, "prepare")
    assert cfg.source.conditions == ("day",) and cfg.source.sequences is None    # the paper's setting
    params["prepare"]["source"].update(sequences=[1, "002"])
    assert read_config(Prepare, params, "prepare").source.sequences == ("1", "002")
    params["prepare"]["source"].update(conditions=["day", "fog"])
    with pytest.raises(ParamError, match=r"prepare.source.conditions: 'fog' is not one of"):
        read_config(Prepare, params, "prepare")
    params["prepare"]["source"].update(conditions=["day"], sequences=[])
    with pytest.raises(ParamError, match="prepare.source.sequences must be null"):
        read_config(Prepare, params, "prepare")


# --- holes ----------------------------------------------------------------------------------------------------

def test_a_frame_missing_from_the_middle_is_an_error_naming_it(tmp_path):
    root = write_viper(tmp_path / "viper")
    (root / "train" / "img" / "002" / "002_00007.jpg").unlink()
    with pytest.raises(DataError, match=r"img/002/002_00007.jpg: frame missing from sequence 002"):
        viper.list_sequences(root, "train")
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match="002_00007"):
        prepare_split(dataset_settings("viper", root, (H, W)), "train", out)
    assert not out.exists()


def test_labels_without_frames_or_sequences_without_labels_are_errors(tmp_path):
    root = write_viper(tmp_path / "viper")
    cv2.imwrite(str(root / "train" / "cls" / "001" / "001_00030.png"), frame_ids(0))
    with pytest.raises(DataError, match="001_00030.png: label file without a frame"):
        viper.list_sequences(root, "train")
    root = write_viper(tmp_path / "viper2", label_every=100)
    for p in (root / "train" / "cls" / "003").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="cls/003: no label file for any frame"):
        viper.list_sequences(root, "train")


# --- the tube matching loss on partly labelled pairs ---------------------------------------------------------

def test_tube_dice_counts_only_fully_labelled_pairs():
    # two samples, two frames of 1 x 2 pixels, two classes (probs over dim 2)
    p0 = [[[0.8, 0.4], [0.2, 0.6]], [[1.0, 0.5], [0.0, 0.5]]]        # sample 0: frame, class, pixel
    p1 = [[[0.1, 0.3], [0.9, 0.7]], [[0.6, 0.2], [0.4, 0.8]]]        # sample 1: any values
    probs = torch.tensor([p0, p1], dtype=torch.float64).unsqueeze(3)   # (B, T, C, 1, 2)
    probs.requires_grad_(True)
    labels = torch.tensor([[[[0, 1]], [[0, 0]]], [[[1, 1]], [[IGNORE_ID, IGNORE_ID]]]])   # (B, T, 1, 2)
    labeled = torch.tensor([[True, True], [True, False]])
    # by hand, sample 0 over its 2-frame tube: class 0: sum pq = 0.8 + 1.0 + 0.5 = 2.3, sum p^2 = 0.64 + 0.16 +
    # 1 + 0.25 = 2.05, sum q^2 = 3; class 1: sum pq = 0.6, sum p^2 = 0.04 + 0.36 + 0 + 0.25 = 0.65, sum q^2 = 1
    expected = (1 - 5.6 / 6.05) + (1 - 2.2 / 2.65)
    loss = tube_dice_loss(probs, labels, labeled=labeled)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert (probs.grad[1] == 0).all() and (probs.grad[0] != 0).any()    # the half-labelled pair adds nothing
    # every pair labelled: exactly the unmasked mean; none: 0 with a gradient path
    full = torch.ones(2, 2, dtype=torch.bool)
    assert torch.equal(tube_dice_loss(probs, labels, labeled=full), tube_dice_loss(probs, labels))
    none = tube_dice_loss(probs, labels, labeled=torch.zeros(2, 2, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad
    # the single-frame version counts the labelled frames: sample 0's two frames and sample 1's first
    single = single_frame_dice_loss(probs, labels, labeled=labeled)
    per_frame = torch.stack([single_frame_dice_loss(probs[b:b + 1, t:t + 1], labels[b:b + 1, t:t + 1])
                             for b, t in [(0, 0), (0, 1), (1, 0)]])
    assert single.item() == pytest.approx(per_frame.mean().item(), abs=1e-12)


def test_dice_term_reads_the_batch_flags():
    logits = torch.randn(2, 2, 15, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, 15, (2, 2, 4, 4))
    labels[1, 0] = IGNORE_ID
    batch = {"labels": labels, "labeled": torch.tensor([[True, True], [False, True]])}
    term = DiceTerm("tube", weight=0.5)(({"logits": logits}), batch)["dice"]
    alone = tube_dice_loss(logits[:1].softmax(dim=2), labels[:1])
    assert term.item() == pytest.approx(0.5 * alone.item(), abs=1e-12)
