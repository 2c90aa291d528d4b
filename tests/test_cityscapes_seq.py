"""The Cityscapes-Seq reader on tiny trees in its published layout: listing, frame order, the two-step label map
(label id -> Cityscapes train id -> ours) against hand-written arrays, and every bad input.

The trees hold three 30-frame snippets at 16x32: two adjacent ones of one sequence (frankfurt 000000, annotated
frames 294 and 324: frames 275..304 and 305..334, one run of consecutive numbers that only the annotated frames
split) and one starting at frame 0 (lindau 000001, annotated frame 19).
"""

import cv2
import numpy as np
import pytest

from videoda.data import cityscapes_seq as cs
from videoda.data.classes import CITYSCAPES_TRAIN_CLASSES, IGNORE_ID
from videoda.data.clips import write_clip
from videoda.errors import DataError
from videoda.utils.io import atomic_path

H, W = 16, 32
SIZE = (H, W)
SNIPPETS = [("frankfurt", 0, 294), ("frankfurt", 0, 324), ("lindau", 1, 19)]

# Our train ids for the test: Cityscapes train id -> ours, written by hand (rider merged into person, wall void).
TABLE = {cs_train: IGNORE_ID for cs_train in range(19)} | {IGNORE_ID: IGNORE_ID}
TABLE |= {0: 0, 1: 1, 11: 10, 12: 10, 13: 11, 18: 14}


def image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def label_ids(seed):
    """Cityscapes label ids (as gtFine_labelIds stores them) in stripes."""
    ids = np.full((H, W), 7, np.uint8)          # road
    ids[:4] = 1                                 # ego vehicle
    ids[4:8, :8] = 25                           # rider
    ids[4:8, 8:16] = 24                         # person
    ids[4:8, 16:24] = 12                        # wall
    ids[4:8, 24:] = 33                          # bicycle
    ids[8:12, :16] = 8                          # sidewalk
    ids[12:, : 4 + seed % 8] = 26               # car
    return ids


def expected(seed):
    """``label_ids(seed)`` through both maps, by hand: road 7 -> 0 -> 0, ego vehicle 1 -> 255, rider 25 -> 12 -> 10,
    person 24 -> 11 -> 10, wall 12 -> 3 -> void, bicycle 33 -> 18 -> 14, sidewalk 8 -> 1 -> 1, car 26 -> 13 -> 11."""
    out = np.zeros((H, W), np.uint8)
    out[:4] = IGNORE_ID
    out[4:8, :16] = 10
    out[4:8, 16:24] = IGNORE_ID
    out[4:8, 24:] = 14
    out[8:12, :16] = 1
    out[12:, : 4 + seed % 8] = 11
    return out


def write_snippet(root, city, seq, annotated, split="val"):
    for frame in range(annotated - 19, annotated + 11):
        labels = label_ids(annotated) if frame == annotated else None
        cs.write_frame(root, split, city, seq, frame, image(seq * 1000 + frame), labels)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "cityscapes"
    for snippet in SNIPPETS:
        write_snippet(root, *snippet)
    return root


def convert(root, out, split="val", table=TABLE):
    """What ``prepare`` does with a reader: list, then stream every clip into an atomically written folder."""
    specs = cs.list_clips(root, split)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for spec in specs:
            write_clip(tmp / spec.name, cs.clip_frames(spec, SIZE, table), spec.labeled, spec.frame_names, SIZE)


def assert_no_output(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_published_names(root):
    assert (root / "leftImg8bit_sequence/val/frankfurt/frankfurt_000000_000275_leftImg8bit.png").is_file()
    assert (root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png").is_file()
    assert not (root / "gtFine/val/frankfurt/frankfurt_000000_000293_gtFine_labelIds.png").exists()


def test_listing_one_clip_per_snippet(root):
    specs = cs.list_clips(root, "val")
    assert [s.name for s in specs] == ["frankfurt_000000_000294", "frankfurt_000000_000324", "lindau_000001_000019"]
    for spec, (city, seq, annotated) in zip(specs, SNIPPETS):
        assert len(spec) == 30
        numbers = list(range(annotated - 19, annotated + 11))
        assert spec.frame_names == [f"{city}_{seq:06d}_{n:06d}_leftImg8bit" for n in numbers]
        assert spec.images == [cs.frame_path(root, "val", city, seq, n) for n in numbers]
        assert spec.labels[19] == root / "gtFine/val" / city / f"{city}_{seq:06d}_{annotated:06d}_gtFine_labelIds.png"
        assert spec.labeled.tolist() == [t == 19 for t in range(30)]


def test_clip_frames_and_labels(root):
    for spec, (_, seq, annotated) in zip(cs.list_clips(root, "val"), SNIPPETS):
        clip = cs.load_clip(spec, SIZE, TABLE)
        assert clip.images.shape == (30, H, W, 3) and clip.labels.shape == (30, H, W)
        for t in range(30):
            np.testing.assert_array_equal(clip.images[t], image(seq * 1000 + annotated - 19 + t))
            want = expected(annotated) if t == 19 else np.full((H, W), IGNORE_ID)
            np.testing.assert_array_equal(clip.labels[t], want)


def test_resize_keeps_ids(root):
    clip = cs.load_clip(cs.list_clips(root, "val")[0], (8, 16), TABLE)
    assert clip.images.shape == (30, 8, 16, 3)
    np.testing.assert_array_equal(clip.labels[19], expected(294)[::2, ::2])   # nearest on an exact 2x grid


def test_the_official_label_table():
    table = cs.CITYSCAPES_LABEL_ID_TO_TRAIN_ID
    assert sorted(table) == list(range(-1, 34))
    # every train id 0..18 comes from exactly one label id, and it is the label of that train class's name
    trained = {label_id: t for label_id, t in table.items() if t != 255}
    assert sorted(trained.values()) == list(range(19))
    names = {label_id: name for label_id, name, _ in cs.CITYSCAPES_LABELS}
    for label_id, t in trained.items():
        assert names[label_id] == CITYSCAPES_TRAIN_CLASSES[t]
    # by hand, from cityscapesScripts' labels.py
    assert [table[i] for i in (7, 8, 11, 17, 23, 24, 25, 26, 31, 33)] == [0, 1, 2, 5, 10, 11, 12, 13, 16, 18]
    for void in (-1, 0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30):
        assert table[void] == 255
    np.testing.assert_array_equal(cs.cityscapes_train_ids(np.array([[-1, 7], [33, 29]]), "x.png"),
                                  [[255, 0], [18, 255]])


# ---------------------------------------------------------------- bad inputs

def stray_frame(name):
    """A case that writes one more frame file, ``name``, into lindau's folder."""
    def write(root):
        cv2.imwrite(str(root / "leftImg8bit_sequence/val/lindau" / name), image(0))
        return name
    return write


bad_frame_name = stray_frame("lindau_000001_x_leftImg8bit.png")
frame_of_another_city = stray_frame("zurich_000001_000005_leftImg8bit.png")
frame_stored_twice = stray_frame("lindau_000001_0005_leftImg8bit.png")


def missing_frame(root):
    path = root / "leftImg8bit_sequence/val/frankfurt/frankfurt_000000_000300_leftImg8bit.png"
    path.unlink()
    return path.name


def label_without_frames(root):
    cs.write_frame(root, "val", "munster", 3, 19, image(0), label_ids(0))
    (root / "leftImg8bit_sequence/val/munster/munster_000003_000019_leftImg8bit.png").unlink()
    return "munster_000003_000019_gtFine_labelIds.png"


def frame_outside_snippets(root):
    cs.write_frame(root, "val", "frankfurt", 0, 400, image(0), None)
    return "frankfurt_000000_000400_leftImg8bit.png"


def overlapping_snippets(root):
    cv2.imwrite(str(cs.label_path(root, "val", "frankfurt", 0, 310)), label_ids(0))
    return "frankfurt_000000_000310_gtFine_labelIds.png"


def no_labels(root):
    for path in (root / "gtFine/val").rglob("*.png"):
        path.unlink()
    return "gtFine/val: no"


def missing_split(root):
    for path in sorted((root / "gtFine").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    return "gtFine/val"


def corrupt_frame(root):
    path = root / "leftImg8bit_sequence/val/lindau/lindau_000001_000007_leftImg8bit.png"
    path.write_bytes(b"not a png")
    return path.name


def corrupt_label(root):
    path = cs.label_path(root, "val", "lindau", 1, 19)
    path.write_bytes(b"\x89PNG broken")
    return path.name


def unknown_label_id(root):
    path = cs.label_path(root, "val", "frankfurt", 0, 324)
    ids = label_ids(0)
    ids[0, 0] = 34
    cv2.imwrite(str(path), ids)
    return path.name


def colour_label(root):
    path = cs.label_path(root, "val", "frankfurt", 0, 324)
    cv2.imwrite(str(path), np.zeros((H, W, 3), np.uint8))
    return path.name


def label_size_mismatch(root):
    path = cs.label_path(root, "val", "lindau", 1, 19)
    cv2.imwrite(str(path), np.full((H, W + 1), 7, np.uint8))
    return path.name


@pytest.mark.parametrize("damage", [bad_frame_name, frame_of_another_city, frame_stored_twice, missing_frame,
                                    label_without_frames, frame_outside_snippets, overlapping_snippets, no_labels,
                                    missing_split, corrupt_frame, corrupt_label, unknown_label_id, colour_label,
                                    label_size_mismatch])
def test_bad_input_names_the_file_and_writes_nothing(damage, root, tmp_path):
    name = damage(root)
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=name) as e:
        convert(root, out)
    assert "\n" not in str(e.value)
    assert_no_output(out)


def test_table_without_a_present_id_names_the_file(root, tmp_path):
    table = {k: v for k, v in TABLE.items() if k != 18}      # bicycle (train id 18) is in every label
    with pytest.raises(DataError, match="frankfurt_000000_000294_gtFine_labelIds.png"):
        convert(root, tmp_path / "prepared", table=table)
    assert_no_output(tmp_path / "prepared")


def test_missing_root_and_split(root, tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        cs.list_clips(tmp_path / "nowhere", "val")
    with pytest.raises(DataError, match="leftImg8bit_sequence/train"):
        cs.list_clips(root, "train")


def test_writer_rejects_bad_ids(tmp_path):
    with pytest.raises(DataError, match="gtFine_labelIds.png"):
        cs.write_frame(tmp_path, "val", "aachen", 0, 19, image(0), np.full((H, W), 34, np.uint8))
    assert not list(tmp_path.rglob("*.png"))
