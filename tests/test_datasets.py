"""Dataset readers/writers and the prepare stage, on tiny fixtures.

Two kinds of fixtures: ones made with our own writers (what the procedural generator produces) and ones
written by hand with cv2/PIL in the published layouts, so the readers are checked against the real file
formats and names, not only against our writers.
"""

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import dataset_settings
from videoda.data import cityscapes_vps, viper
from videoda.data.classes import CLASSES, IGNORE_ID, VIPER_CLASSES, VIPER_PALETTE
from videoda.data.clips import load_clip
from videoda.data.prepare import prepare_split
from videoda.errors import DataError

H, W = 16, 32
SIZE = (H, W)

V = {name: i for i, name in enumerate(VIPER_CLASSES)}
T = {name: i for i, name in enumerate(CLASSES)}
CS = {"road": 0, "wall": 3, "pole": 5, "vegetation": 8, "person": 11, "rider": 12, "car": 13, "bicycle": 18}


def image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def smooth():
    """A gradient image, which survives JPEG almost unchanged (noise would not)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.dstack([x * 8, y * 16, (x + y) * 5]).astype(np.uint8)


def viper_ids(seed):
    """Stripes of VIPER classes; the bottom-centre pixel is road, so no ego vehicle."""
    ids = np.full((H, W), V["road"], np.uint8)
    ids[:4] = V["sky"]
    ids[4:8, :8] = V["tree"]
    ids[4:8, 8:16] = V["vegetation"]
    ids[4:8, 16:24] = V["van"]
    ids[4:8, 24:] = V["unlabeled"]
    ids[8:12, : 4 + seed % 8] = V["car"]
    ids[8:12, 24:] = V["motorcycle"]
    return ids


def viper_expected(ids):
    out = np.full(ids.shape, IGNORE_ID, np.uint8)
    for v, t in [("road", "road"), ("sky", "sky"), ("tree", "vegetation"), ("vegetation", "vegetation"),
                 ("car", "car"), ("motorcycle", "motorbike")]:
        out[ids == V[v]] = T[t]
    return out


def cs_ids(seed):
    ids = np.full((H, W), CS["road"], np.uint8)
    ids[:4] = IGNORE_ID
    ids[4:8, :8] = CS["rider"]
    ids[4:8, 8:16] = CS["person"]
    ids[4:8, 16:24] = CS["wall"]
    ids[4:8, 24:] = CS["bicycle"]
    ids[8:12, : 4 + seed % 8] = CS["car"]
    return ids


def cs_expected(ids):
    out = np.full(ids.shape, IGNORE_ID, np.uint8)
    for c, t in [("road", "road"), ("rider", "person"), ("person", "person"), ("car", "car")]:
        out[ids == CS[c]] = T[t]
    return out


@pytest.fixture
def viper_root(tmp_path):
    """3 sequences x 6 consecutive frames (10..15) written by our writer, in a shuffled order."""
    root = tmp_path / "viper"
    for seq in (1, 2, 3):
        for index in (15, 10, 13, 11, 14, 12):
            viper.write_frame(root, "train", seq, index, image(seq * 100 + index), viper_ids(seq + index))
    return root


@pytest.fixture
def cs_root(tmp_path):
    """3 clips x 10 frames written by our writer; frames 4 and 9 of each clip are annotated."""
    root = tmp_path / "cs"
    for clip in (1, 2, 3):
        for t in range(10):
            labels = cs_ids(clip + t) if t % 5 == 4 else None
            cityscapes_vps.write_frame(root, "val", clip, t, image(clip * 100 + t), labels)
    return root


def assert_no_output(out_dir):
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]


# ---------------------------------------------------------------- VIPER

def test_viper_round_trip(viper_root, tmp_path):
    specs = viper.list_sequences(viper_root, "train")
    assert [s.name for s in specs] == ["001", "002", "003"]
    assert specs[0].frame_names == [f"001_{i:05d}" for i in range(10, 16)]
    assert specs[0].labels[0] == viper_root / "train" / "cls" / "001" / "001_00010.png"

    out = tmp_path / "source"
    paths = prepare_split(dataset_settings("viper", viper_root, SIZE), "train", out, min_frames=6)
    assert sorted(p.name for p in out.iterdir()) == ["001", "002", "003"] == [p.name for p in paths]
    clip = load_clip(out / "002")
    assert clip.images.shape == (6, H, W, 3) and clip.images.dtype == np.uint8
    assert clip.labeled.all()
    for t, index in enumerate(range(10, 16)):
        np.testing.assert_array_equal(clip.images[t], image(200 + index))
        np.testing.assert_array_equal(clip.labels[t], viper_expected(viper_ids(2 + index)))
    assert list(clip.frame_names) == [f"002_{i:05d}" for i in range(10, 16)]


def test_viper_label_png_is_indexed_with_classes_csv_palette(viper_root):
    label = Image.open(viper_root / "train" / "cls" / "001" / "001_00010.png")
    assert label.mode == "P"
    np.testing.assert_array_equal(np.asarray(label), viper_ids(11))
    assert label.getpalette()[3 * V["tree"]: 3 * V["tree"] + 3] == [87, 182, 35]


def test_viper_resize(viper_root):
    clip = viper.load_sequence(viper.list_sequences(viper_root, "train")[0], size=(8, 12))
    assert clip.images.shape == (6, 8, 12, 3) and clip.labels.shape == (6, 8, 12)
    assert set(np.unique(clip.labels)) <= set(viper_expected(viper_ids(11)).ravel().tolist()) | {IGNORE_ID}


def test_viper_class_map():
    from videoda.data.classes import VIPER_TO_TRAIN
    assert VIPER_TO_TRAIN[V["tree"]] == VIPER_TO_TRAIN[V["vegetation"]] == T["vegetation"]
    assert VIPER_TO_TRAIN[V["motorcycle"]] == T["motorbike"]
    assert VIPER_TO_TRAIN[V["infrastructure"]] == T["pole"]   # VIPER has no pole class
    for void in ("unlabeled", "ambiguous", "van", "bicycle", "train"):
        assert VIPER_TO_TRAIN[V[void]] == IGNORE_ID
    assert sorted(set(VIPER_TO_TRAIN.values()) - {IGNORE_ID}) == list(range(15))


def hand_viper(root):
    """The published layout written by hand: JPG and PNG frames; indexed, grey and colour label PNGs."""
    seq_img, seq_cls = root / "train" / "img" / "007", root / "train" / "cls" / "007"
    seq_img.mkdir(parents=True)
    seq_cls.mkdir(parents=True)
    ids = viper_ids(3)
    palette = [c for rgb in VIPER_PALETTE.tolist() for c in rgb]
    for frame, kind in [(12, "indexed"), (10, "grey"), (9, "colour")]:
        stem = f"007_{frame:05d}"
        cv2.imwrite(str(seq_img / f"{stem}.png"), cv2.cvtColor(image(frame), cv2.COLOR_RGB2BGR))
        if kind == "indexed":
            label = Image.fromarray(ids)
            label.putpalette(palette)
            label.save(seq_cls / f"{stem}.png")
        elif kind == "grey":
            cv2.imwrite(str(seq_cls / f"{stem}.png"), ids)
        else:
            cv2.imwrite(str(seq_cls / f"{stem}.png"), VIPER_PALETTE[ids][..., ::-1])
    cv2.imwrite(str(seq_img / "007_00011.jpg"), cv2.cvtColor(smooth(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(seq_cls / "007_00011.png"), ids)
    return root


def test_viper_reads_published_layout(tmp_path):
    root = hand_viper(tmp_path / "viper")
    (spec,) = viper.list_sequences(root, "train")
    assert spec.frame_names == ["007_00009", "007_00010", "007_00011", "007_00012"]  # numeric order
    clip = viper.load_sequence(spec, SIZE)
    for t in range(4):
        np.testing.assert_array_equal(clip.labels[t], viper_expected(viper_ids(3)))
    np.testing.assert_array_equal(clip.images[0], image(9))
    assert np.abs(clip.images[2].astype(int) - smooth()).mean() < 4  # the JPG frame, lossy


def test_viper_ego_vehicle_is_ignored(tmp_path):
    ids = viper_ids(0)
    ids[12:, 8:24] = V["car"]  # bonnet: touches the bottom-centre pixel
    viper.write_frame(tmp_path, "train", 1, 1, image(0), ids)
    path = tmp_path / "train" / "cls" / "001" / "001_00001.png"
    labels = viper.read_label(path)
    assert (labels[12:, 8:24] == IGNORE_ID).all()
    assert (labels[8:12, :4] == T["car"]).all()  # other cars stay
    assert (viper.read_label(path, ignore_ego_vehicle=False)[12:, 8:24] == T["car"]).all()


def test_viper_writer_rejects_bad_ids(tmp_path):
    with pytest.raises(DataError, match="001_00001.png"):
        viper.write_frame(tmp_path, "train", 1, 1, image(0), np.full((H, W), 32, np.uint8))


# ---------------------------------------------------------------- Cityscapes-VPS

def test_cityscapes_round_trip(cs_root, tmp_path):
    specs = cityscapes_vps.list_clips(cs_root, "val")
    assert [s.name for s in specs] == ["0001", "0002", "0003"]
    out = tmp_path / "target_val"
    prepare_split(dataset_settings("cityscapes_vps", cs_root, SIZE), "val", out, min_frames=10)
    clip = load_clip(out / "0002")
    assert clip.labeled.tolist() == [t % 5 == 4 for t in range(10)]
    for t in range(10):
        np.testing.assert_array_equal(clip.images[t], image(200 + t))
        expected = cs_expected(cs_ids(2 + t)) if t % 5 == 4 else np.full((H, W), IGNORE_ID)
        np.testing.assert_array_equal(clip.labels[t], expected)
    assert clip.frame_names[0] == "synth_000002_000000_leftImg8bit"
    assert clip.frame_names[4] == "0002_0005_synth_000002_000004_newImg8bit"


def test_cityscapes_class_map():
    from videoda.data.classes import CITYSCAPES_TO_TRAIN
    assert CITYSCAPES_TO_TRAIN[CS["rider"]] == CITYSCAPES_TO_TRAIN[CS["person"]] == T["person"]
    assert CITYSCAPES_TO_TRAIN[CS["pole"]] == T["pole"]
    assert CITYSCAPES_TO_TRAIN[17] == T["motorbike"]
    for void in (CS["wall"], CS["bicycle"], 16, IGNORE_ID):
        assert CITYSCAPES_TO_TRAIN[void] == IGNORE_ID


def hand_cityscapes(root, split="val", with_all=True):
    """Two clips in the published layout, as VPSNet's scripts leave them: 30 frames per clip in img_all, every
    5th annotated; the 20th frame comes from Cityscapes (leftImg8bit/gtFine_color), the rest are newImg8bit/
    final_mask. One label exists only as a colour PNG in cls/."""
    d = root / split
    for sub in ("img", "labelmap", "cls") + (("img_all",) if with_all else ()):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for clip, city, seq, first in [(5, "frankfurt", 0, 1732), (6, "lindau", 1, 0)]:
        for t in range(30):
            frame = first + t
            rgb = image(clip * 100 + t)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if with_all:
                cv2.imwrite(str(d / "img_all" / f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png"), bgr)
            if t % 5 != 4:
                continue
            n = (clip - 1) * 6 + t // 5 + 1
            suffix, label_suffix = ("leftImg8bit", "gtFine_color") if t == 19 else ("newImg8bit", "final_mask")
            stem = f"{clip:04d}_{n:04d}_{city}_{seq:06d}_{frame:06d}"
            cv2.imwrite(str(d / "img" / f"{stem}_{suffix}.png"), bgr)
            ids = cs_ids(clip + t)
            if clip == 6 and t == 9:  # Cityscapes colours, with a void colour ('ground') in the sky rows
                from videoda.data.classes import CITYSCAPES_PALETTE
                colours = CITYSCAPES_PALETTE[np.minimum(ids, 18)]
                colours[ids == IGNORE_ID] = (81, 0, 81)
                rgba = np.dstack([colours[..., ::-1], np.full((H, W), 255, np.uint8)])
                cv2.imwrite(str(d / "cls" / f"{stem}_{label_suffix}.png"), rgba)
            else:
                cv2.imwrite(str(d / "labelmap" / f"{stem}_{label_suffix}.png"), ids)
    return root


def test_cityscapes_reads_published_layout(tmp_path):
    root = hand_cityscapes(tmp_path / "cs")
    specs = cityscapes_vps.list_clips(root, "val")
    assert [s.name for s in specs] == ["0005", "0006"]
    assert len(specs[0]) == 30
    assert specs[0].frame_names[0] == "frankfurt_000000_001732_leftImg8bit"
    assert specs[0].frame_names[19] == "0005_0028_frankfurt_000000_001751_leftImg8bit"
    assert specs[0].labels[19].name == "0005_0028_frankfurt_000000_001751_gtFine_color.png"
    assert specs[1].labels[9].parent.name == "cls"
    for spec, clip_id in zip(specs, (5, 6)):
        clip = cityscapes_vps.load_clip(spec, SIZE)
        assert clip.labeled.tolist() == [t % 5 == 4 for t in range(30)]
        for t in range(30):
            np.testing.assert_array_equal(clip.images[t], image(clip_id * 100 + t))
            expected = cs_expected(cs_ids(clip_id + t)) if t % 5 == 4 else np.full((H, W), IGNORE_ID)
            np.testing.assert_array_equal(clip.labels[t], expected)


def test_cityscapes_without_img_all_uses_annotated_frames(tmp_path):
    root = hand_cityscapes(tmp_path / "cs", split="train", with_all=False)
    specs = cityscapes_vps.list_clips(root, "train")
    assert [len(s) for s in specs] == [6, 6]
    assert specs[0].frame_names[0] == "0005_0025_frankfurt_000000_001736_newImg8bit"
    clip = cityscapes_vps.load_clip(specs[0], SIZE)
    assert clip.labeled.all()


def test_cityscapes_read_label(tmp_path):
    ids = cs_ids(0)
    cv2.imwrite(str(tmp_path / "a.png"), ids)
    np.testing.assert_array_equal(cityscapes_vps.read_label(tmp_path / "a.png"), cs_expected(ids))
    ids[0, 0] = 19
    cv2.imwrite(str(tmp_path / "b.png"), ids)
    with pytest.raises(DataError, match="b.png"):
        cityscapes_vps.read_label(tmp_path / "b.png")


def test_cityscapes_img_all_frames_without_clip_are_an_error(cs_root, tmp_path):
    cityscapes_vps.write_frame(cs_root, "val", 9, 0, image(0), None)
    with pytest.raises(DataError, match="synth_000009_000000_leftImg8bit.png"):
        prepare_split(dataset_settings("cityscapes_vps", cs_root, SIZE), "val", tmp_path / "out")
    assert_no_output(tmp_path / "out")


# ---------------------------------------------------------------- bad inputs

def corrupt_image(root, dataset):
    path = (root / "train" / "img" / "002" / "002_00012.png" if dataset == "viper"
            else root / "val" / "img_all" / "synth_000002_000003_leftImg8bit.png")
    path.write_bytes(b"not a png")
    return path.name


def unknown_label_id(root, dataset):
    if dataset == "viper":
        path = root / "train" / "cls" / "003" / "003_00015.png"
        ids = viper_ids(0)
        ids[0, 0] = 40
        label = Image.fromarray(ids)
        label.putpalette([c for rgb in VIPER_PALETTE.tolist() for c in rgb])
        label.save(path)
    else:
        path = root / "val" / "labelmap" / "0003_0010_synth_000003_000009_final_mask.png"
        ids = cs_ids(0)
        ids[0, 0] = 200
        cv2.imwrite(str(path), ids)
    return path.name


def label_size_mismatch(root, dataset):
    path = (root / "train" / "cls" / "001" / "001_00011.png" if dataset == "viper"
            else root / "val" / "labelmap" / "0001_0005_synth_000001_000004_final_mask.png")
    cv2.imwrite(str(path), np.zeros((H, W + 1), np.uint8))
    return path.name


def missing_label(root, dataset):
    if dataset == "viper":   # a frame without a label is unlabelled; a sequence without any is an error
        for path in (root / "train" / "cls" / "001").iterdir():
            path.unlink()
        return "cls/001: no label file"
    path = root / "val" / "labelmap" / "0002_0010_synth_000002_000009_final_mask.png"
    path.unlink()
    return path.name


def unreadable_label(root, dataset):
    path = (root / "train" / "cls" / "002" / "002_00010.png" if dataset == "viper"
            else root / "val" / "labelmap" / "0001_0010_synth_000001_000009_final_mask.png")
    path.write_bytes(b"\x89PNG broken")
    return path.name


def no_frames(root, dataset):
    img = root / ("train" if dataset == "viper" else "val") / "img"
    for p in sorted(img.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    return "img"


@pytest.mark.parametrize("dataset", ["viper", "cityscapes_vps"])
@pytest.mark.parametrize("damage", [corrupt_image, unknown_label_id, label_size_mismatch, missing_label,
                                    unreadable_label, no_frames])
def test_bad_input_raises_and_leaves_no_output(dataset, damage, viper_root, cs_root, tmp_path):
    root, split = (viper_root, "train") if dataset == "viper" else (cs_root, "val")
    name = damage(root, dataset)
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=name):
        prepare_split(dataset_settings(dataset, root, SIZE), split, out)
    assert_no_output(out)


@pytest.mark.parametrize("dataset", ["viper", "cityscapes_vps"])
def test_missing_root_split_and_short_videos(dataset, viper_root, cs_root, tmp_path):
    root, split, n = (viper_root, "train", 6) if dataset == "viper" else (cs_root, "val", 10)
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match="nowhere"):
        prepare_split(dataset_settings(dataset, tmp_path / "nowhere", SIZE), split, out)
    with pytest.raises(DataError, match="test"):
        prepare_split(dataset_settings(dataset, root, SIZE), "test", out)
    with pytest.raises(DataError, match=f"min_frames={n + 1}") as e:
        prepare_split(dataset_settings(dataset, root, SIZE), split, out, min_frames=n + 1)
    assert ".png" in str(e.value)
    assert_no_output(out)


def test_failed_run_keeps_previous_output(viper_root, tmp_path):
    out = tmp_path / "source"
    prepare_split(dataset_settings("viper", viper_root, SIZE), "train", out)
    before = sorted(p.name for p in out.iterdir())
    corrupt_image(viper_root, "viper")
    with pytest.raises(DataError):
        prepare_split(dataset_settings("viper", viper_root, SIZE), "train", out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_unknown_dataset(viper_root, tmp_path):
    with pytest.raises(DataError, match="dataset"):
        prepare_split(dataset_settings("synthia", viper_root, SIZE), "train", tmp_path / "out")
