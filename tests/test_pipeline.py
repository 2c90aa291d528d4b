"""The stage scripts end to end, on a tiny benchmark in a temporary folder (what `dvc repro` runs)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from videoda.config.compose import compose_params
from videoda.config.stages import STAGES, resolved_json

REPO = Path(__file__).resolve().parents[1]
CLASSES = 15


def tiny_params(*overrides):
    """params.yaml composed with ``overrides`` (e.g. ``method=source_only``), at a tiny size."""
    params = compose_params(list(overrides), REPO / "conf")
    params["synth"].update(height=24, width=48, frames_per_clip=10, source_sequences=2, target_train_clips=2,
                           target_val_clips=2)
    for side in ("source", "target"):
        params["prepare"][side].update(height=16, width=32)
    for s in ("train_source", "train_oracle"):
        params[s].update(iterations=3, batch_size=2)
    params["evaluate"]["strip_rows"] = 2
    return params


def stage(cwd, *args):
    return subprocess.run([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=cwd,
                          capture_output=True, text=True)


def write_params(cwd, params):
    """params.yaml and what stage resolve_params makes of it, data/params/<stage>.json (values not checked here:
    each stage checks its own when it reads its file, as under `dvc repro` after a hand-edited file)."""
    (Path(cwd) / "params.yaml").write_text(yaml.safe_dump(params))
    (Path(cwd) / "data/params").mkdir(parents=True, exist_ok=True)
    for name in STAGES:
        (Path(cwd) / f"data/params/{name}.json").write_text(resolved_json(params, name))


def written_files(root):
    """The files under ``root`` besides the params (params.yaml, data/params/)."""
    return [p for p in Path(root).rglob("*")
            if p.is_file() and p.name != "params.yaml" and "params" not in p.relative_to(root).parts[:2]]


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def synth_and_prepare(cwd, params=None):
    """The tiny benchmark generated and prepared in ``cwd`` (stages synth and prepare)."""
    write_params(cwd, params or tiny_params())
    ok(stage(cwd, "synth.py", "--out", "data/synth"))
    ok(stage(cwd, "prepare.py", "--out", "data/prepared"))
    return cwd


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synth_and_prepare(tmp_path_factory.mktemp("pipeline"))


def test_synth_writes_both_layouts_and_flow(prepared):
    root = prepared / "data/synth"
    assert len(list((root / "viper/train/img/001").glob("*.png"))) == 10
    assert len(list((root / "cityscapes_vps/val/labelmap").glob("*.png"))) == 2 * 2   # frames 5 and 10
    assert len(list((root / "cityscapes_vps/train/img_all").glob("*.png"))) == 2 * 10
    import numpy as np
    assert np.load(root / "flow_gt/train/0001.npy").shape == (9, 24, 48, 2)


def test_train_and_evaluate_end_to_end_and_deterministic(prepared):
    cwd = prepared
    for name, split in (("source_only", "source"), ("again", "source"), ("oracle", "target_train")):
        section = "train_oracle" if name == "oracle" else "train_source"
        ok(stage(cwd, "train_supervised.py", "--stage", section, "--split", split,
                 "--out", f"models/{name}.pt", "--curve", f"reports/curves/{name}.tsv"))
    a = torch.load(cwd / "models/source_only.pt", weights_only=True)["model"]
    b = torch.load(cwd / "models/again.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)            # same params and seed, same weights
    assert (cwd / "reports/curves/oracle.tsv").read_text().startswith("step\tlr\tseg")
    ok(stage(cwd, "evaluate.py", "--model", "source_only=models/source_only.pt",
             "--model", "oracle=models/oracle.pt"))
    metrics = json.loads((cwd / "reports/metrics.json").read_text())
    assert set(metrics) == {"source_only", "oracle"}
    scores = json.loads((cwd / "reports/scores.json").read_text())
    assert scores == {m: {"mIoU": metrics[m]["miou"], "VPQ": metrics[m]["vpq"]["mean"]} for m in metrics}
    for m in metrics.values():
        assert len(m["iou"]) == CLASSES and set(m["vpq"]) >= {"k0", "k5", "k10", "k15", "mean"}
        assert 0 <= m["miou"] <= 100
    assert len(list((cwd / "data/predictions/oracle").glob("*.png"))) == 4
    assert (cwd / "reports/figures/oracle_strip.png").is_file()


def test_param_out_of_range_fails_cleanly(tmp_path):
    params = tiny_params()
    params["synth"]["shift"] = 1.5
    write_params(tmp_path, params)
    r = stage(tmp_path, "synth.py", "--out", "data/synth")
    assert r.returncode == 2 and "synth.shift" in r.stderr and "Traceback" not in r.stderr
    assert not written_files(tmp_path)


def test_missing_dataset_root_names_it_and_writes_nothing(tmp_path):
    params = tiny_params()
    params["prepare"]["source"]["root"] = str(tmp_path / "no_viper_here")
    write_params(tmp_path, params)
    r = stage(tmp_path, "prepare.py", "--out", "data/prepared")
    assert r.returncode == 2 and "no_viper_here" in r.stderr
    assert not written_files(tmp_path)


def test_bad_model_param_names_the_key(prepared, tmp_path):
    params = tiny_params()
    params["model"]["backbone"] = "resnet7"
    write_params(tmp_path, params)
    r = stage(tmp_path, "train_supervised.py", "--stage", "train_source", "--split", "source",
              "--data", str(prepared / "data/prepared"), "--out", "m.pt", "--curve", "c.tsv")
    assert r.returncode == 2 and "model.backbone" in r.stderr
    assert not (tmp_path / "m.pt").exists()


def test_missing_checkpoint_for_evaluate(prepared):
    r = stage(prepared, "evaluate.py", "--model", "x=models/missing.pt", "--metrics", "reports/m2.json",
              "--predictions", "data/p2", "--figures", "reports/f2")
    assert r.returncode == 2 and "models/missing.pt" in r.stderr
    assert not (prepared / "reports/m2.json").exists() and not (prepared / "data/p2").exists()


def test_flow_pseudo_labels_and_vst_stages(prepared):
    """VST's stages on the tiny benchmark: flow (ground truth), pseudo labels (ours), one round of training."""
    cwd = prepared
    params = tiny_params()
    params["flow"]["method"] = "gt"
    params["vst"].update(iterations=2, batch_size=2, equal_proportions=[0.5])
    write_params(cwd, params)
    ok(stage(cwd, "train_supervised.py", "--stage", "train_source", "--split", "source",
             "--out", "models/init.pt", "--curve", "reports/curves/init.tsv"))
    ok(stage(cwd, "flow.py", "--data", "data/prepared", "--out", "data/flow/target_train.h5",
             "--report", "reports/flow.json"))
    ok(stage(cwd, "pseudo_labels.py", "--model", "models/init.pt"))
    report = json.loads((cwd / "reports/pseudo_labels.json").read_text())
    assert report["generator"] == "clip_agg" and 0 <= report["proportion"] <= 100
    assert set(report["equal_proportion"]) == {"proportion", "single_frame_p_miou", "aggregated_p_miou"}
    assert set(report["table7"]) == {"0.5"} and set(report["table7"]["0.5"]) == {"cb", "ia", "ours"}
    assert all(0 <= r["proportion"] <= 100 and 0 <= r["p_miou"] <= 100 for r in report["table7"]["0.5"].values())
    pngs = sorted((cwd / "data/pseudo_labels").rglob("*.png"))
    assert len(pngs) == 2 * 10                                  # every frame of the 2 target-train clips
    ok(stage(cwd, "vst.py", "--init", "models/init.pt", "--out", "models/vst.pt", "--curve", "reports/curves/vst.tsv"))
    assert (cwd / "models/vst.pt").is_file()
    # A pseudo-label PNG of the wrong size is refused, naming the file's clip folder.
    from videoda.utils.images import write_ids
    import numpy as np
    write_ids(pngs[0], np.zeros((3, 3), np.uint8))
    r = stage(cwd, "vst.py", "--init", "models/init.pt", "--out", "models/vst2.pt", "--curve", "c.tsv")
    assert r.returncode == 2 and str(pngs[0].name) in r.stderr and not (cwd / "models/vst2.pt").exists()


def test_method_presets_pass_models_through_disabled_phases_and_report_final(prepared):
    """method: source_only skips both adaptation phases: vat.pt and vst.pt are the source-only weights, and
    evaluate's `final` is their score; method: oracle makes `final` the oracle's."""
    cwd = prepared
    params = tiny_params("method=source_only")
    params["flow"]["method"] = "gt"
    write_params(cwd, params)
    ok(stage(cwd, "train_supervised.py", "--stage", "train_source", "--split", "source",
             "--out", "models/so.pt", "--curve", "reports/curves/so.tsv"))
    ok(stage(cwd, "train_supervised.py", "--stage", "train_oracle", "--split", "target_train",
             "--out", "models/or.pt", "--curve", "reports/curves/or.tsv"))
    ok(stage(cwd, "vat.py", "--init", "models/so.pt", "--out", "models/v1.pt", "--curve", "reports/curves/v1.tsv"))
    ok(stage(cwd, "flow.py", "--data", "data/prepared", "--out", "data/flow/p.h5", "--report", "reports/p_flow.json"))
    ok(stage(cwd, "pseudo_labels.py", "--model", "models/v1.pt", "--flow", "data/flow/p.h5", "--out", "data/pl_p",
             "--report", "reports/pl_p.json"))
    ok(stage(cwd, "vst.py", "--init", "models/v1.pt", "--pseudo", "data/pl_p", "--flow", "data/flow/p.h5",
             "--out", "models/v2.pt", "--curve", "reports/curves/v2.tsv"))
    weights = [torch.load(cwd / f"models/{n}.pt", weights_only=True)["model"] for n in ("so", "v1", "v2")]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    assert (cwd / "reports/curves/v1.tsv").read_text().strip() == "step"
    evaluate = ["evaluate.py", "--model", "source_only=models/so.pt", "--model", "oracle=models/or.pt",
                "--model", "vst=models/v2.pt", "--metrics", "reports/m.json", "--predictions", "data/pred_p",
                "--figures", "reports/fig_p"]
    ok(stage(cwd, *evaluate))
    metrics = json.loads((cwd / "reports/m.json").read_text())
    assert metrics["final"] == metrics["vst"] == metrics["source_only"]
    write_params(cwd, tiny_params("method=oracle"))
    ok(stage(cwd, *evaluate[:-6], "--metrics", "reports/m2.json", "--predictions", "data/pred_o",
             "--figures", "reports/fig_o"))
    assert json.loads((cwd / "reports/m2.json").read_text())["final"]["miou"] == metrics["oracle"]["miou"]
    params["method"] = "everything"          # stage resolve_params checks it, before any stage runs
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    r = stage(cwd, "resolve_params.py", "--conf", str(REPO / "conf"), "--out", "data/params_bad")
    assert r.returncode == 2 and "method = 'everything'" in r.stderr and not (cwd / "data/params_bad").exists()
