"""Flow: warping conventions, the HDF5 store, the backends, FlowNet2's fast correlation, and the `flow` stage."""

import hashlib
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from helpers import REPO, fails_cleanly, in_process, link, stage, tiny_params, write_params, written_files
from videoda.data.classes import IGNORE_ID
from videoda.data.clips import load_clip
from videoda.errors import DataError, ParamError
from videoda.flow.backends import (FLOWNET2_CKPT, DisFlow, GroundTruthFlow, PtlflowFlow, chain_flows,
                                   checkpoint_label, invert_flow, load_flownet2, load_ptlflow_model, resize_flow,
                                   run_ptlflow)
from videoda.flow.store import FlowStore, FlowWriter, stored_pairs
from videoda.flow.warp import (flow_to_tensor, hflip_flow, non_occluded, occlusion, warp_error, warp_labels,
                               warp_probs)
from videoda.utils.device import Runtime


def const_flow(b, h, w, dx, dy):
    flow = torch.zeros(b, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


# --- warping -----------------------------------------------------------------------------------------------

def test_warp_probs_reads_the_frame_the_flow_points_to_and_marks_out_of_frame():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    warped, valid = warp_probs(x, const_flow(2, 4, 5, 2, 1))          # p reads x at p + (2, 1)
    assert torch.allclose(warped[:, :, :3, :3], x[:, :, 1:, 2:])
    assert valid[:, :3, :3].all() and not valid[:, 3].any() and not valid[:, :, 3:].any()
    assert (warped[:, :, 3] == 0).all()
    half, valid = warp_probs(x, const_flow(2, 4, 5, 0.5, 0))            # bilinear: the mean of two pixels
    assert torch.allclose(half[..., :4], (x[..., :4] + x[..., 1:]) / 2)
    assert not valid[..., 4].any()                                      # 4.5 lies on the frame's edge
    near, valid = warp_probs(x, const_flow(2, 4, 5, 0.3, 0))
    assert valid.all() and torch.allclose(near[..., 4], x[..., 4])       # within half a pixel: the edge pixel


def test_warp_labels_is_nearest_with_ignore_out_of_frame():
    labels = torch.arange(20).reshape(1, 4, 5)
    flow = const_flow(1, 4, 5, -1.4, 0.6)                               # rounds to (-1, +1)
    warped = warp_labels(labels, flow)
    assert torch.equal(warped[0, :3, 1:], labels[0, 1:, :4])
    assert (warped[0, 3] == IGNORE_ID).all() and (warped[0, :, 0] == IGNORE_ID).all()


def test_occlusion_is_exp_of_the_rgb_l2_warping_error_in_unit_range():
    ref = torch.full((1, 3, 4, 6), 100, dtype=torch.uint8)
    other = ref.clone()
    other[0, :, :, 3:] = 130                                            # +30 in every channel on the right
    flow = const_flow(1, 4, 6, 0, 0)
    expected = math.sqrt(3) * 30 / 255
    assert torch.allclose(warp_error(ref, other, flow)[0, :, 3:], torch.tensor(expected))
    o = occlusion(ref, other, flow, alpha=2.0)
    assert torch.allclose(o[0, :, :3], torch.tensor(1.0)) and torch.allclose(o[0, :, 3:],
                                                                            torch.tensor(math.exp(-2 * expected)))
    assert non_occluded(ref, other, flow, 2.0, 0.7)[0, :, :3].all()
    assert not non_occluded(ref, other, flow, 2.0, 0.7)[0, :, 3:].any()  # exp(-0.41) = 0.66 < 0.7
    out = occlusion(ref, ref, const_flow(1, 4, 6, 10, 0), alpha=2.0)
    assert (out == 0).all()                                              # out of frame: occluded


def test_hflip_flow_commutes_with_warping():
    x = torch.rand(1, 3, 5, 7)
    flow = torch.randn(1, 2, 5, 7)
    a, _ = warp_probs(x, flow)
    b, _ = warp_probs(x.flip(-1), hflip_flow(flow))
    assert torch.allclose(a.flip(-1), b, atol=1e-6)


# --- ground-truth helpers and DIS ----------------------------------------------------------------------------

def test_resize_flow_rescales_vectors():
    flow = np.zeros((1, 8, 16, 2), np.float32)
    flow[..., 0], flow[..., 1] = 4.0, -2.0
    out = resize_flow(flow, (4, 32))
    assert out.shape == (1, 4, 32, 2) and np.allclose(out[..., 0], 8.0) and np.allclose(out[..., 1], -1.0)


def test_invert_and_chain_flows():
    h, w = 20, 30
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    forward = np.stack([1.5 + 0.05 * ys, -0.5 + 0.03 * xs], -1)          # smooth, |grad| < 1
    inverse = invert_flow(forward)
    moved, inside = warp_probs(flow_to_tensor(forward), flow_to_tensor(inverse))   # F(p + G(p)) = -G(p)
    residual = (moved + flow_to_tensor(inverse))[0].permute(1, 2, 0).numpy()
    assert inside.float().mean() > 0.8 and np.abs(residual[inside[0].numpy()]).max() < 1e-3
    step = np.broadcast_to(np.float32([1.0, 0.5]), (h, w, 2))
    assert np.allclose(chain_flows([step, step, step])[:10, :10], [3.0, 1.5])


def test_dis_recovers_a_translation():
    rng = np.random.default_rng(0)
    base = (rng.random((80, 96, 3)) * 255).astype(np.uint8)
    import cv2
    base = cv2.GaussianBlur(base, (0, 0), 2)
    moved = np.roll(base, (1, 2), axis=(0, 1))                          # frame 1 = frame 0 moved by (2, 1)
    clip = type("C", (), {"images": np.stack([base, moved])})
    flow = DisFlow("medium").flows(clip, [(0, 1), (1, 0)])
    assert np.allclose(np.median(flow[0, 10:-10, 10:-10], axis=(0, 1)), [2, 1], atol=0.1)
    assert np.allclose(np.median(flow[1, 10:-10, 10:-10], axis=(0, 1)), [-2, -1], atol=0.1)


# --- the store -----------------------------------------------------------------------------------------------

def write_store(path, frames=5, deltas=(1, 3), h=4, w=6):
    flows = {(a, b): np.full((h, w, 2), [a + 0.25, b - 0.5], np.float32)
             for a, b in stored_pairs(frames, deltas)}
    with FlowWriter(path, deltas, h, w, "test", attrs={"checkpoint": "x.ckpt", "checkpoint_sha256": "ab12"}) as writer:
        writer.add_clip("0001", frames, flows)
    return flows


def test_store_round_trip_layout_and_missing_pair(tmp_path):
    path = tmp_path / "f.h5"
    flows = write_store(path)
    with h5py.File(path) as f:
        assert sorted(f["0001"]) == ["bwd1", "bwd3", "fwd1", "fwd3"]
        assert f["0001/fwd3"].shape == (2, 4, 6, 2) and f["0001/fwd3"].dtype == np.float16
    with FlowStore(path) as store:
        assert store.clips == ["0001"] and store.deltas == [1, 3] and store.num_frames("0001") == 5
        assert store.attrs == {"method": "test", "checkpoint": "x.ckpt", "checkpoint_sha256": "ab12", "height": 4,
                               "width": 6, "deltas": [1, 3], "format_version": 1, "complete": True}
        for (a, b), flow in flows.items():
            assert np.array_equal(store.flow("0001", a, b), flow)
        with pytest.raises(DataError, match=r"frame 0 to frame 2 of clip '0001'"):
            store.flow("0001", 0, 2)
        with pytest.raises(DataError, match="no flows for clip '0002'"):
            store.flow("0002", 0, 1)
        with pytest.raises(DataError, match="rerun the flow stage"):
            store.check_clip("0001", 6, 4, 6)
    flows1 = write_store(path, deltas=(1, 1))                            # tau = 1: stored once
    with h5py.File(path) as f:
        assert sorted(f["0001"]) == ["bwd1", "fwd1"] and len(flows1) == 8


def test_store_truncated_corrupt_and_incomplete_files_name_the_file(tmp_path):
    path = tmp_path / "f.h5"
    write_store(path)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5" * 100)
    for name in ("cut.h5", "junk.h5", "missing.h5"):
        with pytest.raises(DataError, match=name):
            FlowStore(tmp_path / name)
    with h5py.File(path) as f:                                           # damage one compressed chunk
        chunk = f["0001/fwd1"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    with FlowStore(path) as store:
        assert store.flow("0001", 1, 2).shape == (4, 6, 2)
        with pytest.raises(DataError, match=r"f.h5: clip '0001' dataset 'fwd1' is unreadable"):
            store.flow("0001", 0, 1)
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(DataError, match="incomplete"):
        FlowStore(path)



def test_store_holds_the_metadata_of_one_clip_whatever_the_number_read(tmp_path):
    """HDF5 keeps the metadata of every dataset read while the file is open; kept for every clip, its blocks
    fragmented the heap and the peak RSS of stage pseudo_labels grew with the clips. The store reopens its file
    when another clip is read: the metadata cache stays at one clip's, and the flows read are the same."""
    path, clips, deltas = tmp_path / "f.h5", [f"{i:04d}" for i in range(6)], (1, 2)

    def flow(i, a, b):
        return np.full((4, 6, 2), [i + a, b - 0.5], np.float32)

    with FlowWriter(path, deltas, 4, 6, "test") as writer:
        for i, clip in enumerate(clips):
            writer.add_clip(clip, 5, {(a, b): flow(i, a, b) for a, b in stored_pairs(5, deltas)})
    with FlowStore(path) as store:
        cached = []
        for i, clip in enumerate(clips):
            store.check_clip(clip, 5, 4, 6)
            for a, b in stored_pairs(5, deltas):
                assert np.array_equal(store.flow(clip, a, b), flow(i, a, b))
            cached.append(store.file.id.get_mdc_size()[2:])              # (bytes, entries) in HDF5's cache
        assert cached == cached[:1] * len(clips)
        assert np.array_equal(store.flow(clips[0], 0, 1), flow(0, 0, 1)) and store.attrs["method"] == "test"

# --- FlowNet2 through ptlflow ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_missing_or_bad_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("ptlflow")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    hub = tmp_path / "th/hub/checkpoints"
    with pytest.raises(DataError) as e:
        load_flownet2()                                                  # 'things', looked up offline
    assert str(hub / FLOWNET2_CKPT) in str(e.value) and "download https://" in str(e.value)
    with pytest.raises(DataError, match=r"not a pretrained checkpoint name of ptlflow's raft_small \(its names: th"):
        load_ptlflow_model("raft_small", "sintelx")
    with pytest.raises(DataError, match="nope.ckpt: checkpoint file not found"):
        load_flownet2(tmp_path / "nope.ckpt")
    with pytest.raises(ParamError, match="flow.method = 'no_such_model'"):
        load_ptlflow_model("no_such_model")
    hub.mkdir(parents=True)
    (hub / FLOWNET2_CKPT).write_bytes(b"half a download")
    with pytest.raises(DataError, match="partial or corrupt download"):
        load_flownet2()
    torch.save({"weights": {}}, tmp_path / "x.ckpt")
    with pytest.raises(DataError, match="x.ckpt: not a ptlflow checkpoint"):
        load_flownet2(tmp_path / "x.ckpt")
    (tmp_path / "y.ckpt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="y.ckpt: not a readable checkpoint"):
        load_flownet2(tmp_path / "y.ckpt")
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "z.ckpt")
    with pytest.raises(DataError, match="z.ckpt: not a flownet2 checkpoint"):
        load_flownet2(tmp_path / "z.ckpt")


@pytest.fixture(scope="module")
def ptlflow_stock():
    ptlflow = pytest.importorskip("ptlflow")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # small tensors: a second thread only waits on a busy 2-core machine
    yield ptlflow.get_model("flownet2").eval()                         # random weights, ptlflow's own init
    torch.set_num_threads(threads)


def test_fast_correlation_equals_ptlflows(ptlflow_stock):
    from ptlflow.models.flownet.submodules import correlate

    from videoda.flow.correlation import flownet_correlation
    for shape in ((2, 256, 8, 16), (1, 5, 23, 9)):
        f1, f2 = torch.randn(shape), torch.randn(shape)
        ref, ours = correlate(f1, f2), flownet_correlation(f1, f2)
        assert ours.shape == ref.shape == (shape[0], 441, *shape[2:])
        assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.slow
def test_flownet2_loads_a_checkpoint_and_matches_stock_ptlflow(ptlflow_stock, tmp_path):
    path = tmp_path / "random-weights.ckpt"
    torch.save({"state_dict": ptlflow_stock.state_dict()}, path)       # random weights: a loading test only
    model = load_flownet2(path)
    from videoda.data.clips import Clip
    images = (np.random.default_rng(0).random((2, 40, 72, 3)) * 255).astype(np.uint8)   # resized to 64 x 64
    clip = Clip("c", images, np.zeros((2, 40, 72), np.uint8), np.zeros(2, bool), np.array(["a", "b"]))
    pairs = [(0, 1), (1, 0)]
    backend = PtlflowFlow(model, batch_size=1)
    ours = backend.flows(clip, pairs)
    stock = PtlflowFlow(ptlflow_stock, batch_size=2).flows(clip, pairs)
    assert ours.shape == (2, 40, 72, 2) and np.abs(stock).max() > 0
    assert np.allclose(ours, stock, rtol=1e-4, atol=1e-3 * np.abs(stock).max())
    assert backend.attrs == {"checkpoint": path.name,
                             "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert "not ptlflow's published weights" in checkpoint_label(model)


def test_any_ptlflow_model_by_name_loads_like_ptlflow(tmp_path, monkeypatch):
    """raft_small (1 M weights) from a random-weight checkpoint the test saves: our loading path gives the flows of
    ptlflow's own ``get_model(name, ckpt_path=...)``; ptlflow's checkpoint names resolve offline."""
    ptlflow = pytest.importorskip("ptlflow")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path / "raft-random.ckpt"
        torch.save({"state_dict": ptlflow.get_model("raft_small").state_dict(),
                    "hyper_parameters": {"train_size": [128, 128]}}, path)
        ours = load_ptlflow_model("raft_small", path)
        stock = ptlflow.get_model("raft_small", ckpt_path=str(path)).eval()
        assert ours.train_size == stock.train_size == [128, 128]
        first, second = torch.rand(2, 1, 3, 128, 128).unbind(0)
        a, b = run_ptlflow(ours, first, second), run_ptlflow(stock, first, second)
        assert a.shape == (1, 128, 128, 2) and torch.isfinite(a).all() and torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    hub = tmp_path / "th/hub/checkpoints"
    hub.mkdir(parents=True)
    url = ptlflow.get_model_reference("raft_small").pretrained_checkpoints["things"]
    named = hub / url.rsplit("/", 1)[1]
    named.write_bytes(path.read_bytes())       # the right place, but not the published file: its hash differs
    with pytest.raises(DataError, match=f"{named.name}: its sha256 starts"):
        load_ptlflow_model("raft_small")


# --- the stage ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flow_bench(bench, tmp_path_factory):
    """The session's tiny benchmark (synth 24 x 48, prepared 32 x 64: gt flow is resized) in a folder of this
    module's: the flow tests write its store and report."""
    cwd = link(tmp_path_factory.mktemp("flow"), bench, "data/synth", "data/prepared")
    return cwd, tiny_params()


def run_flow(cwd, params, *args, **flow):
    """Run the stage in this process (no interpreter start-up) with ``flow`` in its params, unchecked (the stage
    checks them: the errors test gives it bad ones); returns its exit code."""
    params = json.loads(json.dumps(params))
    params["flow"].update(flow)
    write_params(cwd, params, check=False)
    return in_process(cwd, "flow.py", *args)


def test_flow_stage_dis_writes_every_pair_and_scores(flow_bench, monkeypatch, tmp_path):
    cwd, params = flow_bench
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))            # no FlowNet2 checkpoint: not run, and said
    assert run_flow(cwd, params, method="dis", tau=2, compare=["dis", "flownet2"]) == 0
    report = json.loads((cwd / "reports/flow.json").read_text())
    assert report["frame_distances"] == [1, 2] and report["pairs"] == 3 * 2 * (9 + 8)
    assert set(report["epe"]) == {"dis", "zero"} and report["epe"]["dis"]["epe"] > 0
    assert FLOWNET2_CKPT in report["not_run"]["flownet2"]
    with FlowStore(cwd / "data/flow/target_train.h5") as store:
        assert store.clips == ["0001", "0002", "0003"] and store.method == "dis"
        assert store.attrs["dis_preset"] == "medium" and (store.height, store.width) == (32, 64)
        clip = load_clip(cwd / "data/prepared/target_train/0001")
        store.check_clip("0001", len(clip), 32, 64)
        assert store.flow("0001", 5, 3).shape == (32, 64, 2)


@pytest.mark.slow
def test_flow_stage_with_any_ptlflow_model_records_its_checkpoint(flow_bench, monkeypatch, tmp_path):
    """flownetc (the FlowNet2 family's correlation network, fast correlation patched in) from a random-weight
    checkpoint file: the store's attributes name the method, the checkpoint's sha256 and the resolution, and the
    report says the weights are not ptlflow's."""
    ptlflow = pytest.importorskip("ptlflow")
    cwd, params = flow_bench
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    torch.manual_seed(0)
    ckpt = tmp_path / "flownetc-random.ckpt"
    torch.save({"state_dict": ptlflow.get_model("flownetc").state_dict()}, ckpt)
    threads = torch.get_num_threads()
    try:
        assert run_flow(cwd, params, method="flownetc", ckpt=str(ckpt), tau=1, threads=1,
                        compare=["dis", "flownet2"]) == 0
    finally:
        torch.set_num_threads(threads)
    with FlowStore(cwd / "data/flow/target_train.h5") as store:
        assert store.method == "flownetc" and (store.height, store.width) == (32, 64)
        assert store.attrs["checkpoint"] == ckpt.name
        assert store.attrs["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
        assert np.isfinite(store.flow("0002", 3, 2)).all()
    report = json.loads((cwd / "reports/flow.json").read_text())
    assert set(report["epe"]) == {"flownetc", "dis", "zero"} and "flownet2" in report["not_run"]
    assert "not a measurement of the model" in report["epe"]["flownetc"]["weights"] == report["weights"]
    assert report["checkpoint_sha256"] == store.attrs["checkpoint_sha256"]


def test_flow_stage_gt_is_the_resized_ground_truth(flow_bench):
    cwd, params = flow_bench
    assert run_flow(cwd, params, method="gt", tau=1) == 0
    report = json.loads((cwd / "reports/flow.json").read_text())
    assert report["epe"]["gt"]["epe"] == 0 and report["epe"]["dis"]["epe"] < report["epe"]["zero"]["epe"]
    gt = resize_flow(np.load(cwd / "data/synth/flow_gt/train/0001.npy"), (32, 64))
    with FlowStore(cwd / "data/flow/target_train.h5") as store:
        assert store.deltas == [1]
        assert np.abs(np.stack([store.flow("0001", t, t + 1) for t in range(9)]) - gt).max() < 0.01


def test_flow_stage_zero_stores_the_identity_and_scores_it_as_zero_flow(flow_bench):
    """``zero`` (no warping, the flow-quality experiment's baseline): every stored flow is 0, so warping is the
    identity, and its EPE is the report's zero-flow row."""
    cwd, params = flow_bench
    assert run_flow(cwd, params, method="zero", tau=2, compare=["dis"]) == 0
    report = json.loads((cwd / "reports/flow.json").read_text())
    assert set(report["epe"]) == {"zero", "dis"} and report["epe"]["zero"]["epe"] > report["epe"]["dis"]["epe"] > 0
    with FlowStore(cwd / "data/flow/target_train.h5") as store:
        assert store.method == "zero" and store.deltas == [1, 2]
        flows = [store.flow("0002", a, b) for a, b in ((3, 2), (2, 3), (5, 3))]
    assert all(f.shape == (32, 64, 2) and not f.any() for f in flows)
    probs = torch.rand(1, 3, 32, 64)
    warped, valid = warp_probs(probs, flow_to_tensor(flows[0][None]))
    assert valid.all() and torch.allclose(warped, probs, atol=1e-6)


def test_gt_flows_warp_labels_onto_each_other_in_every_stored_direction(tmp_path):
    """The conventions end to end, on noise-free labels of every frame: backward-warping frame b's labels onto
    frame a with F_{a->b} agrees with frame a's labels far better than no motion or the opposite motion."""
    import cv2

    from videoda.data.clips import Clip
    from videoda.data.synth import make_styles, render_sequence
    images, labels, flows = render_sequence(7, 64, 128, 8, make_styles(0.6, 0)[1])
    np.save(tmp_path / "c.npy", flows)
    small = [cv2.resize(x, (96, 48), interpolation=cv2.INTER_NEAREST) for x in labels]   # resized as prepare
    clip = Clip("c", np.stack([cv2.resize(x, (96, 48), interpolation=cv2.INTER_AREA) for x in images]),
                np.stack(small), np.ones(8, bool), np.array([str(i) for i in range(8)]))
    pairs = stored_pairs(8, [1, 3])
    estimated = GroundTruthFlow(tmp_path).flows(clip, pairs)
    labels = torch.from_numpy(clip.labels.astype(np.int64))
    agree = {}
    for (a, b), flow in zip(pairs, estimated):
        for name, f in (("flow", flow), ("zero", np.zeros_like(flow)), ("reversed", -flow)):
            warped = warp_labels(labels[b][None], flow_to_tensor(f))[0]
            both = (warped != IGNORE_ID) & (labels[a] != IGNORE_ID)
            key = ("fwd" if b > a else "bwd") + str(abs(b - a))
            agree.setdefault((key, name), []).append((warped == labels[a])[both].float().mean().item())
    agree = {k: np.mean(v) for k, v in agree.items()}
    for key in ("fwd1", "bwd1", "fwd3", "bwd3"):
        assert agree[key, "flow"] > 0.85, agree
        assert agree[key, "flow"] > max(agree[key, "zero"] + 0.03, agree[key, "reversed"] + 0.05), agree


def test_flow_stage_errors_name_the_key_or_file_and_write_nothing(flow_bench, tmp_path, monkeypatch, capsys):
    cwd, params = flow_bench
    params = json.loads(json.dumps(params))
    params["flow"]["gt_root"] = str(cwd / "data/synth/flow_gt/train")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    for change, expected in (({"method": "no_such_model"}, "flow.method"), ({"alpha": -1}, "flow.alpha"),
                             ({"method": "flownet2"}, FLOWNET2_CKPT), ({"tau": 40}, "too short for flow.tau"),
                             ({"compare": ["dis", "nope"]}, "flow.compare = 'nope'")):
        code = run_flow(tmp_path, params, "--data", str(cwd / "data/prepared"),
                        **{"method": "dis", "alpha": 2.0, "tau": 1, **change})
        assert code == 2 and expected in capsys.readouterr().err
        assert not written_files(tmp_path)


@pytest.mark.slow
def test_ptlflow_is_imported_only_for_ptlflow_models():
    code = ("import sys, runpy; from videoda.flow import backends, store, warp, quality\n"
            "runpy.run_path('stages/flow.py')\n"
            "backends.make_backend('dis')\n"
            "print('ptlflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "False"


def test_compute_flows_writes_the_store_and_returns_the_report(flow_bench, tmp_path):
    """The stage's library function: the store at ``out``, and the report it returns (no report file)."""
    from videoda.flow.compute import compute_flows

    cwd, _ = flow_bench
    seen = []

    class Recording(Runtime):          # the run context, recording the names of its progress bars
        def progress(self, items, description=""):
            seen.append(description)
            return items

    settings = dict(method="dis", tau=3, occlusion=SimpleNamespace(alpha=2.0, occlusion_threshold=0.7),
                    dis_preset="fast", ckpt=None, batch_size=2, gt_root=str(cwd / "data/synth/flow_gt/train"))
    report, seconds = compute_flows(cwd / "data/prepared", tmp_path / "f.h5",
                                    SimpleNamespace(epe=False, compare=("gt",), **settings),
                                    Recording(torch.device("cpu")))
    assert seen == ["flow (dis)"] and seconds > 0 and report["epe"] is None and "epe_pairs" not in report
    assert report == {"method": "dis", "resolution": [32, 64], "clips": 3, "frame_distances": [1, 3],
                      "pairs": 3 * 2 * (9 + 7), "occlusion": {"alpha": 2.0, "threshold": 0.7}, "dis_preset": "fast",
                      "epe": None}
    with FlowStore(tmp_path / "f.h5") as store:
        assert store.deltas == [1, 3] and store.clips == ["0001", "0002", "0003"]
        assert store.attrs["dis_preset"] == "fast"
    scored, _ = compute_flows(cwd / "data/prepared", tmp_path / "g.h5", SimpleNamespace(epe=True, compare=("gt",),
                                                                                       **settings))
    assert set(scored["epe"]) == {"dis", "gt", "zero"} and scored["epe"]["gt"]["epe"] == 0
    assert scored["epe"]["dis"]["epe"] < scored["epe"]["zero"]["epe"] and "not_run" not in scored


@pytest.mark.slow
def test_flow_gt_manifest_lists_the_ground_truth_only_when_flow_reads_it(flow_bench, tmp_path, capsys):
    """Stage flow_gt: with the EPE report (or the gt backend) the sha256 of every ground-truth file, so new ground
    truth changes the manifest and reruns `flow`; without (a real dataset: epe false, a flow network) the same
    manifest whatever the folder holds. Stage flow refuses a manifest written for other params."""
    cwd, params = flow_bench
    gt_root = cwd / "data/synth/flow_gt/train"
    params = json.loads(json.dumps(params))
    manifest = tmp_path / "m.json"

    def run_gt(**flow):
        params["flow"].update(flow)
        write_params(tmp_path, params)
        assert in_process(tmp_path, "flow_gt.py", "--out", manifest) == 0
        return json.loads(manifest.read_text())

    used = run_gt(method="dis", epe=True, gt_root=str(gt_root))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(gt_root.glob("*.npy"))}
    assert used == {"used": True, "root": str(gt_root), "files": files}
    assert sorted(used["files"]) == ["0001.npy", "0002.npy", "0003.npy"]
    assert run_gt(method="gt", epe=False) == used
    assert run_gt(method="dis", epe=False, gt_root=str(tmp_path / "nowhere")) == {"used": False}
    # stage flow checks the manifest it depends on
    args = ("--data", str(cwd / "data/prepared"), "--gt-manifest", str(manifest))
    assert run_flow(tmp_path, params, *args, method="dis", epe=True, gt_root=str(gt_root),
                    compare=[]) == 2
    assert "m.json: written for other flow params" in capsys.readouterr().err and not (tmp_path / "reports").exists()
    assert run_flow(tmp_path, params, *args, method="dis", epe=False) == 0
    assert json.loads((tmp_path / "reports/flow.json").read_text())["epe"] is None
    params["flow"].update(epe=True, gt_root="missing")
    write_params(tmp_path, params)
    r = stage(tmp_path, "flow_gt.py", "--out", str(tmp_path / "m2.json"))      # its contract, in its own process
    fails_cleanly(r, "missing: ground-truth flow folder not found (flow.gt_root)")
    assert not (tmp_path / "m2.json").exists()
