"""params.yaml composed from conf/ (videoda/config/compose.py): one merge order, defaults < profile < method <
overrides, and every bad value stopped before anything runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videoda.cli import main
from videoda.config.compose import check_params, compose, compose_params, group_options, method_fixes
from videoda.config.fields import lookup, read_params
from videoda.config.stages import stage_config
from videoda.errors import ParamError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PROFILES = group_options("profile", CONF)
METHODS = group_options("method", CONF)


def composed(*overrides, conf=CONF):
    return compose_params(list(overrides), conf)


def test_the_committed_params_yaml_is_the_default_composition():
    """`dvc exp run` without -S recomposes params.yaml: it must find the committed file (else the first
    experiment would differ from `dvc repro` by keys nobody asked to change)."""
    assert compose([], CONF) == (REPO / "params.yaml").read_text()
    assert read_params(REPO / "params.yaml")["profile"] == "embedded"
    assert read_params(REPO / "params.yaml")["method"] == "ours"


def test_dvc_composes_with_hydra():
    config = (REPO / ".dvc/config").read_text()
    assert "[hydra]" in config and "enabled = true" in config


def test_shared_training_keys_are_stated_once_and_each_phase_keeps_its_own():
    training = yaml.safe_load((CONF / "training.yaml").read_text())
    params = composed()
    for phase in ("train_source", "train_oracle", "vat", "vst"):
        for key, value in training.items():
            if (phase, key) not in {("vat", "batch_size"), ("vst", "iterations"), ("vst", "lr")}:
                assert params[phase][key] == value, (phase, key)
    assert (params["vat"]["batch_size"], params["vst"]["iterations"], params["vst"]["lr"]) == (4, 400, 2.5e-4)
    assert "tau" not in params["vst"]                      # VST's pairs are flow.tau's
    one = composed("vat.lr=0.5")                           # each copy is its phase's own key
    assert one["vat"]["lr"] == 0.5 and one["train_source"]["lr"] == params["train_source"]["lr"]


def test_merge_order_key_by_key(tmp_path):
    """The same key set by the base, a profile, a method and an override: each later layer wins. A method file
    made for the test (probe) fixes vat.lambda_v; the paper profile sets it too."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "method/probe.yaml").write_text("# @package _global_\nmethod: probe\nvat:\n  lambda_v: 0.5\n")
    key = "vat.lambda_v"
    assert lookup(composed(conf=conf), key) == 0.01                                    # the base
    assert lookup(composed("profile=paper", conf=conf), key) == 1.0e-3                 # profile > base
    assert lookup(composed("profile=paper", "method=probe", conf=conf), key) == 0.5    # method > profile
    over = composed("profile=paper", "method=probe", f"{key}=0.7", conf=conf)          # override > method
    assert lookup(over, key) == 0.7
    # ... and the override of a key the method fixes is refused, naming the override and the method's file
    with pytest.raises(ParamError, match=r"^-S vat.lambda_v=0.7: vat.lambda_v = 0.7, but method probe fixes it "
                                         r"to 0.5 \(.*method/probe.yaml\)"):
        check_params(over, conf_dir=conf, overrides=["profile=paper", "method=probe", f"{key}=0.7"])
    # a profile fixes nothing: its keys can be overridden on top
    assert lookup(composed("profile=paper", "train_source.iterations=100"), "train_source.iterations") == 100


def test_a_method_file_is_read_as_hydra_reads_it(tmp_path):
    """``1e-3`` is a number to Hydra (OmegaConf's loader) and a string to PyYAML: the method's fixed keys are read
    as composed, so the method's own value is never refused."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "method/probe.yaml").write_text("# @package _global_\nmethod: probe\nvat:\n  lambda_v: 1e-3\n")
    assert method_fixes("probe", conf) == {"vat.lambda_v": 1.0e-3}
    params = check_params(composed("method=probe", conf=conf), conf_dir=conf)
    assert params["vat"]["lambda_v"] == 1.0e-3


def test_the_short_paper_trial_resolves_to_the_override():
    """`dvc exp run -S profile=paper -S train_source.iterations=100`: 100 iterations, every other paper value."""
    params = check_params(composed("profile=paper", "train_source.iterations=100"), conf_dir=CONF)
    source = stage_config("train_source", params)
    assert source.train.iterations == 100 and source.model.backbone == "resnet50"
    assert (source.train.optim.optimizer, source.train.optim.lr, source.train.batch_size) == ("sgd", 2.5e-4, 1)
    assert stage_config("train_oracle", params).train.iterations == 120000
    assert stage_config("vat", params).train.iterations == 120000
    assert params["profile"] == "paper" and params["method"] == "ours"   # what dvc exp show shows
    # the class set and the dataset roots too, under any profile
    params = check_params(composed("profile=viper_cityscapes_seq", "classes=shin2021",
                                   "prepare.target.root=/data/cs"), conf_dir=CONF)
    prepare = stage_config("prepare", params)
    assert prepare.classes.name == "shin2021" and prepare.target.root == "/data/cs"
    assert prepare.target.dataset == "cityscapes_seq"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_under_every_profile(profile, method):
    params = check_params(composed(f"profile={profile}", f"method={method}"), conf_dir=CONF)
    assert (params["profile"], params["method"]) == (profile, method)
    for key, value in method_fixes(method, CONF).items():
        assert lookup(params, key) == value, key
    profile_file = yaml.safe_load((CONF / "profile" / f"{profile}.yaml").read_text())
    if "backbone" in profile_file.get("model", {}):
        assert params["model"]["backbone"] == profile_file["model"]["backbone"]


def test_methods_select_the_papers_rows():
    rows = {m: composed(f"method={m}") for m in METHODS}
    assert not rows["source_only"]["vat"]["enabled"] and not rows["source_only"]["vst"]["enabled"]
    assert rows["adaptsegnet"]["vat"]["discriminator"] == "image" and not rows["adaptsegnet"]["vst"]["enabled"]
    assert rows["advent"]["vat"]["disc_input"] == "entropy" and rows["advent"]["vat"]["lambda_v"] == 1.0e-3
    assert not rows["cbst"]["vat"]["enabled"] and rows["cbst"]["vst"]["pseudo_label"] == "cbst"
    assert rows["crst"]["vst"]["regulariser"] == "kld" and rows["crst_star"]["vat"]["enabled"]
    assert rows["iast"]["vst"]["pseudo_label"] == "iast" and rows["iast"]["vst"]["gamma"] == 8.0
    assert rows["ours"] == composed() and method_fixes("ours", CONF) == {}
    assert rows["oracle"]["evaluate"]["final_model"] == "oracle" and rows["iast"]["evaluate"]["final_model"] == "vst"


def test_paper_profile_values():
    out = composed("profile=paper")
    expected = {"prepare.target.height": 512, "prepare.target.width": 1024, "model.backbone": "resnet50",
                "model.num_layers": 4, "model.pretrained": "imagenet", "model.aspp_rates": [6, 12, 18, 24],
                "model.norm": "frozen_batch", "vat.lambda_dice": 1.0, "flow.method": "flownet2", "flow.epe": False,
                "flow.compare": [], "flow.occlusion_threshold": 0.7, "vat.lambda_v": 1.0e-3, "vat.lr_d": 1.0e-4,
                "vat.optimizer_d": "adam", "vst.alpha": 0.2, "vst.beta": 0.9, "vst.gamma": 8.0,
                "vst.iterations": 12000, "prepare.source.ignore_ego_vehicle": True}
    for stage in ("train_source", "train_oracle", "vat", "vst"):
        expected.update({f"{stage}.optimizer": "sgd", f"{stage}.lr": 2.5e-4, f"{stage}.momentum": 0.9,
                         f"{stage}.weight_decay": 5.0e-4, f"{stage}.poly_power": 0.9, f"{stage}.batch_size": 1,
                         f"{stage}.snapshot_every": 2000})
    assert {k: lookup(out, k) for k in expected} == expected
    assert {lookup(out, f"{s}.iterations") for s in ("train_source", "train_oracle", "vat")} == {120000}


@pytest.mark.parametrize("profile, source, target, classes, source_size", [
    ("paper", "viper", "cityscapes_vps", "shin2021", (720, 1280)),
    ("viper_cityscapes_seq", "viper", "cityscapes_seq", "davsn_viper", (720, 1280)),
    ("synthia_seq_cityscapes_seq", "synthia_seq", "cityscapes_seq", "davsn_synthia", (640, 1280)),
])
def test_each_benchmark_is_one_switch_on_the_paper_configuration(profile, source, target, classes, source_size):
    """One profile per benchmark: the paper's training with the peers' datasets, class set and resolutions."""
    params = check_params(composed(f"profile={profile}"), conf_dir=CONF)
    prepare = stage_config("prepare", params)
    assert (prepare.source.dataset, prepare.target.dataset, prepare.classes.name) == (source, target, classes)
    assert (prepare.source.height, prepare.source.width) == source_size
    assert (prepare.target.height, prepare.target.width) == (512, 1024)
    assert stage_config("train_source", params).model.backbone == "resnet50"
    assert stage_config("flow", params).method == "flownet2"
    if source == "synthia_seq":
        assert prepare.source.crop_bottom == 120 and prepare.source.sequences == ("SYNTHIA-SEQS-04-DAWN",)
        assert stage_config("evaluate", params).classes.evaluated_ids.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    else:
        assert prepare.source.crop_bottom == 0


def test_synthia_needs_its_sequences_and_crop_is_synthia_only():
    with pytest.raises(ParamError, match="^params.yaml: prepare.source.sequences must"):
        check_params(composed("prepare.source.dataset=synthia_seq"), conf_dir=CONF,
                     overrides=["prepare.source.dataset=synthia_seq"])
    with pytest.raises(ParamError, match="crop_bottom = 120 applies to synthia_seq only"):
        check_params(composed("prepare.source.crop_bottom=120"), conf_dir=CONF)


def params_argv(tmp_path, *overrides):
    argv = ["params", "--conf", str(CONF), "--out", str(tmp_path / "params.yaml")]
    for o in overrides:
        argv += ["-S", o]
    return argv


BAD_VALUES = [
    ("vst.alpah=0.2", "-S vst.alpah=0.2: unknown key vst.alpah"),
    ("vst.alpha=abc", "-S vst.alpha=abc: vst.alpha must be a number, got 'abc'"),
    ("vst.alpha=1.5", "-S vst.alpha=1.5: vst.alpha = 1.5 is out of range [0.0, 1.0]"),
    ("train_source.iterations=1.5", "-S train_source.iterations=1.5: train_source.iterations must be an integer"),
    ("profile=huge", "-S profile=huge: no profile 'huge'"),
    ("method=iat", "-S method=iat: no method 'iat'"),
    ("classes=nosuch", "-S classes=nosuch: classes = 'nosuch' is neither one of the class sets"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES)
def test_bad_values_stop_with_one_line_and_write_nothing(tmp_path, capsys, override, message):
    assert main(params_argv(tmp_path, override)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_params_command_stops_a_bad_value_in_its_own_process(tmp_path):
    """`python -m videoda params` as a user runs it: exit code 2, one line, nothing written."""
    override, message = BAD_VALUES[0]
    r = subprocess.run([sys.executable, "-m", "videoda", *params_argv(tmp_path, override)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert list(tmp_path.iterdir()) == []


def test_the_params_command_writes_what_dvc_exp_run_would(tmp_path):
    assert main(params_argv(tmp_path, "profile=paper", "train_source.iterations=100")) == 0
    assert (tmp_path / "params.yaml").read_text() == compose(["profile=paper", "train_source.iterations=100"], CONF)


def test_a_hand_edited_params_yaml_is_checked_too(tmp_path):
    """`dvc repro` after editing params.yaml: a typo, or a method named without its keys, is one line."""
    params = composed()
    params["vst"]["alpah"] = 0.2
    with pytest.raises(ParamError, match=r"^params.yaml: unknown key vst.alpah \(no stage reads it\)$"):
        check_params(params, conf_dir=CONF)
    params = composed()
    params["method"] = "cbst"          # named, not composed: its keys do not hold
    with pytest.raises(ParamError, match=r"^params.yaml: vat.enabled = True, but method cbst fixes it to False"):
        check_params(params, conf_dir=CONF)


def test_editing_a_profile_changes_only_what_it_sets(tmp_path):
    """A comment in a profile changes no composed byte, so no stage reruns; a value changes only its key."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    before = compose(["profile=paper"], conf)
    (conf / "profile/paper.yaml").write_text((conf / "profile/paper.yaml").read_text() + "# a note\n")
    assert compose(["profile=paper"], conf) == before
    text = (conf / "profile/paper.yaml").read_text().replace("  lr_d: 1.0e-4", "  lr_d: 2.0e-4")
    (conf / "profile/paper.yaml").write_text(text)
    after = compose_params(["profile=paper"], conf)
    assert after["vat"]["lr_d"] == 2.0e-4
    after["vat"]["lr_d"] = 1.0e-4
    assert after == yaml.safe_load(before)


def git(repo, *argv):
    subprocess.run(["git", *argv], cwd=repo, check=True, capture_output=True)


@pytest.mark.slow
def test_a_sweep_queues_one_experiment_per_value(tmp_path):
    """`dvc exp run --queue -S 'vst.alpha=0.2,0.5'` in a copy of the project: two queued experiments whose
    params.yaml differ from the committed one in vst.alpha alone (nothing runs)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("conf", "params.yaml", "dvc.yaml", ".dvc/config", ".dvcignore"):
        src, dst = REPO / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    r = subprocess.run([*dvc, "exp", "run", "--queue", "-S", "vst.alpha=0.2,0.5"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*dvc, "exp", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    queued = [rev["data"]["params"]["params.yaml"]["data"] for group in json.loads(r.stdout)
              for exp in group.get("experiments") or [] for rev in exp["revs"]]
    assert sorted(p["vst"]["alpha"] for p in queued) == [0.2, 0.5]
    for p in queued:
        p["vst"]["alpha"] = base["vst"]["alpha"]
        assert p == base
    assert (repo / "params.yaml").read_text() == (REPO / "params.yaml").read_text()   # the workspace as it was
    r = subprocess.run([*dvc, "exp", "run", "--queue", "-S", "vst.alpah=0.2"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "vst.alpah" in r.stdout + r.stderr                  # a typo queues nothing
