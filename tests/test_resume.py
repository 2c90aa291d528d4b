"""Resumable training (videoda/domain_adaptation/snapshot.py): a run stopped after a snapshot and resumed ends
byte-identical to an uninterrupted one (weights, optimisers, discriminator, curve), for the supervised loop, VAT
and VST's rounds, and for a real stage process killed with SIGKILL; stale or damaged snapshots are reported and
ignored."""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import Killed, KilledAfter, clips, schedule, tiny_vst
from videoda.config.fields import read_params, with_overrides
from videoda.config.stages import resolved_json, stage_config
from videoda.data.classes import NUM_CLASSES
from videoda.data.clips import save_clip
from videoda.data.pairs import PairDataset, PairLoader
from videoda.domain_adaptation.adversarial import (AdversarialTerm, DiscriminatorStep, VATBatches,
                                                   adversarial_forward)
from videoda.domain_adaptation.self_training import VSTData, self_train
from videoda.domain_adaptation.snapshot import Snapshot, snapshot_path
from videoda.utils.resume import code_files, run_key
from videoda.domain_adaptation.train import (Curve, Objective, make_optimizer, seed_everything, segmentation_loss,
                                             supervised_forward, train)
from videoda.model import DeepLabV2
from videoda.model.discriminator import Discriminator

REPO = Path(__file__).resolve().parents[1]


def tiny_model():
    return DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,))


def random_term(outputs, batch):
    """A loss that draws from torch's, numpy's and Python's global generators: a resumed run must restore all
    three to end where an uninterrupted one does."""
    scale = torch.rand(()) + float(np.random.rand()) + random.random()
    return {"noise": 1e-3 * scale * outputs["logits"].mean()}


def same(a, b):
    """Bit-exact equality of nested state (tensors compared with torch.equal)."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def PairSampler(clips, tau, batch_size, seed, require_label=False, hflip=True):
    """The training stages' batch stream (``PairLoader`` over a ``PairDataset``), in the old sampler's call form."""
    return PairLoader(PairDataset(clips, tau, require_label=require_label), batch_size, seed, hflip=hflip)


# --- the batch stream's position --------------------------------------------------------------------------

@pytest.mark.parametrize("hflip", [True, False])
def test_skip_draws_what_sample_draws(hflip):
    data = clips(frames=5)
    a = PairSampler(data, 1, 3, seed=4, hflip=hflip)
    b = PairSampler(data, 1, 3, seed=4, hflip=hflip)
    for _ in range(5):
        a.sample()
    b.skip(5)
    assert same(a.sample(), b.sample())


def test_vat_batches_skip_both_streams():
    def batches():
        return VATBatches(PairSampler(clips(seed=1), 1, 2, 0), PairSampler(clips(seed=2, name="t"), 1, 2, 1))
    a, b = batches(), batches()
    for _ in range(3):
        a.sample()
    b.skip(3)
    assert same(a.sample(), b.sample())


# --- the training loop: stopped at a snapshot, resumed -------------------------------------------------------

def supervised_run(tmp_path, name, snapshot=None, resume=False, iterations=7):
    """Seed, build, train: what stage train_source does, with a loss drawing from every global generator."""
    seed_everything(0)
    random.seed(0)                                # random_term's; the stages draw nothing from it
    model = tiny_model()
    opt = make_optimizer(model.param_groups(1e-3), "adam", 1e-3, weight_decay=0.0)
    sampler = PairSampler(clips(), 1, 2, seed=0, require_label=True)
    if resume:
        snapshot.load()
    train(model, opt, sampler, Objective(supervised_forward, (segmentation_loss, random_term)), schedule(iterations),
          Curve(tmp_path / f"{name}.tsv", every=3), snapshot)
    return model.state_dict(), opt.state_dict(), (tmp_path / f"{name}.tsv").read_bytes()


@pytest.mark.parametrize("kill_step", [2, 4])      # inside a logging window (partial sums) and after one
def test_resumed_training_equals_uninterrupted(tmp_path, kill_step):
    plain = supervised_run(tmp_path, "plain")
    path = tmp_path / "snap" / "snapshot.pt"
    with_snapshots = supervised_run(tmp_path, "with", Snapshot(path, "k", 2))
    assert same(plain, with_snapshots)            # snapshotting changes nothing in an uninterrupted run
    with pytest.raises(Killed):
        supervised_run(tmp_path, "killed", KilledAfter(path, "k", 2, kill_step))
    assert torch.load(path, weights_only=True)["step"] == kill_step
    resumed = supervised_run(tmp_path, "resumed", Snapshot(path, "k", 2), resume=True)
    assert same(plain, resumed)


def vat_run(tmp_path, name, snapshot=None, resume=False, iterations=5):
    seed_everything(0)
    random.seed(0)
    model = tiny_model()
    opt = make_optimizer(model.param_groups(1e-3), "adam", 1e-3, weight_decay=0.0)
    disc = Discriminator(NUM_CLASSES, "sequence", base_channels=8)
    d_opt = make_optimizer([{"params": list(disc.parameters()), "lr": 1e-3}], "adam", 1e-3, weight_decay=0.0)
    batches = VATBatches(PairSampler(clips(h=32, seed=1), 1, 2, 0, require_label=True),
                         PairSampler(clips(h=32, seed=2, name="t"), 1, 2, 1))
    terms = (segmentation_loss, AdversarialTerm(disc, "softmax", 0.1), random_term)
    objective = Objective(adversarial_forward, terms, DiscriminatorStep(disc, d_opt, "softmax", iterations))
    if resume:
        snapshot.load()
    train(model, opt, batches, objective, schedule(iterations), Curve(tmp_path / f"{name}.tsv", every=2), snapshot)
    return (model.state_dict(), opt.state_dict(), disc.state_dict(), d_opt.state_dict(),
            (tmp_path / f"{name}.tsv").read_bytes())


def test_resumed_vat_equals_uninterrupted_with_its_discriminator(tmp_path):
    plain = vat_run(tmp_path, "plain")
    path = tmp_path / "snapshot.pt"
    with pytest.raises(Killed):
        vat_run(tmp_path, "killed", KilledAfter(path, "k", 3, 3))
    assert set(torch.load(path, weights_only=True)["extra_step"]) == {"discriminator", "optimizer"}
    assert same(plain, vat_run(tmp_path, "resumed", Snapshot(path, "k", 3), resume=True))


def vst_run(snapshot=None, lambda_source=0.5):
    """Two VST rounds (the second regenerates the pseudo labels), with the source term."""
    cfg, model, target, pseudo = tiny_vst(lambda_source=lambda_source)
    rows = self_train(model, VSTData(target, pseudo, None, clips(seed=4)), cfg, snapshot=snapshot)
    return model.state_dict(), rows


@pytest.mark.parametrize("kill_round, kill_step", [(1, 2), (2, 2)])
def test_resumed_vst_equals_uninterrupted_across_rounds(tmp_path, kill_round, kill_step):
    plain = vst_run()
    path = tmp_path / "snapshot.pt"
    with pytest.raises(Killed):
        vst_run(KilledAfter(path, "k", 2, kill_step, kill_round))
    saved = torch.load(path, weights_only=True)
    assert saved["context"]["round"] == kill_round and ("round_start" in saved["context"]) == (kill_round > 1)
    assert same(plain, vst_run(Snapshot(path, "k", 2)))


# --- damaged and foreign snapshots --------------------------------------------------------------------------

@pytest.fixture
def saved_snapshot(tmp_path):
    path = tmp_path / "snap" / "snapshot.pt"
    with pytest.raises(Killed):
        supervised_run(tmp_path, "killed", KilledAfter(path, "k", 2, 4))
    return path


def test_truncated_snapshot_is_reported_and_ignored(tmp_path, saved_snapshot, capsys):
    data = saved_snapshot.read_bytes()
    saved_snapshot.write_bytes(data[:len(data) // 2])
    capsys.readouterr()
    result = supervised_run(tmp_path, "after", Snapshot(saved_snapshot, "k", 2), resume=True)
    err = [line for line in capsys.readouterr().err.splitlines() if "snapshot" in line]
    assert len(err) == 1 and str(saved_snapshot) in err[0] and "unreadable" in err[0] and "step 0" in err[0]
    assert same(result, supervised_run(tmp_path, "plain"))          # started from zero, nothing mixed in


def test_snapshot_of_another_run_is_reported_and_ignored(saved_snapshot, capsys):
    assert Snapshot(saved_snapshot, "other", 2).load() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(saved_snapshot) in err[0] and "another run" in err[0]
    torch.save({"model": {}}, saved_snapshot)                       # a torch file, not a snapshot
    assert Snapshot(saved_snapshot, "k", 2).load() is None
    assert "not a training snapshot" in capsys.readouterr().err


def test_remove_deletes_the_snapshot_and_its_empty_folders(tmp_path):
    snapshot = Snapshot(snapshot_path(tmp_path / "models" / "m.pt", "stage"), "k", 1)
    snapshot.save({"step": 1})
    assert snapshot.path == tmp_path / "models" / ".snapshots" / "stage" / "snapshot.pt" and snapshot.path.is_file()
    snapshot.remove()
    assert list((tmp_path / "models").iterdir()) == []


def test_run_key_follows_params_checkpoints_and_data(tmp_path):
    params, init, data = tmp_path / "p.json", tmp_path / "init.pt", tmp_path / "data"
    params.write_text("{}")
    init.write_bytes(b"weights")
    data.mkdir()
    (data / "a.npz").write_bytes(b"1234")

    def key():
        return run_key("s", params, files=[init], data=[data])

    k = key()
    assert k == key() and k != run_key("other_stage", params, files=[init], data=[data])
    params.write_text("{ }")
    assert key() != k
    params.write_text("{}")
    assert key() == k
    init.write_bytes(b"weightz")                    # same size, other bytes
    assert key() != k
    init.write_bytes(b"weights")
    k = key()
    stat = (data / "a.npz").stat()
    (data / "a.npz").write_bytes(b"5678")          # same name and size, rewritten: a new modification time
    os.utime(data / "a.npz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert key() != k
    k = key()
    (data / "b.npz").write_bytes(b"")              # a new file
    assert key() != k


def test_run_key_hashes_the_stage_scripts_code_as_dvc_yaml_lists_it(tmp_path):
    params = tmp_path / "p.json"
    params.write_text("{}")
    code = code_files(REPO / "stages/vat.py")
    listed = [d for d in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["vat"]["deps"] if d.endswith(".py")]
    # its import closure (what dvc.yaml lists), not what this test process happens to have loaded
    assert set(code) == set(listed) and "videoda/domain_adaptation/adversarial.py" in code
    assert "videoda/domain_adaptation/self_training.py" not in code and all(f.is_file() for f in code.values())
    keys = {run_key("s", params, script) for script in (None, REPO / "stages/vat.py", REPO / "stages/vst.py")}
    assert len(keys) == 3


# --- a real stage process, killed with SIGKILL ------------------------------------------------------------

@pytest.mark.slow
def test_killed_stage_resumes_to_the_same_checkpoint(tmp_path):
    """stages/train_supervised.py on a tiny split: killed after its first snapshot, rerun, it resumes and writes
    the checkpoint and curve of an uninterrupted run, byte for byte, and removes its snapshot."""
    for c in clips():
        save_clip(tmp_path / "data" / "source" / f"{c.name}.npz", c)
    params = with_overrides(read_params(REPO / "params.yaml"), {
        "model.num_layers": 1, "model.aspp_rates": [1], "train_source.iterations": 80,
        "train_source.batch_size": 2, "train_source.threads": 1, "train_source.snapshot_every": 5})
    (tmp_path / "train_source.json").write_text(resolved_json(params, "train_source"))

    def command(out):
        return [sys.executable, str(REPO / "stages" / "train_supervised.py"), "--stage", "train_source",
                "--params", "train_source.json", "--split", "source", "--data", "data",
                "--out", f"{out}/model.pt", "--curve", f"{out}/curve.tsv"]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    snapshot = tmp_path / "resumed" / ".snapshots" / "train_source" / "snapshot.pt"
    # The uninterrupted run beside the one to kill: two single-threaded processes, one start-up's wait.
    plain = subprocess.Popen(command("plain"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    killed = subprocess.Popen(command("resumed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not snapshot.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the stage ended before its first snapshot could be seen"
    assert snapshot.exists() and not (tmp_path / "resumed" / "model.pt").exists()
    assert plain.wait() == 0, plain.stderr.read()
    rerun = subprocess.run(command("resumed"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming at step" in rerun.stdout
    for f in ("model.pt", "curve.tsv"):
        assert (tmp_path / "resumed" / f).read_bytes() == (tmp_path / "plain" / f).read_bytes(), f
    assert not (tmp_path / "resumed" / ".snapshots").exists()
