"""The SYNTHIA-Seq reader on tiny trees in both published layouts (the official SYNTHIA-SEQS folders and DA-VSN's
``rgb/`` + ``label/``): listing, frame order, the class id channel, the map to our train ids against hand-written
arrays, the bottom crop, and every bad input.

Frames are 24x32; ``crop_bottom`` = 8 leaves 16x32 (DA-VSN: 760 - 120 = 640 rows).
"""

import struct
import zlib

import cv2
import numpy as np
import pytest

from videoda.data import synthia_seq as sy
from videoda.data.classes import IGNORE_ID
from videoda.data.clips import write_clip
from videoda.errors import DataError, ParamError
from videoda.utils.io import atomic_path

H0, W = 24, 32          # stored frames
CROP = 8
SIZE = (H0 - CROP, W)   # after the crop, no resize
FRAMES = 6
SEQUENCES = {"official": ["SYNTHIA-SEQS-04-DAWN", "SYNTHIA-SEQS-05-FOG"], "davsn": ["SEQS-04-DAWN"]}

# SYNTHIA class id -> our train id, by hand (DA-VSN's 12 classes: road 0 .. car 11; bicycle = rider 10).
TABLE = {i: IGNORE_ID for i in range(16)} | {3: 0, 4: 1, 2: 2, 5: 3, 7: 4, 15: 5, 9: 6, 6: 7, 1: 8, 10: 9, 11: 10,
                                             8: 11}


def image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H0, W, 3), dtype=np.uint8)


def class_ids(seed):
    ids = np.full((H0, W), 3, np.uint16)       # road
    ids[:4] = 1                                # sky
    ids[4:8, :8] = 2                           # building
    ids[4:8, 8:16] = 12                        # lanemarking
    ids[4:8, 16:] = 15                         # traffic light
    ids[8:12, :16] = 11                        # bicycle
    ids[8:12, 16:] = 0                         # void
    ids[12:16, : 4 + seed % 8] = 8             # car
    ids[16:] = 10                              # pedestrian: the rows the crop drops
    return ids


def expected(seed):
    """``class_ids(seed)`` through TABLE by hand, cropped: sky 1 -> 8, building 2 -> 2, lanemarking 12 -> void,
    traffic light 15 -> 5, bicycle 11 -> 10, void 0 -> void, car 8 -> 11, road 3 -> 0."""
    out = np.zeros((H0 - CROP, W), np.uint8)
    out[:4] = 8
    out[4:8, :8] = 2
    out[4:8, 8:16] = IGNORE_ID
    out[4:8, 16:] = 5
    out[8:12, :16] = 10
    out[8:12, 16:] = IGNORE_ID
    out[12:16, : 4 + seed % 8] = 11
    return out


def png_rgb16(path, r, g, b):
    """A 16-bit RGB PNG written byte by byte, without cv2 (whose BGR order the reader must undo): the PNG's first
    channel is ``r``. Rows are stored unfiltered (filter byte 0), samples big-endian."""
    pixels = np.stack([r, g, b], axis=-1).astype(">u2")
    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def write_tree(root, layout):
    """Each sequence: frames 0..5 (6-digit names, written out of order), labels with the class id in the first
    channel, an instance id in the second and junk in the third, so that reading any other channel fails."""
    frames_dir, labels_dir = sy.LAYOUTS[layout]
    for s, sequence in enumerate(SEQUENCES[layout]):
        (root / sequence / frames_dir).mkdir(parents=True)
        for frame in (3, 0, 5, 1, 4, 2):
            name = f"{frame:06d}.png"
            bgr = cv2.cvtColor(image(s * 100 + frame), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(root / sequence / frames_dir / name), bgr)
            ids = class_ids(s * 100 + frame)
            instance = np.where(ids == 8, 300 + frame, 0)
            png_rgb16(root / sequence / labels_dir / name, ids, instance, np.full(ids.shape, 7))
    return root


@pytest.fixture(params=["official", "davsn"])
def tree(request, tmp_path):
    return write_tree(tmp_path / "synthia", request.param), request.param


def convert(root, layout, out, table=TABLE, crop=CROP, sequences=None):
    """What ``prepare`` does with a reader: list, then stream every sequence into an atomically written folder."""
    specs = sy.list_sequences(root, sequences or SEQUENCES[layout], layout)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for spec in specs:
            write_clip(tmp / spec.name, sy.sequence_frames(spec, SIZE, table, crop), spec.labeled, spec.frame_names,
                       SIZE)


def assert_no_output(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_listing(tree):
    root, layout = tree
    specs = sy.list_sequences(root, SEQUENCES[layout], layout)
    assert [s.name for s in specs] == SEQUENCES[layout]
    frames_dir, labels_dir = sy.LAYOUTS[layout]
    for spec in specs:
        assert spec.images == [root / spec.name / frames_dir / f"{n:06d}.png" for n in range(FRAMES)]
        assert spec.labels == [root / spec.name / labels_dir / f"{n:06d}.png" for n in range(FRAMES)]
        assert spec.frame_names == [f"{spec.name}_{n:06d}" for n in range(FRAMES)]
        assert spec.labeled.all()
    # the layouts' folder names, as published
    assert frames_dir == {"official": "RGB/Stereo_Left/Omni_F", "davsn": "rgb"}[layout]
    assert labels_dir == {"official": "GT/LABELS/Stereo_Left/Omni_F", "davsn": "label"}[layout]


def test_frames_labels_and_bottom_crop(tree):
    root, layout = tree
    for s, spec in enumerate(sy.list_sequences(root, SEQUENCES[layout], layout)):
        clip = sy.load_sequence(spec, SIZE, TABLE, CROP)
        assert clip.images.shape == (FRAMES, H0 - CROP, W, 3)
        for t in range(FRAMES):
            np.testing.assert_array_equal(clip.images[t], image(s * 100 + t)[:H0 - CROP])
            np.testing.assert_array_equal(clip.labels[t], expected(s * 100 + t))


def test_crop_then_resize(tree):
    root, layout = tree
    spec = sy.list_sequences(root, SEQUENCES[layout], layout)[0]
    clip = sy.load_sequence(spec, (8, 16), TABLE, CROP)
    np.testing.assert_array_equal(clip.labels[2], expected(2)[::2, ::2])   # nearest on an exact 2x grid
    uncropped = sy.load_sequence(spec, (H0, W), TABLE, 0)
    assert (uncropped.labels[0][16:] == 9).all()                            # the pedestrian rows the crop drops


def test_read_label_takes_the_first_channel(tmp_path):
    ids = class_ids(0)
    png_rgb16(tmp_path / "a.png", ids, np.full(ids.shape, 3), np.full(ids.shape, 8))
    labels = sy.read_label(tmp_path / "a.png", TABLE)
    np.testing.assert_array_equal(labels[:H0 - CROP], expected(0))
    # our writer stores the same file
    sy.write_label(tmp_path / "b.png", ids)
    np.testing.assert_array_equal(sy.read_label(tmp_path / "b.png", TABLE), labels)


def test_class_list():
    assert len(sy.SYNTHIA_CLASSES) == 16
    for i, name in [(0, "void"), (1, "sky"), (2, "building"), (3, "road"), (8, "car"), (10, "pedestrian"),
                    (11, "bicycle"), (12, "lanemarking"), (15, "traffic light")]:
        assert sy.SYNTHIA_CLASSES[i] == name
    assert len(set(sy.SYNTHIA_CLASSES)) == 16


# ---------------------------------------------------------------- bad inputs

def label_path(root, layout, frame=2, sequence=0):
    return root / SEQUENCES[layout][sequence] / sy.LAYOUTS[layout][1] / f"{frame:06d}.png"


def frame_path(root, layout, frame=2, sequence=0):
    return root / SEQUENCES[layout][sequence] / sy.LAYOUTS[layout][0] / f"{frame:06d}.png"


def missing_label(root, layout):
    label_path(root, layout, 3).unlink()
    return f"{SEQUENCES[layout][0]}/{sy.LAYOUTS[layout][1]}/000003.png"


def stray_label(root, layout):
    png_rgb16(label_path(root, layout, 9), class_ids(0), class_ids(0), class_ids(0))
    return "000009.png"


def missing_middle_frame(root, layout):
    frame_path(root, layout, 3).unlink()
    label_path(root, layout, 3).unlink()
    return f"{sy.LAYOUTS[layout][0]}/000003.png"


def bad_frame_name(root, layout):
    path = frame_path(root, layout).with_name("frame_a.png")
    cv2.imwrite(str(path), image(0))
    return path.name


def no_frames(root, layout):
    for path in frame_path(root, layout).parent.iterdir():
        path.unlink()
    for path in label_path(root, layout).parent.iterdir():
        path.unlink()
    return sy.LAYOUTS[layout][0]


def missing_labels_folder(root, layout):
    folder = label_path(root, layout).parent
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return sy.LAYOUTS[layout][1]


def eight_bit_label(root, layout):
    path = label_path(root, layout)
    cv2.imwrite(str(path), np.zeros((H0, W, 3), np.uint8))
    return path.name


def one_channel_label(root, layout):
    path = label_path(root, layout)
    cv2.imwrite(str(path), class_ids(0))
    return path.name


def four_channel_label(root, layout):
    path = label_path(root, layout)
    cv2.imwrite(str(path), np.zeros((H0, W, 4), np.uint16))
    return path.name


def unknown_class_id(root, layout):
    path = label_path(root, layout, 4)
    ids = class_ids(0)
    ids[0, 0] = 16
    png_rgb16(path, ids, ids * 0, ids * 0)
    return path.name


def corrupt_label(root, layout):
    path = label_path(root, layout, 1)
    path.write_bytes(path.read_bytes()[:40])
    return path.name


def corrupt_frame(root, layout):
    path = frame_path(root, layout, 5)
    path.write_bytes(b"not a png")
    return path.name


def label_size_mismatch(root, layout):
    path = label_path(root, layout)
    png_rgb16(path, *[np.zeros((H0, W + 1), np.uint16)] * 3)
    return path.name


@pytest.mark.parametrize("damage", [missing_label, stray_label, missing_middle_frame, bad_frame_name, no_frames,
                                    missing_labels_folder, eight_bit_label, one_channel_label, four_channel_label,
                                    unknown_class_id, corrupt_label, corrupt_frame, label_size_mismatch])
def test_bad_input_names_the_file_and_writes_nothing(damage, tree, tmp_path):
    root, layout = tree
    name = damage(root, layout)
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=name) as e:
        convert(root, layout, out)
    assert "\n" not in str(e.value)
    assert_no_output(out)


def test_crop_as_tall_as_the_frame_names_it(tree, tmp_path):
    root, layout = tree
    with pytest.raises(DataError, match=f"{sy.LAYOUTS[layout][0]}/000000.png: crop_bottom=24"):
        convert(root, layout, tmp_path / "prepared", crop=H0)
    assert_no_output(tmp_path / "prepared")
    with pytest.raises(ParamError, match="crop_bottom"):
        convert(root, layout, tmp_path / "prepared", crop=-1)


def test_table_without_a_present_id_names_the_file(tree, tmp_path):
    root, layout = tree
    table = {k: v for k, v in TABLE.items() if k != 12}          # lanemarking is in every label
    with pytest.raises(DataError, match=f"{sy.LAYOUTS[layout][1]}/000000.png: label ids \\[12\\]"):
        convert(root, layout, tmp_path / "prepared", table=table)
    assert_no_output(tmp_path / "prepared")


def test_missing_root_sequence_layout(tree, tmp_path):
    root, layout = tree
    other = "davsn" if layout == "official" else "official"
    with pytest.raises(DataError, match="nowhere"):
        sy.list_sequences(tmp_path / "nowhere", SEQUENCES[layout], layout)
    with pytest.raises(DataError, match="SYNTHIA-SEQS-06-SPRING"):
        sy.list_sequences(root, ["SYNTHIA-SEQS-06-SPRING"], layout)
    with pytest.raises(DataError, match=sy.LAYOUTS[other][0]):      # a tree read in the other layout
        sy.list_sequences(root, SEQUENCES[layout], other)
    with pytest.raises(ParamError, match="layout"):
        sy.list_sequences(root, SEQUENCES[layout], "rand")
    with pytest.raises(ParamError, match="sequences"):
        sy.list_sequences(root, [], layout)
    with pytest.raises(ParamError, match="twice"):
        sy.list_sequences(root, SEQUENCES[layout] * 2, layout)


def test_a_subset_of_sequences(tmp_path):
    root = write_tree(tmp_path / "synthia", "official")
    specs = sy.list_sequences(root, ["SYNTHIA-SEQS-05-FOG"], "official")
    assert [s.name for s in specs] == ["SYNTHIA-SEQS-05-FOG"]


def test_writer(tmp_path):
    image_path, label_path_ = sy.write_frame(tmp_path, "SEQS-04-DAWN", 7, image(0), class_ids(0), layout="davsn")
    assert image_path == tmp_path / "SEQS-04-DAWN/rgb/000007.png"
    assert label_path_ == tmp_path / "SEQS-04-DAWN/label/000007.png"
    stored = cv2.imread(str(label_path_), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored.shape == (H0, W, 3)
    np.testing.assert_array_equal(stored[..., 2], class_ids(0))        # first PNG channel = last in cv2's BGR
    with pytest.raises(DataError, match="000008.png"):
        sy.write_frame(tmp_path, "SEQS-04-DAWN", 8, image(0), np.full((H0, W), 16), layout="davsn")
    assert not (tmp_path / "SEQS-04-DAWN/rgb/000008.png").exists()
