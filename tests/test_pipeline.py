"""The stage scripts end to end on the tiny benchmark (what `dvc repro` runs), and each stage's contract at a bad
input in its own process: one line on stderr, exit code 2, nothing written."""

import json

import numpy as np
import pytest
import torch

from helpers import CONF, fails_cleanly, in_process, link, stage, tiny_params, write_params, written_files
from videoda.config.compose import check_params
from videoda.config.fields import read_stage_config
from videoda.config.training import Supervised
from videoda.errors import ParamError
from videoda.utils.images import write_ids

CLASSES = 15


def test_synth_writes_both_layouts_and_flow(bench):
    root = bench / "data/synth"
    assert len(list((root / "viper/train/img/001").glob("*.png"))) == 10
    assert len(list((root / "cityscapes_vps/val/labelmap").glob("*.png"))) == 3 * 2   # frames 5 and 10
    assert len(list((root / "cityscapes_vps/train/img_all").glob("*.png"))) == 3 * 10
    assert np.load(root / "flow_gt/train/0001.npy").shape == (9, 24, 48, 2)


def test_train_and_evaluate_end_to_end(trained, tmp_path):
    """Both supervised stages wrote a model and a curve (the determinism of a checkpoint: test_inputs);
    evaluate scores both."""
    assert (trained / "reports/curves/oracle.tsv").read_text().startswith("step\tlr\tseg")
    cwd = link(tmp_path, trained, "data/prepared", "models/source_only.pt", "models/oracle.pt")
    write_params(cwd, tiny_params())
    assert in_process(cwd, "evaluate.py", "--model", "source_only=models/source_only.pt",
                      "--model", "oracle=models/oracle.pt") == 0
    metrics = json.loads((cwd / "reports/metrics.json").read_text())
    assert set(metrics) == {"source_only", "oracle"}
    scores = json.loads((cwd / "reports/scores.json").read_text())
    assert scores == {m: {"mIoU": metrics[m]["miou"], "VPQ": metrics[m]["vpq"]["mean"]} for m in metrics}
    for m in metrics.values():
        assert len(m["iou"]) == CLASSES and set(m["vpq"]) >= {"k0", "k5", "k10", "k15", "mean"}
        assert 0 <= m["miou"] <= 100
    assert len(list((cwd / "data/predictions/oracle").glob("*.png"))) == 3 * 2
    assert (cwd / "reports/figures/oracle_strip.png").is_file()


@pytest.mark.slow
def test_synth_bad_param_fails_cleanly_in_its_own_process(tmp_path):
    params = tiny_params()
    params["synth"]["shift"] = 1.5
    write_params(tmp_path, params, check=False)
    fails_cleanly(stage(tmp_path, "synth.py", "--out", "data/synth"), "synth.shift")
    assert not written_files(tmp_path)


@pytest.mark.slow
def test_prepare_missing_dataset_root_fails_cleanly_in_its_own_process(tmp_path):
    params = tiny_params()
    params["prepare"]["source"]["root"] = str(tmp_path / "no_viper_here")
    write_params(tmp_path, params)
    fails_cleanly(stage(tmp_path, "prepare.py", "--out", "data/prepared"), "no_viper_here")
    assert not written_files(tmp_path)


def test_bad_model_param_names_the_key(tmp_path):
    params = tiny_params()
    params["model"]["backbone"] = "resnet7"
    write_params(tmp_path, params, check=False)
    with pytest.raises(ParamError, match="model.backbone"):
        read_stage_config(Supervised, tmp_path / "data/params/train_source.json", section="train_source")


@pytest.mark.slow
def test_evaluate_missing_checkpoint_fails_cleanly_in_its_own_process(bench, tmp_path):
    cwd = link(tmp_path, bench, "data/prepared")
    write_params(cwd, tiny_params())
    fails_cleanly(stage(cwd, "evaluate.py", "--model", "x=models/missing.pt"), "models/missing.pt")
    assert not written_files(cwd / "reports") and not (cwd / "data/predictions").exists()


@pytest.mark.slow
def test_flow_pseudo_labels_and_vst_stages(trained, tmp_path):
    """VST's stages on the tiny benchmark: flow (ground truth), pseudo labels (ours), one round of training; then
    vst's contract at a bad input, in its own process."""
    cwd = link(tmp_path, trained, "data/synth", "data/prepared", "models/source_only.pt")
    params = tiny_params()
    params["flow"]["method"] = "gt"
    params["vst"].update(iterations=2, batch_size=2, equal_proportions=[0.5])
    write_params(cwd, params)
    assert in_process(cwd, "flow.py", "--data", "data/prepared", "--out", "data/flow/target_train.h5",
                      "--report", "reports/flow.json") == 0
    assert in_process(cwd, "pseudo_labels.py", "--model", "models/source_only.pt") == 0
    report = json.loads((cwd / "reports/pseudo_labels.json").read_text())
    assert report["generator"] == "clip_agg" and 0 <= report["proportion"] <= 100
    assert set(report["equal_proportion"]) == {"proportion", "single_frame_p_miou", "aggregated_p_miou"}
    assert set(report["table7"]) == {"0.5"} and set(report["table7"]["0.5"]) == {"cb", "ia", "ours"}
    assert all(0 <= r["proportion"] <= 100 and 0 <= r["p_miou"] <= 100 for r in report["table7"]["0.5"].values())
    pngs = sorted((cwd / "data/pseudo_labels").rglob("*.png"))
    assert len(pngs) == 3 * 10                                  # every frame of the 3 target-train clips
    assert in_process(cwd, "vst.py", "--init", "models/source_only.pt", "--out", "models/vst.pt",
                      "--curve", "reports/curves/vst.tsv") == 0
    assert (cwd / "models/vst.pt").is_file()
    # A pseudo-label PNG of the wrong size is refused, naming the file's clip folder.
    write_ids(pngs[0], np.zeros((3, 3), np.uint8))
    r = stage(cwd, "vst.py", "--init", "models/source_only.pt", "--out", "models/vst2.pt", "--curve", "c.tsv")
    fails_cleanly(r, pngs[0].name)
    assert not (cwd / "models/vst2.pt").exists()


def test_method_presets_pass_models_through_disabled_phases_and_report_final(trained, tmp_path):
    """method: source_only skips both adaptation phases: vat.pt and vst.pt are the source-only weights, and
    evaluate's `final` is their score; method: oracle makes `final` the oracle's. (The supervised stages read
    the same params under every method: the trained models are theirs.)"""
    cwd = link(tmp_path, trained, "data/synth", "data/prepared", "models/source_only.pt", "models/oracle.pt")
    params = tiny_params("method=source_only")
    params["flow"]["method"] = "gt"
    write_params(cwd, params)
    so = "models/source_only.pt"
    assert in_process(cwd, "vat.py", "--init", so, "--out", "models/v1.pt", "--curve", "reports/curves/v1.tsv") == 0
    assert in_process(cwd, "flow.py", "--data", "data/prepared", "--out", "data/flow/p.h5",
                      "--report", "reports/p_flow.json") == 0
    assert in_process(cwd, "pseudo_labels.py", "--model", "models/v1.pt", "--flow", "data/flow/p.h5",
                      "--out", "data/pl_p", "--report", "reports/pl_p.json") == 0
    assert in_process(cwd, "vst.py", "--init", "models/v1.pt", "--pseudo", "data/pl_p", "--flow", "data/flow/p.h5",
                      "--out", "models/v2.pt", "--curve", "reports/curves/v2.tsv") == 0
    weights = [torch.load(cwd / f"models/{n}.pt", weights_only=True)["model"] for n in ("source_only", "v1", "v2")]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    assert (cwd / "reports/curves/v1.tsv").read_text().strip() == "step"
    evaluate = ["evaluate.py", "--model", f"source_only={so}", "--model", "oracle=models/oracle.pt",
                "--model", "vst=models/v2.pt", "--metrics", "reports/m.json", "--predictions", "data/pred_p",
                "--figures", "reports/fig_p"]
    assert in_process(cwd, *evaluate) == 0
    metrics = json.loads((cwd / "reports/m.json").read_text())
    assert metrics["final"] == metrics["vst"] == metrics["source_only"]
    write_params(cwd, tiny_params("method=oracle"))
    assert in_process(cwd, *evaluate[:-6], "--metrics", "reports/m2.json", "--predictions", "data/pred_o",
                      "--figures", "reports/fig_o") == 0
    assert json.loads((cwd / "reports/m2.json").read_text())["final"]["miou"] == metrics["oracle"]["miou"]
    params["method"] = "everything"          # stage resolve_params checks it, before any stage runs
    with pytest.raises(ParamError, match="method = 'everything'"):
        check_params(params, conf_dir=CONF)
