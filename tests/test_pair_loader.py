"""The streaming pair loader against the in-thread sampler it replaced (``reference_pairs``, kept verbatim): the
same batches bit for bit for 0 and 2 workers, ``skip(n)`` for resuming, VAT's batches, VST's batched refinement
on real (DIS) flows, and VST's view of the target clips without their ground truth."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reference_pairs import PairSampler as OldPairSampler
from reference_pairs import VATBatches as OldVATBatches
from reference_pairs import refined_pair_labels
from reference_pairs import unlabelled_clips as old_unlabelled_clips
from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.data.clips import Clip
from videoda.data.pairs import PairDataset, PairLoader
from videoda.data.synth import make_styles, render_sequence
from videoda.domain_adaptation.adversarial import VATBatches
from videoda.domain_adaptation.pseudo_labels import PseudoLabelFiles, write_clip_pseudo_labels
from videoda.domain_adaptation.self_training import PseudoLabelPairs, VSTBatches, unlabelled_clips
from videoda.errors import DataError
from videoda.flow.backends import DisFlow
from videoda.flow.store import FlowStore, FlowWriter, stored_pairs
from videoda.utils.device import CPU


def random_clips(seed=0, lengths=(7, 5, 9), size=(16, 24)):
    """Random frames and labels; frame t labelled when t is even (``require_label`` has a choice)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        labels = rng.integers(0, NUM_CLASSES, (n, *size)).astype(np.uint8)
        labeled = np.arange(n) % 2 == 0
        labels[~labeled] = IGNORE_ID
        out.append(Clip(f"c{i}", rng.integers(0, 256, (n, *size, 3), dtype=np.uint8), labels, labeled,
                        np.array([f"c{i}_{t}" for t in range(n)])))
    return out


def assert_same_batch(new, old):
    assert set(new) == set(old)
    for k in old:
        assert new[k].dtype == old[k].dtype and torch.equal(new[k], old[k]), k


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_equals_the_in_thread_sampler(workers):
    clips = random_clips()
    for tau, require_label, hflip, seed in [(1, False, True, 0), (2, True, True, 5), (3, False, False, 9)]:
        old = OldPairSampler(clips, tau, 4, seed, require_label=require_label, hflip=hflip)
        with PairLoader(PairDataset(clips, tau, require_label=require_label), 4, seed, hflip=hflip,
                        compute=replace(CPU, workers=workers)) as new:
            for _ in range(5):
                assert_same_batch(new.sample(), old.sample())


def test_loader_leaves_the_global_generators_alone():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    with PairLoader(PairDataset(random_clips(), 1), 2, 0, compute=replace(CPU, workers=1)) as loader:
        loader.sample()
        loader.skip(1)
        loader.sample()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_resumes_the_uninterrupted_stream(workers):
    clips = random_clips(1)
    with PairLoader(PairDataset(clips, 2), 3, 11, compute=replace(CPU, workers=workers)) as loader:
        stream = [loader.sample() for _ in range(7)]
    with PairLoader(PairDataset(clips, 2), 3, 11, compute=replace(CPU, workers=workers)) as resumed:
        resumed.skip(4)                                  # before the first sample(): nothing loaded
        assert_same_batch(resumed.sample(), stream[4])
        assert_same_batch(resumed.sample(), stream[5])
    with PairLoader(PairDataset(clips, 2), 3, 11, compute=replace(CPU, workers=workers)) as midway:
        assert_same_batch(midway.sample(), stream[0])
        midway.skip(0)
        assert_same_batch(midway.sample(), stream[1])
        midway.skip(2)                                   # drops what the workers prefetched
        assert_same_batch(midway.sample(), stream[4])
        assert midway.position == 5
    with pytest.raises(ValueError, match="workers"):
        PairLoader(PairDataset(clips, 2), 3, 11, compute=replace(CPU, workers=-1))


def test_vat_batches_unchanged_and_skip_both_streams():
    source, target = random_clips(2), random_clips(3, lengths=(6, 8))
    old = OldVATBatches(OldPairSampler(source, 1, 2, 4, require_label=True, hflip=True),
                        OldPairSampler(target, 1, 2, 5, hflip=True))
    new = VATBatches(PairLoader(PairDataset(source, 1, require_label=True), 2, 4),
                     PairLoader(PairDataset(target, 1, labels=False), 2, 5))
    stream = [old.sample() for _ in range(6)]
    for k in range(3):
        assert_same_batch(new.sample(), stream[k])
    new.skip(2)
    assert_same_batch(new.sample(), stream[5])


# --- VST -------------------------------------------------------------------------------------------------------

TAU, H, W = 2, 18, 30          # 540 pixels a frame: not a multiple of the vector width, the kernels' tails run


@pytest.fixture(scope="module")
def vst_case(tmp_path_factory):
    """Two rendered target clips, their DIS flows in a real flow store, and noisy pseudo labels with holes."""
    _, style = make_styles(1.0, 0)
    rng = np.random.default_rng(0)
    clips, pseudo = [], {}
    path = tmp_path_factory.mktemp("flow") / "flow.h5"
    dis = DisFlow("ultrafast")
    with FlowWriter(path, [1, TAU], H, W, "dis", dis.attrs) as writer:
        for i, n in enumerate((6, 7)):
            images, labels, _ = render_sequence(10 + i, H, W, n, style)
            clip = Clip(f"v{i}", images, labels.astype(np.uint8), np.ones(n, bool),
                        np.array([f"v{i}_{t:02d}" for t in range(n)]))
            pairs = stored_pairs(n, [1, TAU])
            writer.add_clip(clip.name, n, dict(zip(pairs, dis.flows(clip, pairs))))
            noisy = np.where(rng.random(labels.shape) < 0.2, rng.integers(0, NUM_CLASSES, labels.shape), labels)
            pseudo[clip.name] = np.where(rng.random(labels.shape) < 0.15, IGNORE_ID, noisy).astype(np.uint8)
            clips.append(clip)
    return clips, pseudo, path


@pytest.mark.parametrize("refine,workers", [("cutout", 0), ("fillin", 0), ("none", 0), ("cutout", 2)])
def test_batched_refinement_equals_the_per_pair_refinement(vst_case, refine, workers):
    clips, pseudo, path = vst_case
    alpha, threshold = 2.0, 0.7
    hidden = unlabelled_clips(clips)
    unrefined = VSTBatches(PairLoader(PseudoLabelPairs(hidden, TAU, pseudo, "none"), 3, 7), "none", alpha, threshold)
    changed = 0
    with FlowStore(path) as store:
        old = OldPairSampler(old_unlabelled_clips(clips), TAU, 3, 7, hflip=True,
                             pair_labels=refined_pair_labels(pseudo, store, refine, alpha, threshold))
        pairs = PseudoLabelPairs(hidden, TAU, pseudo, refine, path if refine != "none" else None)
        with PairLoader(pairs, 3, 7, hflip=True, compute=replace(CPU, workers=workers)) as target:
            batches = VSTBatches(target, refine, alpha, threshold)
            for _ in range(4):
                expected = old.sample()
                assert_same_batch(batches.sample(), expected)
                changed += int((unrefined.sample()["labels"] != expected["labels"]).sum())
        pairs.close()
    assert (changed > 0) == (refine != "none")        # the case exercises the refinement


def test_batched_refinement_with_a_source_stream(vst_case):
    clips, pseudo, path = vst_case
    source = random_clips(4, size=(H, W))
    old_target = OldPairSampler(old_unlabelled_clips(clips), TAU, 2, 3, hflip=False,
                                pair_labels=refined_pair_labels(pseudo, FlowStore(path), "fillin"))
    old_source = OldPairSampler(source, TAU, 2, 4, require_label=True)
    batches = VSTBatches(PairLoader(PseudoLabelPairs(unlabelled_clips(clips), TAU, pseudo, "fillin", path), 2, 3,
                                    hflip=False), "fillin", 2.0, 0.7,
                         PairLoader(PairDataset(source, TAU, require_label=True), 2, 4))
    batches.skip(2)
    for _ in range(2):
        old_target.sample(), old_source.sample()
    for _ in range(2):
        new, t, s = batches.sample(), old_target.sample(), old_source.sample()
        assert_same_batch(new, {**t, "source_images": s["images"], "source_labels": s["labels"]})


def test_vst_cannot_see_the_ground_truth(vst_case):
    clips, pseudo, path = vst_case
    hidden = unlabelled_clips(clips)
    for clip, view in zip(clips, hidden):
        assert view.labels.strides == (0, 0, 0) and view.labels.shape == clip.labels.shape   # nothing copied
        assert (view.labels[[0, 2]] == IGNORE_ID).all() and (view.labels[1:3] == IGNORE_ID).all()
        assert view.labels[1].shape == (H, W) and not view.labeled.any()
        assert view.images is clip.images and clip.labeled.all() and (clip.labels != IGNORE_ID).any()
    # The batches are those of clips that never had ground truth: nothing of it reaches training.
    erased = [Clip(c.name, c.images, np.full_like(c.labels, IGNORE_ID), np.zeros(len(c), bool), c.frame_names)
              for c in clips]
    a = VSTBatches(PairLoader(PseudoLabelPairs(hidden, TAU, pseudo, "cutout", path), 2, 1), "cutout", 2.0, 0.7)
    b = VSTBatches(PairLoader(PseudoLabelPairs(erased, TAU, pseudo, "cutout", path), 2, 1), "cutout", 2.0, 0.7)
    for _ in range(3):
        assert_same_batch(a.sample(), b.sample())


def test_pseudo_label_files_read_a_pair_and_refuse_a_wrong_file(vst_case, tmp_path):
    clips, pseudo, _ = vst_case
    clips = unlabelled_clips(clips)
    for clip in clips:
        write_clip_pseudo_labels(tmp_path / "pl", clip, pseudo[clip.name])
    files = PseudoLabelFiles(tmp_path / "pl", clips)
    np.testing.assert_array_equal(files["v1"][[2, 4]], pseudo["v1"][[2, 4]])
    wrong = tmp_path / "pl" / "v0" / "v0_03.png"
    from videoda.utils.images import write_ids
    write_ids(wrong, np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match="v0_03.png.*size"):
        PseudoLabelFiles(tmp_path / "pl", clips)
    wrong.unlink()
    with pytest.raises(DataError, match="v0_03.png"):
        PseudoLabelFiles(tmp_path / "pl", clips)
