"""Fail fast on divergence: every trainer stops at a non-finite loss term (the discriminator's too) or past
``loss_limit``, in one line naming the stage, the step and the term, writing nothing and keeping the last finite
snapshot; a checkpoint whose predictions are not finite stops the stage that reads it, naming the file."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from helpers import (REPO, clips, in_process, link, one_error_line, schedule, tiny_params, write_params,
                     written_files)
from videoda.config.fields import read_params, with_overrides
from videoda.config.stages import stage_config
from videoda.data.classes import NUM_CLASSES
from videoda.data.pairs import PairDataset, PairLoader
from videoda.domain_adaptation.adversarial import DiscriminatorStep
from videoda.domain_adaptation.order_statistics import float_keys
from videoda.domain_adaptation.self_training import VSTData, self_train
from videoda.domain_adaptation.snapshot import Snapshot, snapshot_path
from videoda.domain_adaptation.train import SUPERVISED, Curve, check_losses, make_optimizer, seed_everything, train
from videoda.errors import Diverged, run_stage
from videoda.evaluate import predict_probs
from videoda.model import DeepLabV2, load_checkpoint, save_checkpoint
from videoda.model.build import build_model


def tiny_model():
    return DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,))


def snapshot_steps(path):
    """The step of the snapshot at ``path`` and whether its weights are all finite."""
    state = torch.load(path, weights_only=True)
    return state["step"], all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


# --- the check itself ----------------------------------------------------------------------------------------

def test_check_losses_names_the_first_non_finite_term_and_the_limit():
    check_losses({"seg": 1.0, "d_src": 0.5}, ["seg"], 3, 0, "vat")             # finite, no limit: nothing
    with pytest.raises(Diverged, match=r"^vat: step 3: loss term d_src = nan \(non-finite\); no snapshot was taken"):
        check_losses({"seg": 1.0, "d_src": math.nan}, ["seg"], 3, 0, "vat")
    with pytest.raises(Diverged, match=r"^vat: step 4: total loss 3 > loss_limit 2;"):
        check_losses({"seg": 1.0, "adv": 2.0, "d_src": 9.0}, ["seg", "adv"], 4, 2.0, "vat")
    check_losses({"seg": 1.0, "adv": 0.5, "d_src": 9.0}, ["seg", "adv"], 4, 2.0, "vat")    # d_src is not counted


# --- the trainers: train_source, VAT (its discriminator), VST --------------------------------------------------

def supervised_run(tmp_path, lr, loss_limit=0, snapshot=None, iterations=4):
    seed_everything(0)
    model = tiny_model()
    opt = make_optimizer(model.param_groups(lr), "adam", lr, weight_decay=0.0)
    loader = PairLoader(PairDataset(clips(), 1, require_label=True), 2, 0)
    cfg = schedule(iterations)
    cfg.loss_limit = loss_limit
    return train(model, opt, loader, SUPERVISED, cfg, Curve(tmp_path / "curve.tsv", "train_source"), snapshot)


def test_an_absurd_lr_stops_the_loop_at_the_step_that_diverged_keeping_the_finite_snapshot(tmp_path):
    path = tmp_path / "snap" / "snapshot.pt"
    with pytest.raises(Diverged) as e:
        supervised_run(tmp_path, 1e30, snapshot=Snapshot(path, "k", 1))
    assert str(e.value).startswith("train_source: step 2: loss term seg = nan (non-finite)"), e.value
    assert f"the last finite snapshot (step 1) is kept: {path}" in str(e.value)
    assert snapshot_steps(path) == (1, True)              # step 2's weights (inf) were never saved
    assert not (tmp_path / "curve.tsv").exists()


def test_loss_limit_stops_a_run_whose_total_passes_it(tmp_path):
    with pytest.raises(Diverged, match=r"^train_source: step 1: total loss \S+ > loss_limit 0.01;"):
        supervised_run(tmp_path, 1e-3, loss_limit=0.01, iterations=2)
    assert not (tmp_path / "curve.tsv").exists()
    assert supervised_run(tmp_path, 1e-3, loss_limit=1e6, iterations=2)["final"]["step"] == 2     # under it: runs


def test_train_source_stage_stops_in_one_line_exit_1(bench, tmp_path, capsys):
    cwd = link(tmp_path, bench, "data/prepared")
    params = tiny_params()
    params["train_source"].update(lr=1e30, snapshot_every=1)
    write_params(cwd, params)
    code = in_process(cwd, "train_supervised.py", "--stage", "train_source", "--split", "source",
                      "--out", "models/s.pt", "--curve", "reports/curves/s.tsv")
    snap = snapshot_path("models/s.pt", "train_source")
    line = one_error_line(capsys.readouterr().err, "train_source: step 2: loss term seg", "non-finite", snap)
    assert code == 1, line
    assert [p.relative_to(cwd) for p in written_files(cwd) if "data" not in p.relative_to(cwd).parts[:1]] == [snap]
    assert snapshot_steps(cwd / snap) == (1, True)


def test_vat_stage_stops_at_a_non_finite_discriminator_loss(trained, tmp_path, capsys, monkeypatch):
    cwd = link(tmp_path, trained, "data/prepared", "models/source_only.pt")
    params = tiny_params()
    params["vat"].update(iterations=3, batch_size=2, snapshot_every=1)
    write_params(cwd, params)
    real = DiscriminatorStep.__call__

    def diverging(self, outputs, batch, step):     # the discriminator's target loss overflows at the 2nd step
        losses = real(self, outputs, batch, step)
        return {**losses, "d_tgt": losses["d_tgt"] * math.inf} if step == 1 else losses
    monkeypatch.setattr(DiscriminatorStep, "__call__", diverging)
    code = in_process(cwd, "vat.py", "--init", "models/source_only.pt", "--out", "models/vat.pt",
                      "--curve", "reports/curves/vat.tsv")
    snap = snapshot_path("models/vat.pt", "vat")
    one_error_line(capsys.readouterr().err, "vat: step 2: loss term d_tgt = inf (non-finite)", snap)
    assert code == 1
    assert not (cwd / "models/vat.pt").exists() and not (cwd / "reports/curves/vat.tsv").exists()
    assert snapshot_steps(cwd / snap) == (1, True)


def test_vst_round_stops_at_a_non_finite_loss(tmp_path):
    params = with_overrides(read_params(REPO / "params.yaml"), {
        "vst.rounds": 1, "vst.iterations": 3, "vst.batch_size": 1, "vst.refine": "none", "vst.lr": 1e30,
        "vst.snapshot_every": 1})
    cfg = stage_config("vst", params)
    seed_everything(0)
    target = [dataclasses.replace(c, labels=np.full_like(c.labels, 255), labeled=np.zeros_like(c.labeled))
              for c in clips(seed=3, name="t")]
    pseudo = {c.name: np.random.default_rng(5).integers(0, NUM_CLASSES, c.labels.shape).astype(np.uint8)
              for c in target}
    path = tmp_path / "snapshot.pt"
    with pytest.raises(Diverged, match=r"^vst round 1: step 2: loss term \w+ = (nan|inf|-inf) \(non-finite\); "
                                       r"the last finite snapshot \(step 1\) is kept"):
        self_train(tiny_model(), VSTData(target, pseudo, None, None), cfg, snapshot=Snapshot(path, "k", 1))
    assert snapshot_steps(path) == (1, True)


# --- a checkpoint whose predictions are not finite ---------------------------------------------------------

def nan_checkpoint(path, params):
    model = build_model(stage_config("train_source", params).model)
    with torch.no_grad():
        model.head.branches[0].weight.fill_(math.nan)
    save_checkpoint(path, model)


def test_first_prediction_of_a_nan_checkpoint_names_it_once(tmp_path):
    nan_checkpoint(tmp_path / "bad.pt", tiny_params())
    model, _ = load_checkpoint(tmp_path / "bad.pt")
    images = np.zeros((2, 32, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / 'bad.pt'}: its first predictions are not finite"):
        predict_probs(model, images)
    assert torch.isnan(predict_probs(model, images)).any()      # checked once: later batches are not synced


def test_evaluate_and_pseudo_labels_stop_at_a_nan_checkpoint(bench, tmp_path, capsys):
    cwd = link(tmp_path, bench, "data/synth", "data/prepared")
    params = tiny_params()
    params["flow"]["method"] = "gt"
    write_params(cwd, params)
    nan_checkpoint(cwd / "models/bad.pt", params)
    assert in_process(cwd, "evaluate.py", "--model", "final=models/bad.pt") == 2
    one_error_line(capsys.readouterr().err, "checkpoint models/bad.pt: its first predictions are not finite")
    assert in_process(cwd, "flow.py", "--data", "data/prepared", "--out", "data/flow/target_train.h5",
                      "--report", "reports/flow.json") == 0
    capsys.readouterr()
    assert in_process(cwd, "pseudo_labels.py", "--model", "models/bad.pt") == 2
    one_error_line(capsys.readouterr().err, "checkpoint models/bad.pt: its first predictions are not finite")
    assert not (cwd / "data/pseudo_labels").exists() and not (cwd / "reports/pseudo_labels.json").exists()


def test_a_broken_invariant_inside_a_stage_is_one_line_exit_1(capsys):
    def main():                          # NaN confidences reaching CBST's order statistics
        float_keys(np.array([0.5, math.nan], np.float32))
    with pytest.raises(SystemExit) as e:
        run_stage(main)
    assert e.value.code == 1
    one_error_line(capsys.readouterr().err, "order statistics take values >= 0", "1 NaN")
