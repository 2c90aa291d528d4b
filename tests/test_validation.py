"""The trainers' validation curves (videoda/domain_adaptation/validation.py): when a run scores its model, the
rows it writes (equal to ``evaluate``'s score of the same weights), that scoring changes no weight, that a resumed
run's curve is an uninterrupted one's (also across VST's rounds), the best-of-snapshots selection against
hand-computed cases, and the curve of a stage trained by two processes."""

import copy
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import Killed, KilledAfter, clips, in_process, schedule, synth_and_prepare, tiny_params, tiny_vst
from videoda.config.fields import read_params, with_overrides
from videoda.config.stages import resolve, resolved_json, stage_config
from videoda.config.training import Validation
from videoda.data.classes import DEFAULT, NUM_CLASSES
from videoda.data.clips import save_clip
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.self_training import VSTData, self_train
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import (Curve, Objective, make_optimizer, seed_everything, segmentation_loss,
                                             supervised_forward, train, write_curve)
from videoda.domain_adaptation.validation import (SELECTION, Validator, best_on_val, read_validation,
                                                  validation_folder, validation_path, with_selection)
from videoda.errors import DataError
from videoda.evaluate import evaluate_clips
from videoda.model import DeepLabV2, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def validation_cfg(every, label_stride=5, resolution="prepared"):
    return Validation(validate_every=every, label_stride=label_stride, resolution=resolution, classes=DEFAULT,
                      batch_size=4)


def val_clips():
    return clips(n=2, frames=4, h=16, w=32, seed=7, name="v")


# --- selection and files, by hand ------------------------------------------------------------------------------

def test_due_every_n_steps_and_at_the_last():
    v = Validator([], validation_cfg(3))
    assert [s for s in range(1, 11) if v.due(s, 10)] == [3, 6, 9, 10]
    assert not any(Validator([], validation_cfg(0)).due(s, 10) for s in range(1, 11))


def test_best_snapshot_is_the_highest_miou_the_earliest_on_a_tie():
    rows = [{"step": 2, "mIoU": 40.0, "VPQ": 20.0}, {"step": 4, "mIoU": 55.5, "VPQ": 30.0},
            {"step": 6, "mIoU": 55.5, "VPQ": 31.0}, {"step": 8, "mIoU": None, "VPQ": None},
            {"step": 10, "mIoU": 50.0, "VPQ": None}]
    assert best_on_val(rows) == {"step": 4, "mIoU": 55.5, "VPQ": 30.0, "snapshots": 4}
    assert best_on_val([]) is None and best_on_val([{"step": 1, "mIoU": None}]) is None


def test_curves_round_trip_and_the_selection_is_added_labelled(tmp_path):
    folder = tmp_path / "validation"
    write_curve(folder / "vst.tsv", [{"step": 200, "mIoU": 41.25, "VPQ": None},
                                     {"step": 400, "mIoU": 47.85, "VPQ": None},
                                     {"step": 600, "mIoU": 46.0, "VPQ": None}])
    write_curve(folder / "vat.tsv", [])                        # a run that did not validate: a header only
    assert read_validation(folder / "vst.tsv")[1] == {"step": 400, "mIoU": 47.85, "VPQ": None}
    scores = {"vat": {"mIoU": 40.0, "VPQ": None}, "vst": {"mIoU": 46.0, "VPQ": None}, "oracle": {"mIoU": 60.0}}
    out = with_selection(scores, folder)
    assert out == {**scores, SELECTION: {"vst": {"step": 400, "mIoU": 47.85, "VPQ": None, "snapshots": 3}}}
    assert list(out)[:3] == list(scores)                       # the headline first: the last checkpoints
    assert with_selection(scores, tmp_path / "none") is scores  # no curve: the scores of before, as they were
    (folder / "bad.tsv").write_text("step\tmIoU\nx\t1\n")
    with pytest.raises(DataError, match="bad.tsv: row 1 is not a validation row"):
        read_validation(folder / "bad.tsv")


def test_the_curve_lies_beside_the_training_curves_folder():
    assert validation_path("reports/curves/vat.tsv") == Path("reports/validation/vat.tsv")
    assert validation_folder("reports/scores.json") == Path("reports/validation")


# --- in the training loop -----------------------------------------------------------------------------------

def tiny_model():
    return DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,))


def supervised_run(tmp_path, name, every, snapshot=None, iterations=5):
    seed_everything(0)
    model = tiny_model()
    opt = make_optimizer(model.param_groups(1e-3), "adam", 1e-3, weight_decay=0.0)
    sampler = PairLoader(PairDataset(clips(), 1, require_label=True), 2, 0)
    if snapshot is not None:
        snapshot.load()
    validation = Validator(val_clips(), validation_cfg(every), tmp_path / f"{name}-val.tsv") if every else None
    result = train(model, opt, sampler, Objective(supervised_forward, (segmentation_loss,)), schedule(iterations),
                   Curve(tmp_path / f"{name}.tsv", every=2, validation=validation), snapshot)
    return model, result


def test_validation_scores_the_model_and_changes_no_weight(tmp_path):
    plain, _ = supervised_run(tmp_path, "plain", 0)
    model, result = supervised_run(tmp_path, "val", 2)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
    assert (tmp_path / "plain.tsv").read_bytes() == (tmp_path / "val.tsv").read_bytes()
    assert [r["step"] for r in result["validation"]] == [2, 4, 5]
    assert read_validation(tmp_path / "val-val.tsv") == result["validation"]
    assert model.training                                    # put back in training mode after each scoring
    # the last row is what stage evaluate gives the final weights (its protocol, its code)
    report, _ = evaluate_clips(model, val_clips(), validation_cfg(2))
    assert result["validation"][-1] == {"step": 5, "mIoU": report["miou"], "VPQ": report["vpq"]["mean"]}


@pytest.mark.parametrize("kill_step", [2, 4])
def test_resumed_run_writes_the_uninterrupted_curve(tmp_path, kill_step):
    supervised_run(tmp_path, "plain", 2)
    path = tmp_path / "snap" / "snapshot.pt"
    with pytest.raises(Killed):
        supervised_run(tmp_path, "killed", 2, KilledAfter(path, "k", 2, kill_step))
    assert [r["step"] for r in torch.load(path, weights_only=True)["validation"]] == list(range(2, kill_step + 1, 2))
    supervised_run(tmp_path, "resumed", 2, Snapshot(path, "k", 2))
    assert (tmp_path / "resumed-val.tsv").read_bytes() == (tmp_path / "plain-val.tsv").read_bytes()


def vst_run(tmp_path, name, snapshot=None):
    """Two VST rounds of 4 steps, validated every 3 steps of a round (and at its last)."""
    cfg, model, target, pseudo = tiny_vst()
    validation = Validator(val_clips(), validation_cfg(3), tmp_path / f"{name}.tsv")
    self_train(model, VSTData(target, pseudo, None), cfg, snapshot=snapshot, validation=validation)
    return read_validation(tmp_path / f"{name}.tsv")


@pytest.mark.parametrize("kill_round, kill_step", [(1, 2), (2, 2)])
def test_vst_curve_spans_the_rounds_and_resumes(tmp_path, kill_round, kill_step):
    plain = vst_run(tmp_path, "plain")
    assert [(r["step"], r["round"]) for r in plain] == [(3, 1), (4, 1), (7, 2), (8, 2)]
    path = tmp_path / "snapshot.pt"
    with pytest.raises(Killed):
        vst_run(tmp_path, "killed", KilledAfter(path, "k", 2, kill_step, kill_round))
    assert vst_run(tmp_path, "resumed", Snapshot(path, "k", 2)) == plain


# --- a stage under two processes ----------------------------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def stage_params(folder, nproc):
    params = with_overrides(read_params(REPO / "params.yaml"), {
        "model.num_layers": 1, "model.aspp_rates": [1], "compute.device": "cpu", "compute.nproc_per_node": nproc,
        "compute.rdzv_endpoint": f"localhost:{free_port()}", "train_source.iterations": 5,
        "train_source.batch_size": 2, "train_source.threads": 1, "train_source.snapshot_every": 2,
        "train_source.validate_every": 2})
    path = folder / f"params-{nproc}.json"
    path.write_text(resolved_json(params, "train_source"))
    return path


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_write_one_curve_of_the_saved_weights(tmp_path):
    data = tmp_path / "data"
    for c in clips(n=4, h=32, w=64):
        save_clip(data / "source" / c.name, c)
    for c in clips(n=3, frames=6, h=32, w=64, seed=9, name="v"):
        save_clip(data / "target_val" / c.name, c)
    out = tmp_path / "two"
    done = subprocess.run([sys.executable, str(REPO / "stages" / "train_supervised.py"), "--stage", "train_source",
                           "--params", str(stage_params(tmp_path, 2)), "--split", "source", "--data", str(data),
                           "--out", str(out / "model.pt"), "--curve", str(out / "curves" / "source_only.tsv")],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_validation(out / "validation" / "source_only.tsv")
    assert [r["step"] for r in rows] == [2, 4, 5]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "curves/source_only.tsv", "model.pt", "validation/source_only.tsv"]      # rank 0's files, once
    # the last row is the saved checkpoint's score on the target-val clips, evaluate's protocol
    torch.set_num_threads(1)
    model, _ = load_checkpoint(out / "model.pt")
    params = with_overrides(read_params(REPO / "params.yaml"), {"train_source.validate_every": 2})
    cfg = stage_config("train_source", params).train.validation
    report, _ = evaluate_clips(model, load_split(data, "target_val"), cfg)
    assert rows[-1]["mIoU"] == report["miou"]
    assert rows[-1]["VPQ"] == report["vpq"]["mean"]


# --- the stages: trainers write their curves, evaluate reports both selections ------------------------------------

def test_stages_write_curves_and_evaluate_reports_the_last_and_the_best(tmp_path):
    params = tiny_params()
    params["train_source"]["validate_every"] = 2             # steps 2 and 3 (the last)
    params["vat"].update(iterations=2, batch_size=2, validate_every=0)
    synth_and_prepare(tmp_path, params)
    assert in_process(tmp_path, "train_supervised.py", "--stage", "train_source", "--split", "source", "--out",
                      "models/source_only.pt", "--curve", "reports/curves/source_only.tsv") == 0
    assert in_process(tmp_path, "vat.py") == 0
    assert [r["step"] for r in read_validation(tmp_path / "reports/validation/source_only.tsv")] == [2, 3]
    assert (tmp_path / "reports/validation/vat.tsv").read_text() == "step\n"     # off: a header only
    assert in_process(tmp_path, "evaluate.py", "--model", "source_only=models/source_only.pt", "--model",
                      "vat=models/vat.pt") == 0
    scores = json.loads((tmp_path / "reports/scores.json").read_text())
    rows = read_validation(tmp_path / "reports/validation/source_only.tsv")
    assert list(scores) == ["source_only", "vat", SELECTION]
    assert scores[SELECTION] == {"source_only": best_on_val(rows)}
    # the curve's last row is evaluate's score of the output checkpoint: the headline
    assert rows[-1]["mIoU"] == scores["source_only"]["mIoU"] and rows[-1]["VPQ"] == scores["source_only"]["VPQ"]


def test_evaluate_keys_rerun_a_trainer_only_when_it_validates():
    """With validate_every 0 a trainer's resolved params leave out evaluate's keys (``when`` in
    videoda/config/fields.py): `dvc exp run -S evaluate.resolution=labels` reruns evaluate, not the trainers."""
    base = tiny_params()
    changed = copy.deepcopy(base)
    changed["evaluate"]["resolution"] = "labels"
    assert resolved_json(base, "train_source") == resolved_json(changed, "train_source")
    assert resolved_json(base, "evaluate") != resolved_json(changed, "evaluate")
    assert "evaluate" not in resolve(base, "vat") and stage_config("vat", base).train.validation.resolution is None
    for params in (base, changed):
        params["vat"]["validate_every"] = 2
    assert resolved_json(base, "vat") != resolved_json(changed, "vat")
    assert resolve(changed, "vat")["evaluate"] == {"label_stride": 5, "resolution": "labels"}
    assert stage_config("vat", changed).train.validation.resolution == "labels"
