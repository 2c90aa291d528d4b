"""Pseudo labels, their thresholds and their analysis in bounded memory equal the exact whole-set code they
replaced (``pseudo_labels_reference.py``), bit for bit: radix selection against sorting, CBST's thresholds,
Table 7's search, P-mIoU at equal proportion, and stage ``pseudo_labels``' files and report."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import pseudo_labels_reference as ref
from helpers import PAN_T as T, panning_clips, sharp_model, write_pan_flows
from videoda.config.stages import stage_config
from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.data.clips import Clip
from videoda.domain_adaptation.order_statistics import RadixSelect, float_keys, kth_largest
from videoda.domain_adaptation.pseudo_label_analysis import (PseudoLabelAnalysis, knob_at_proportion,
                                                             miou_at_proportion, table7_p_miou)
from videoda.domain_adaptation.pseudo_labels import (AGGREGATED, GENERATORS, SINGLE_FRAME, class_balanced_thresholds,
                                                     label_stream, make_pseudo_labels, write_clip_pseudo_labels)
from videoda.flow.store import FlowStore
from videoda.utils.device import CPU, Runtime

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def label_config(**changes):
    return dataclasses.replace(stage_config("pseudo_labels", params()).labels, **changes)


def labels_of(maxima, cfg, compute=CPU):
    """``label_stream`` collected: ({name: labels (T, H, W) uint8 numpy}, the final thresholds)."""
    out, theta = {}, None
    for name, labels, theta in label_stream(maxima, cfg, compute):
        out[name] = labels.cpu().numpy()
    return out, theta


def stage_work(model, clips, store, cfg, out, compute=CPU):
    """Stage ``pseudo_labels``' work: the labels written under ``out``, and their report (tau 1)."""
    analysis = PseudoLabelAnalysis(cfg, 1, store)
    make_pseudo_labels(model, clips, store, cfg, out, compute, analysis)
    return analysis


def tied_maxima(rng, clips=3, shape=(4, 6, 8), levels=7, classes=5, dtype=np.float32):
    """[(name, (conf, pred))] with heavy ties (confidences on a grid of ``levels`` values, 0 and 1 included)
    and class 2 absent (an empty class)."""
    out = []
    for i in range(clips):
        conf = (rng.integers(0, levels, shape) / (levels - 1)).astype(dtype)
        pred = rng.choice([c for c in range(classes) if c != 2], shape).astype(np.uint8)
        out.append((f"c{i}", (conf, pred)))
    return out


# --- radix selection ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radix_select_equals_sorting_with_ties_empty_groups_and_uneven_chunks(dtype):
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.integers(0, 5, 3000) / 4, rng.random(2000), [0.0, 1.0, np.inf]]).astype(dtype)
    groups = rng.choice([0, 1, 3], values.size)                           # group 2 is empty
    cuts = [0, 0, 17, 17, 1000, 2999, values.size]                         # empty and uneven chunks
    chunks = lambda: ((values[a:b], groups[a:b]) for a, b in zip(cuts, cuts[1:]))  # noqa: E731
    selector = RadixSelect(chunks, 4)
    assert selector.counts.tolist() == [int((groups == g).sum()) for g in range(4)]
    for trial in range(4):
        ranks = [None if selector.counts[g] == 0 or (trial == 3 and g == 0) else
                 [0, selector.counts[g] - 1, selector.counts[g] // 2, 1234 % selector.counts[g]][trial]
                 for g in range(4)]
        got, above, equal = selector.select(ranks)
        for g, r in enumerate(ranks):
            if r is None:
                assert np.isnan(got[g]) and above[g] == equal[g] == 0
                continue
            desc = np.sort(values[groups == g])[::-1]
            assert got[g] == desc[r] and np.float64(desc[r]).tobytes() == np.float64(got[g]).tobytes()
            assert above[g] == (desc > desc[r]).sum() and equal[g] == (desc == desc[r]).sum()


def test_radix_select_rejects_what_does_not_sort_by_its_bits():
    for bad in ([0.5, -0.25], [0.5, -0.0], [0.5, np.nan]):
        with pytest.raises(ValueError, match=">= 0"):
            float_keys(np.array(bad, np.float32))
    with pytest.raises(ValueError, match="float32 or float64"):
        float_keys(np.array([1, 2], np.int32))
    stream = lambda: iter([(np.ones(3, np.float32), np.zeros(3, int))])  # noqa: E731
    with pytest.raises(ValueError, match="out of range"):
        kth_largest(stream, 2, lambda counts: [0, 0])                      # group 1 has no value
    # an empty stream selects nothing
    values, above, equal, counts = kth_largest(lambda: iter([]), 3, lambda counts: [None] * 3)
    assert np.isnan(values).all() and counts.tolist() == [0, 0, 0]



def test_radix_select_memory_does_not_grow_with_the_stream_or_its_ties():
    """Confidences saturate at exactly 1.0: one bin holds most values. Selection counts them, it never collects
    them: the peak memory numpy allocates while selecting is the same for a stream 8 times longer."""
    import tracemalloc

    values = np.ones(50_000, np.float32)
    values[:5_000] = np.linspace(0, 1, 5_000, endpoint=False)
    groups = np.zeros(values.size, np.int64)

    def peak(chunks):
        tracemalloc.start()
        try:
            selector = RadixSelect(lambda: ((values, groups) for _ in range(chunks)), 1)
            got, above, equal = selector.select([chunks * 30_000])              # among the ties at 1.0
            assert (got[0], above[0], equal[0]) == (1.0, 0, chunks * 45_000)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(16) <= 1.05 * peak(2)

# --- CBST, the adaptive generators, Table 7 ------------------------------------------------------------------------

@pytest.mark.parametrize("portion", [0.0, 0.2, 0.5, 0.999, 1.0])
def test_streamed_cbst_thresholds_equal_the_whole_set_ones(portion):
    maxima = tied_maxima(np.random.default_rng(2))
    conf = np.concatenate([c.ravel() for _, (c, _) in maxima])
    pred = np.concatenate([p.ravel() for _, (_, p) in maxima])
    expected = ref.class_balanced_thresholds(conf, pred, portion, NUM_CLASSES)
    got = class_balanced_thresholds(maxima, portion, NUM_CLASSES)
    assert got.tobytes() == expected.tobytes() and got[2] == 1.0           # the empty class is never labelled


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_label_stream_equals_the_whole_set_labels_for_lists_and_one_shot_streams(kind):
    maxima = tied_maxima(np.random.default_rng(3), levels=11)
    cfg = label_config(pseudo_label=kind, cbst_portion=0.3, alpha=0.4, beta=0.5, gamma=1.0, init_theta=0.9)
    expected, theta = ref.label_maxima(kind, maxima, cfg)
    got, got_theta = labels_of(maxima, cfg)
    assert got_theta.tobytes() == theta.tobytes()
    assert list(got) == list(expected) and all(np.array_equal(got[k], expected[k]) for k in expected)
    # a one-shot iterator: the adaptive rules label it as it comes; CBST, which reads the set twice, refuses it
    if GENERATORS[kind].needs_whole_set:
        with pytest.raises(ValueError, match="not an iterator"):
            labels_of(iter(maxima), cfg)
    else:
        streamed, streamed_theta = labels_of(iter(maxima), cfg)
        assert all(np.array_equal(streamed[k], expected[k]) for k in expected)
        assert streamed_theta.tobytes() == theta.tobytes()


@pytest.mark.parametrize("kind", ["cbst", "iast", "clip_agg"])
@pytest.mark.parametrize("proportion", [0.0, 0.35, 0.6, 1.0])
def test_labels_at_proportion_equals_the_whole_set_search(kind, proportion):
    maxima = tied_maxima(np.random.default_rng(4), levels=9)
    cfg = label_config(pseudo_label=kind, alpha=0.5, beta=0.5, gamma=0.0, init_theta=0.9)
    labels, knob, reached = ref.labels_at_proportion(kind, maxima, cfg, proportion)
    assert knob_at_proportion(maxima, cfg, proportion) == (knob, reached)
    # the labels at that knob, made again, are the ones the search had found
    tuned = dataclasses.replace(cfg, **{GENERATORS[kind].knob: knob})
    again, _ = labels_of(maxima, tuned)
    assert all(np.array_equal(again[k], labels[k]) for k in labels)


def test_table7_equals_the_whole_set_table():
    rng = np.random.default_rng(5)
    single = tied_maxima(rng, levels=13)
    aggregated = [(n, (np.clip(c + 0.05, 0, 1).astype(np.float32), p)) for n, (c, p) in tied_maxima(rng, levels=5)]
    clips = []
    for name, (conf, _) in single:
        gt = rng.integers(0, 5, conf.shape).astype(np.uint8)
        gt[:, 0] = IGNORE_ID
        clips.append(Clip(name, np.zeros(conf.shape + (3,), np.uint8), gt, np.array([True, False, True, True]),
                          np.array([f"{name}_{t}" for t in range(len(conf))])))
    cfg = label_config(pseudo_label="clip_agg", alpha=0.5, beta=0.3, gamma=1.0, init_theta=0.9,
                       equal_proportions=(0.3, 0.8))
    expected = ref.table7_p_miou(single, aggregated, clips, cfg, [0.3, 0.8])
    assert table7_p_miou({SINGLE_FRAME: single, AGGREGATED: aggregated}, clips, cfg) == expected


# --- P-mIoU at equal proportion -----------------------------------------------------------------------------------

@pytest.mark.parametrize("proportion", [0.0, 1e-4, 0.37, 0.5, 1.0])
def test_miou_at_proportion_equals_the_stable_sort(proportion):
    rng = np.random.default_rng(6)
    n = 5000
    conf = (rng.integers(0, 6, n) / 5).astype(np.float32)                  # ties decided by the pixel order
    gt = rng.integers(0, 4, n).astype(np.uint8)
    gt[rng.random(n) < 0.2] = IGNORE_ID
    pred = np.where(rng.random(n) < conf, gt, rng.integers(0, 4, n)).astype(np.uint8)
    pred[gt == IGNORE_ID] = 7
    expected = ref.miou_at_proportion(conf, pred, gt, proportion)
    cuts = [0, 1, 1, 400, 2500, 4999, n]
    chunks = lambda: ((conf[a:b], pred[a:b], gt[a:b]) for a, b in zip(cuts, cuts[1:]))  # noqa: E731
    assert miou_at_proportion(chunks, proportion) == expected            # None when nothing is kept
    # no annotated pixel at all
    void = np.full(9, IGNORE_ID, np.uint8)
    expected = ref.miou_at_proportion(conf[:9], pred[:9], void, proportion)
    assert miou_at_proportion(lambda: iter([(conf[:9], pred[:9], void)]), proportion) == expected is None


# --- the stage's work on a tiny model and clips ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo")
    rng = np.random.default_rng(7)
    clips = panning_clips(rng)
    flow_path = root / "flow.h5"
    write_pan_flows(flow_path, clips, rng)
    return {"root": root, "clips": clips, "flow": flow_path, "model": sharp_model(params())}


@pytest.mark.parametrize("kind, equal_proportions", [("clip_agg", [0.5]), ("cbst", []), ("iast", []), ("clip", [])])
def test_stage_work_writes_the_same_files_and_report_as_the_whole_set_code(tiny, tmp_path, kind, equal_proportions):
    cfg = label_config(pseudo_label=kind, equal_proportions=tuple(equal_proportions), batch_size=2)
    model, clips = tiny["model"], tiny["clips"]
    with FlowStore(tiny["flow"]) as store:
        labels, theta = ref.generate_pseudo_labels(model, clips, store, cfg)
        expected = ref.pseudo_labels_report(model, clips, store, labels, theta, cfg, tau=1)
        for clip in clips:
            write_clip_pseudo_labels(tmp_path / "old", clip, labels[clip.name])
        analysis = stage_work(model, clips, store, cfg, tmp_path / "new")
        plain_theta = make_pseudo_labels(model, clips, store, cfg, tmp_path / "plain")     # without the analysis
    report = analysis.report
    assert json.dumps(report) == json.dumps(expected)                    # the same numbers, in the same order
    assert analysis.summary == {k: report[k] for k in ("p_miou", "proportion", "table7") if k in report}
    assert ("table7" in analysis.summary) == bool(equal_proportions)
    old = sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*.png"))
    assert len(old) == len(clips) * T
    for made in ("new", "plain"):
        files = sorted(p.relative_to(tmp_path / made) for p in (tmp_path / made).rglob("*.png"))
        assert files == old and all((tmp_path / "old" / p).read_bytes() == (tmp_path / made / p).read_bytes()
                                    for p in files), made
    assert sorted(q.name for q in tmp_path.iterdir()) == ["new", "old", "plain"]   # the spills are gone
    assert plain_theta.tobytes() == theta.tobytes()
    proportion = report["proportion"]
    assert 0 < proportion < 100 and report["cutout_refinement"]["pixels_before"] > 0


def test_a_clip_in_memory_at_a_time(tiny, tmp_path, monkeypatch):
    """Each clip's labels are on disk before the next clip is predicted."""
    import videoda.domain_adaptation.pseudo_labels as pl

    seen = []
    real = pl.clip_maxima

    def spy(model, clip, *args, **kwargs):
        seen.append((clip.name, sorted(p.name for p in (tmp_path / "out").glob("*"))))
        return real(model, clip, *args, **kwargs)

    monkeypatch.setattr(pl, "clip_maxima", spy)
    with FlowStore(tiny["flow"]) as store:
        stage_work(tiny["model"], tiny["clips"], store, label_config(batch_size=2), tmp_path / "out")
    assert seen == [("clip0", []), ("clip1", ["clip0"]), ("clip2", ["clip0", "clip1"])]



@pytest.mark.parametrize("kind", ["clip_agg", "cbst"])
def test_the_flow_metadata_held_does_not_grow_with_the_clips(tiny, tmp_path, kind):
    """HDF5's metadata of every clip read, kept while the flow store was open, fragmented the heap: the stage's
    peak RSS grew with the clips (about 5 bytes a pixel). Reading clip after clip (CBST: all of them twice), the
    store's metadata cache holds what one clip needs."""
    cached = []
    with FlowStore(tiny["flow"]) as store:
        read = store.flow

        def spy(clip, src, dst):
            flow = read(clip, src, dst)
            cached.append((clip, store.file.id.get_mdc_size()[2]))      # bytes in HDF5's metadata cache
            return flow

        store.flow = spy
        stage_work(tiny["model"], tiny["clips"], store, label_config(pseudo_label=kind, batch_size=2),
                   tmp_path / "out")
    first = next(i for i, (clip, _) in enumerate(cached) if clip != "clip0")     # the first clip's reads
    assert {clip for clip, _ in cached} == {"clip0", "clip1", "clip2"}
    assert max(size for _, size in cached) == max(size for _, size in cached[:first])

# --- the device paths --------------------------------------------------------------------------------------------

def test_accelerator_code_paths_give_the_same_numbers(monkeypatch):
    """The torch branches that run on an accelerator (kthvalue, torch comparisons, torch.bincount), forced onto
    CPU tensors here, select and label exactly as the numpy branches."""
    import videoda.domain_adaptation.order_statistics as order_statistics
    import videoda.domain_adaptation.pseudo_labels as pl

    maxima = tied_maxima(np.random.default_rng(8), levels=11)
    cfgs = {kind: label_config(pseudo_label=kind, cbst_portion=0.3, alpha=0.4, beta=0.5, gamma=1.0) for kind in GENERATORS}
    expected = {kind: ref.label_maxima(kind, maxima, cfg) for kind, cfg in cfgs.items()}
    conf = np.concatenate([c.ravel() for _, (c, _) in maxima])
    gt = np.concatenate([p.ravel() for _, (_, p) in maxima])
    miou = ref.miou_at_proportion(conf, gt[::-1].copy(), gt, 0.4)
    monkeypatch.setattr(order_statistics, "_on_cpu", lambda device: False)
    monkeypatch.setattr(pl, "on_accelerator", torch.is_tensor)
    monkeypatch.setattr(pl, "placed", lambda array, device: torch.as_tensor(array))
    for kind, cfg in cfgs.items():
        labels, theta = labels_of(maxima, cfg)
        assert theta.tobytes() == expected[kind][1].tobytes(), kind
        assert all(np.array_equal(labels[k], expected[kind][0][k]) for k in labels), kind
    assert miou_at_proportion(lambda: iter([(conf, gt[::-1].copy(), gt)]), 0.4) == miou


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_thresholds_selection_and_labels_equal_the_cpu(tiny, tmp_path):
    maxima = tied_maxima(np.random.default_rng(9), levels=11)
    gpu = Runtime(torch.device("cuda"))
    for kind in GENERATORS:
        cfg = label_config(pseudo_label=kind, cbst_portion=0.3, alpha=0.4, beta=0.5, gamma=1.0)
        cpu, theta = labels_of(maxima, cfg)
        cuda = list(label_stream([(n, (torch.from_numpy(c).cuda(), torch.from_numpy(p).cuda()))
                                  for n, (c, p) in maxima], cfg, gpu))
        assert all(lab.is_cuda and np.array_equal(lab.cpu().numpy(), cpu[n]) for n, lab, _ in cuda), kind
        assert cuda[-1][2].tobytes() == theta.tobytes(), kind
    # the whole stage's work on the GPU: the model's softmax differs in its last bits, the labels barely
    cfg = label_config(pseudo_label="clip_agg", batch_size=2)
    model = tiny["model"]
    with FlowStore(tiny["flow"]) as store:
        on_cpu = stage_work(model, tiny["clips"], store, cfg, tmp_path / "cpu").report
        try:
            on_gpu = stage_work(model.to(gpu.device), tiny["clips"], store, cfg, tmp_path / "gpu", gpu).report
        finally:
            model.cpu()                          # the fixture's model, shared with the other tests
    assert abs(on_cpu["proportion"] - on_gpu["proportion"]) < 0.5
