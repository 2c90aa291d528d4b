"""The prepared clip format (``videoda.data.clips``): a folder of plain .npy files per clip, frames read lazily.

What it must keep: arrays bit-identical to what was saved and to what the old stacking ``prepare`` made; every
indexing form the pipeline uses; reading a frame reads that frame only; writing holds one frame at a time; a
damaged file is a DataError naming it, with nothing half-written.
"""

import gc
import io
import os
import pickle
import weakref
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import dataset_settings

from videoda.data import cityscapes_vps, viper
from videoda.data.classes import DEFAULT, IGNORE_ID, VIPER_CLASSES
from videoda.data.clips import (FRAME_NAMES, IMAGES, LABELED, LABELS, Clip, FrameArray, list_clips, load_clip,
                                save_clip, write_clip)
from videoda.data.pairs import load_split
from videoda.data.prepare import prepare_split
from videoda.data.video import resize_frame
from videoda.domain_adaptation.pseudo_labels import aggregate_clip
from videoda.errors import DataError
from videoda.evaluate import evaluate_clips, predict
from videoda.flow.backends import DisFlow, PtlflowFlow, run_ptlflow, to_flownet_input
from videoda.metrics import score_clips
from videoda.model.deeplabv2 import DeepLabV2
from videoda.utils.images import read_label_png, read_rgb
from videoda.utils.io import TEMP_TAG

T, H, W = 7, 6, 10


def make_clip(name="c", t=T, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 15, (t, H, W), dtype=np.uint8)
    labels[:, 0] = IGNORE_ID
    return Clip(name, rng.integers(0, 256, (t, H, W, 3), dtype=np.uint8), labels, rng.random(t) < 0.5,
                np.array([f"{name}_{i:05d}" for i in range(t)]))


@pytest.fixture
def saved(tmp_path):
    clip = make_clip()
    save_clip(tmp_path / "split" / clip.name, clip)
    return clip, load_clip(tmp_path / "split" / clip.name)


def no_leftovers(root):
    return not [p for p in root.rglob(f"*{TEMP_TAG}*")]


# ---------------------------------------------------------------- round trip

def test_round_trip_is_bit_identical_plain_npy(saved, tmp_path):
    clip, loaded = saved
    folder = tmp_path / "split" / "c"
    assert sorted(p.name for p in folder.iterdir()) == sorted([IMAGES, LABELS, LABELED, FRAME_NAMES])
    assert loaded.name == "c" and len(loaded) == T
    assert isinstance(loaded.images, FrameArray) and isinstance(loaded.labels, FrameArray)
    for field in ("images", "labels", "labeled", "frame_names"):
        ours = np.asarray(getattr(loaded, field))
        assert ours.dtype == getattr(clip, field).dtype and np.array_equal(ours, getattr(clip, field)), field
        # plain .npy: numpy reads every member whole too
        assert np.array_equal(np.load(folder / f"{field}.npy", allow_pickle=False), getattr(clip, field)), field
    assert no_leftovers(tmp_path)


def test_a_loaded_clip_saves_again_identically(saved, tmp_path):
    clip, loaded = saved
    save_clip(tmp_path / "again" / "c", loaded)          # streams frame by frame from the lazy arrays
    again = load_clip(tmp_path / "again" / "c")
    for name in (IMAGES, LABELS, LABELED, FRAME_NAMES):
        assert (tmp_path / "again/c" / name).read_bytes() == (tmp_path / "split/c" / name).read_bytes()
    assert np.array_equal(np.asarray(again.images), clip.images)


def test_list_clips_sorted_folders_only(tmp_path):
    for name in ("b", "a"):
        save_clip(tmp_path / "s" / name, make_clip(name))
    (tmp_path / "s" / ".a.partial-1-x").mkdir()         # a writer's temporary folder is not a clip
    (tmp_path / "s" / "notes.txt").write_text("x")
    assert [p.name for p in list_clips(tmp_path, "s")] == ["a", "b"]
    assert [c.name for c in load_split(tmp_path, "s")] == ["a", "b"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "a.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"old: no clips \(it holds .npz clips.*rerun the prepare stage"):
        list_clips(tmp_path, "old")


# ---------------------------------------------------------------- lazy indexing

@pytest.mark.parametrize("key", [0, 3, -1, np.int64(2), [5, 1], [2, 3], np.array([6, 0, 6]), [], np.array([[0, 1],
                                 [4, 5]]), slice(None), slice(1, 5), slice(None, None, 2), slice(5, 1, -2),
                                 slice(10, 20), (2, slice(None), slice(None, None, -1)),
                                 ([0, 3], slice(None), slice(None, None, -1)), (slice(1, 3), 0),
                                 (Ellipsis, slice(None, None, -1)), (slice(None), None)])
def test_indexing_matches_numpy(saved, key):
    clip, loaded = saved
    for lazy, ref in ((loaded.images, clip.images), (loaded.labels, clip.labels)):
        out = lazy[key]
        expected = ref[key]
        assert isinstance(out, np.ndarray) and out.dtype == expected.dtype and out.shape == expected.shape
        assert np.array_equal(out, expected)
        assert out.flags.writeable and not np.shares_memory(out, ref)


def test_bool_mask_iteration_and_metadata(saved):
    clip, loaded = saved
    assert np.array_equal(loaded.labels[~loaded.labeled], clip.labels[~clip.labeled])
    assert np.array_equal(loaded.images[loaded.labeled], clip.images[clip.labeled])
    assert [f.tolist() for f in loaded.images] == [f.tolist() for f in clip.images]
    assert loaded.images.shape == clip.images.shape and loaded.images.shape[1:3] == (H, W)
    assert loaded.images.dtype == np.uint8 and loaded.images.ndim == 4 and len(loaded.labels) == T
    assert torch.equal(torch.from_numpy(loaded.images[[2, 3]]), torch.from_numpy(clip.images[[2, 3]]))
    copy = pickle.loads(pickle.dumps(loaded.images))    # what a DataLoader worker receives
    assert np.array_equal(copy[4], clip.images[4])


@pytest.mark.parametrize("key", [T, -T - 1, [0, T], np.array([True, False]), 1.5, ([0, 1], [0, 1])])
def test_bad_indices_raise_index_error(saved, key):
    with pytest.raises(IndexError):
        saved[1].images[key]


def test_one_frame_reads_only_that_frame(saved, tmp_path, monkeypatch):
    _, loaded = saved
    frame_bytes = H * W * 3
    reads = []
    real = os.preadv

    def counted(fd, buffers, offset):
        n = real(fd, buffers, offset)
        reads.append((offset, n))
        return n

    monkeypatch.setattr(os, "preadv", counted)
    loaded.images[4]
    assert reads == [(loaded.images.offset + 4 * frame_bytes, frame_bytes)]
    reads.clear()
    loaded.images[[3, 4]]                                    # a pair t - 1, t: one read of two frames
    assert reads == [(loaded.images.offset + 3 * frame_bytes, 2 * frame_bytes)]
    reads.clear()
    loaded.images[[5, 1]]
    assert [n for _, n in reads] == [frame_bytes, frame_bytes]


def test_frames_past_a_truncation_are_never_touched(saved, tmp_path):
    """Frames before the cut still read after the file was truncated under an open clip: nothing else is read;
    a frame past it is a DataError naming the file."""
    clip, loaded = saved
    path = tmp_path / "split/c" / IMAGES
    os.truncate(path, loaded.images.offset + 2 * H * W * 3)
    assert np.array_equal(loaded.images[1], clip.images[1]) and np.array_equal(loaded.images[:2], clip.images[:2])
    with pytest.raises(DataError, match=f"{path}: the file ends at byte .* truncated"):
        loaded.images[[1, 5]]


# ---------------------------------------------------------------- damaged or foreign files

@pytest.mark.parametrize("member,damage", [(IMAGES, "truncated"), (LABELS, "truncated"), (IMAGES, "empty"),
                                           (LABELED, "empty"), (FRAME_NAMES, "garbage"), (IMAGES, "garbage"),
                                           (LABELS, "missing"), (LABELED, "missing")])
def test_damaged_member_names_its_file(saved, tmp_path, member, damage):
    path = tmp_path / "split/c" / member
    content = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"truncated": content[:-5], "empty": b"", "garbage": b"\x93NUMPY" + bytes(range(200))}[damage])
    with pytest.raises(DataError, match=f"^{path}: .*rerun the prepare stage"):
        load_clip(tmp_path / "split/c")


@pytest.mark.parametrize("member,array", [(LABELS, np.zeros((T, H, W + 1), np.uint8)),
                                          (IMAGES, np.zeros((T, H, W, 3), np.float32)),
                                          (LABELED, np.zeros(T + 1, bool)), (FRAME_NAMES, np.arange(T)),
                                          (IMAGES, np.asfortranarray(np.zeros((T, H, W, 3), np.uint8)))])
def test_foreign_member_names_its_file(saved, tmp_path, member, array):
    path = tmp_path / "split/c" / member
    np.save(path, array)
    with pytest.raises(DataError, match=f"^{path}: "):
        load_clip(tmp_path / "split/c")


def test_missing_clip_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: clip folder not found"):
        load_clip(tmp_path / "nowhere")


# ---------------------------------------------------------------- writing

def test_save_clip_checks_before_writing(tmp_path):
    clip = make_clip()
    bad = [(Clip("c", clip.images.astype(np.int16), clip.labels, clip.labeled, clip.frame_names), "must be uint8"),
           (Clip("c", clip.images, clip.labels[:, :-1], clip.labeled, clip.frame_names), "does not match"),
           (Clip("c", clip.images, np.where(clip.labels == 3, 40, clip.labels), clip.labeled, clip.frame_names),
            r"frame \d+ \(c_\d+\): label ids \[40\] are not train ids"),
           (Clip("c", clip.images, clip.labels, clip.labeled[:-1], clip.frame_names), "same length")]
    for broken, message in bad:
        with pytest.raises(DataError, match=message):
            save_clip(tmp_path / "s" / "c", broken)
        assert not (tmp_path / "s" / "c").exists() and no_leftovers(tmp_path)


def test_write_clip_wants_exactly_its_frames(tmp_path):
    clip = make_clip()
    frames = list(zip(clip.images, clip.labels))
    for given, message in ((frames[:-1], "6 frames written, its frame_names list 7"),
                           (frames + frames[:1], "more frames than the 7"),
                           ([(im[:, :-1], lb) for im, lb in frames], r"frame 0 \(c_00000\): images must be uint8")):
        with pytest.raises(DataError, match=message):
            write_clip(tmp_path / "s" / "c", iter(given), clip.labeled, clip.frame_names, (H, W))
        assert not (tmp_path / "s" / "c").exists() and no_leftovers(tmp_path)


def test_write_clip_keeps_no_frame(tmp_path):
    """Each frame the writer was given is freed before it asks for the next: one frame in memory at a time."""
    clip = make_clip(t=5)
    alive = []

    def frames():
        for t in range(5):
            gc.collect()
            assert not [ref for ref in alive if ref() is not None], f"frame {t - 1} still held"
            frame = (clip.images[t].copy(), clip.labels[t].copy())
            alive.extend(weakref.ref(a) for a in frame)
            yield frame
            del frame

    write_clip(tmp_path / "c", frames(), clip.labeled, clip.frame_names, (H, W))
    assert np.array_equal(np.asarray(load_clip(tmp_path / "c").images), clip.images)


# ---------------------------------------------------------------- prepare: streaming == the old stacking path

def old_prepare(spec, size, read_label):
    """What ``prepare`` made before clips were streamed: every frame stacked (the former ``load_video``), saved
    with np.savez and read back whole."""
    images, labels = [], []
    for image_path, label_path in zip(spec.images, spec.labels):
        image = read_rgb(image_path)
        label = np.full(image.shape[:2], IGNORE_ID, np.uint8) if label_path is None else read_label(label_path)
        image, label = resize_frame(image, label, size)
        images.append(image)
        labels.append(label)
    buffer = io.BytesIO()
    np.savez(buffer, images=np.stack(images), labels=np.stack(labels).astype(np.uint8),
             labeled=np.array([p is not None for p in spec.labels], bool), frame_names=np.array(spec.frame_names, str))
    buffer.seek(0)
    with np.load(buffer) as z:
        return {k: z[k] for k in z.files}


def write_tiny_datasets(root):
    rng = np.random.default_rng(1)
    for seq in (1, 2):
        for index in range(4):
            ids = rng.integers(0, 32, (12, 20), dtype=np.uint8)
            ids[-3:, 8:12] = VIPER_CLASSES.index("car")    # touching the bottom centre: the ego vehicle
            viper.write_frame(root / "viper", "train", seq, index, rng.integers(0, 256, (12, 20, 3), np.uint8), ids)
    (root / "viper/train/cls/002/002_00001.png").unlink()      # a frame without labels
    for clip in (1, 2):
        for t in range(6):
            labels = rng.choice([0, 1, 5, 8, 11, 13, 255], (12, 20)).astype(np.uint8) if t % 3 == 2 else None
            cityscapes_vps.write_frame(root / "cs", "val", clip, t, rng.integers(0, 256, (12, 20, 3), np.uint8),
                                       labels)


def test_streaming_prepare_equals_the_stacking_path(tmp_path, monkeypatch):
    write_tiny_datasets(tmp_path)
    for module, name in ((viper, "load_sequence"), (cityscapes_vps, "load_clip")):   # prepare must not stack
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("prepare stacked a whole video"))
    cases = [("viper", tmp_path / "viper", "train", partial(viper.read_label, ignore_ego_vehicle=True), (8, 16)),
             ("cityscapes_vps", tmp_path / "cs", "val", cityscapes_vps.read_label, (6, 10))]
    for dataset, root, split, read_label, size in cases:
        out = tmp_path / "prepared" / dataset
        paths = prepare_split(dataset_settings(dataset, root, size), split, out)
        specs = viper.list_sequences(root, split) if dataset == "viper" else cityscapes_vps.list_clips(root, split)
        assert paths == [out / s.name for s in specs] == list_clips(tmp_path / "prepared", dataset)
        for spec, path in zip(specs, paths):
            old, new = old_prepare(spec, size, read_label), load_clip(path)
            for field in ("images", "labels", "labeled", "frame_names"):
                ours = np.asarray(getattr(new, field))
                assert ours.dtype == old[field].dtype and np.array_equal(ours, old[field]), (dataset, field)
    assert not load_clip(tmp_path / "prepared/viper/002").labeled[1]
    assert no_leftovers(tmp_path)


# ---------------------------------------------------------------- consumers: lazy clips, identical results

@pytest.fixture
def lazy_and_memory(tmp_path, monkeypatch):
    """Two clips of 16 x 32 frames, in memory and saved then loaded; reading a lazy clip whole fails, as no
    pipeline path may rely on it."""
    memory = []
    for i in range(2):
        c = make_clip(f"c{i}", t=7, seed=i)
        rng = np.random.default_rng(10 + i)
        c = Clip(c.name, rng.integers(0, 256, (7, 16, 32, 3), dtype=np.uint8),
                 rng.integers(0, 15, (7, 16, 32), dtype=np.uint8), np.array([1, 0, 1, 1, 0, 1, 1], bool),
                 c.frame_names)
        save_clip(tmp_path / "prepared" / "split" / c.name, c)
        memory.append(c)
    lazy = load_split(tmp_path / "prepared", "split")
    monkeypatch.setattr(FrameArray, "__array__", lambda *a, **k: pytest.fail("a whole clip was read"))
    return lazy, memory


def test_evaluate_clips_reads_batches_and_scores_as_before(lazy_and_memory, tmp_path):
    torch.manual_seed(0)
    model = DeepLabV2(15, backbone="resnet18", norm="group", num_layers=2, aspp_rates=(1, 2), group_norm_groups=16)
    lazy, memory = lazy_and_memory

    def old_predicted():     # evaluate_clips before the lazy format: all annotated frames at once
        for clip in memory:
            idx = np.flatnonzero(clip.labeled)
            yield predict(model, clip.images[idx], 2), clip.labels[idx]

    old_report, old_confusion = score_clips(old_predicted(), label_stride=1)
    (tmp_path / "pred").mkdir()
    report, confusion = evaluate_clips(model, lazy, SimpleNamespace(label_stride=1, batch_size=2, classes=DEFAULT,
                                                                    resolution="prepared"), tmp_path / "pred")
    assert report == old_report and np.array_equal(confusion, old_confusion)
    old_preds = np.concatenate([p for p, _ in old_predicted()])
    names = [n for c in memory for n in c.frame_names[c.labeled]]
    assert np.array_equal(np.stack([read_label_png(tmp_path / "pred" / f"{n}.png") for n in names]), old_preds)


def test_flow_backends_on_lazy_clips_equal_in_memory(lazy_and_memory):
    class DifferenceFlow(torch.nn.Module):
        """A stand-in ptlflow model: 'flow' = 3 x the difference of the two frames' first two channels."""
        def forward(self, inputs):
            return {"flows": 3.0 * (inputs["images"][:, 1:, :2] - inputs["images"][:, :1, :2])}

    def old_ptlflow(backend, clip, pairs):      # PtlflowFlow.flows before: the whole clip converted at once
        frames, out = to_flownet_input(clip.images), []
        for i in range(0, len(pairs), backend.batch_size):
            src, dst = zip(*pairs[i:i + backend.batch_size])
            out.append(run_ptlflow(backend.model, frames[list(src)], frames[list(dst)]).float().numpy())
        return np.concatenate(out)

    lazy, memory = lazy_and_memory
    pairs = [(1, 0), (0, 1), (3, 5), (6, 2), (4, 4)]
    backend = PtlflowFlow(DifferenceFlow(), batch_size=2)
    for lz, mem in zip(lazy, memory):
        ours = backend.flows(lz, pairs)
        assert np.abs(ours).max() > 0 and np.array_equal(ours, old_ptlflow(backend, mem, pairs))
        assert np.array_equal(DisFlow("ultrafast").flows(lz, pairs), DisFlow("ultrafast").flows(mem, pairs))


def test_aggregation_takes_a_lazy_clip(lazy_and_memory, monkeypatch):
    """``aggregate_clip`` (Eq. 10) reads a lazy clip's images whole (one clip), with the same result."""
    monkeypatch.undo()                               # it may read the clip whole
    lazy, memory = lazy_and_memory
    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.random((7, 15, 16, 32), dtype=np.float32)).softmax(1)
    flows = {(a, b): rng.normal(0, 2, (16, 32, 2)).astype(np.float32) for a in range(7) for b in range(7)}
    ours = aggregate_clip(probs, lazy[0].images, lambda a, b: flows[a, b], 2.0, 0.7)
    assert torch.equal(ours, aggregate_clip(probs, memory[0].images, lambda a, b: flows[a, b], 2.0, 0.7))
