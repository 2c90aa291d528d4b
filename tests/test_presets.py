"""The method presets (videoda/presets.py): one parameter selects a row of the paper's tables."""

from pathlib import Path

import pytest
import yaml

from videoda.errors import ParamError
from videoda.config.fields import load_params, lookup, read_params
from videoda.config.stages import STAGES, resolved_json, stage_config, stage_keys
from videoda.presets import PAPER, PRESETS, PROFILES, apply_preset, apply_profile, final_model

REPO = Path(__file__).resolve().parents[1]


def raw_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_ours_is_params_yaml_as_it_is():
    params = raw_params()
    assert params["method"] == "ours"
    assert apply_preset(params) == params
    # load_params also reads the class set in, the one change it makes besides presets and profiles
    from videoda.data.classes import load_class_set
    assert load_params(REPO / "params.yaml") == {**params, "classes": load_class_set(params["classes"]).to_dict()}


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_applies_to_the_repo_params(method):
    params = raw_params()
    params["method"] = method
    out = apply_preset(params)
    for section, overrides in PRESETS[method].items():
        assert all(out[section][k] == v for k, v in overrides.items())
    untouched = {k for k in params if k not in PRESETS[method]}
    assert all(out[k] == params[k] for k in untouched)
    assert params["vat"] == raw_params()["vat"]           # the input is not modified


def test_presets_select_the_papers_rows():
    params = raw_params()
    rows = {m: apply_preset({**params, "method": m}) for m in PRESETS}
    assert not rows["source_only"]["vat"]["enabled"] and not rows["source_only"]["vst"]["enabled"]
    assert rows["adaptsegnet"]["vat"]["discriminator"] == "image" and not rows["adaptsegnet"]["vst"]["enabled"]
    assert rows["advent"]["vat"]["disc_input"] == "entropy"
    assert not rows["cbst"]["vat"]["enabled"] and rows["cbst"]["vst"]["pseudo_label"] == "cbst"
    assert rows["crst"]["vst"]["regulariser"] == "kld" and rows["crst_star"]["vat"]["enabled"]
    assert rows["iast"]["vst"]["pseudo_label"] == "iast" and rows["iast"]["vst"]["gamma"] == 8.0
    assert rows["ours"]["vat"]["discriminator"] == "sequence" and rows["ours"]["vst"]["pseudo_label"] == "clip_agg"
    assert final_model(rows["oracle"]) == "oracle" and final_model(rows["iast"]) == "vst"


def test_bad_method_and_missing_key_name_the_key():
    params = raw_params()
    with pytest.raises(ParamError, match="method = 'iat'"):
        apply_preset({**params, "method": "iat"})
    broken = raw_params()
    broken["method"] = "advent"
    del broken["vat"]["lambda_v"]
    with pytest.raises(ParamError, match=r"vat\.lambda_v"):
        apply_preset(broken)
    no_method = raw_params()
    del no_method["method"]
    assert apply_preset(no_method) is no_method


# --- profiles: the scale of a run (`profile`), applied before the method preset ------------------------------

def test_embedded_profile_is_params_yaml_as_it_is():
    """The default profile changes nothing: every stage's resolved params are those of params.yaml without a
    profile (the pipeline's outputs before profiles existed)."""
    params = raw_params()
    assert params["profile"] == "embedded" and PROFILES["embedded"] == {}
    assert apply_profile(params) == params
    from videoda.data.classes import load_class_set
    before = {k: v for k, v in params.items() if k != "profile"} | {"classes": load_class_set("shin2021").to_dict()}
    effective = load_params(REPO / "params.yaml", verbose=False)
    for stage in STAGES:
        assert resolved_json(effective, stage) == resolved_json(apply_preset(before, verbose=False), stage), stage


def test_paper_profile_sets_every_key_it_lists(capsys):
    params = raw_params()
    params["profile"] = "paper"
    out = apply_profile(params)
    for key, value in PAPER.items():
        assert lookup(out, key) == value, key
    assert "profile paper: " in capsys.readouterr().err            # never a silent override
    assert lookup(params, "model.backbone") == "resnet18"            # the input is not modified
    # what the issue lists, spelled out
    expected = {"prepare.target.height": 512, "prepare.target.width": 1024, "model.backbone": "resnet50",
                "model.num_layers": 4, "model.pretrained": "imagenet", "model.aspp_rates": [6, 12, 18, 24],
                "model.norm": "frozen_batch", "vat.lambda_dice": 1.0, "flow.method": "flownet2", "flow.epe": False,
                "flow.compare": [], "flow.occlusion_threshold": 0.7, "vat.lambda_v": 1.0e-3, "vat.lr_d": 1.0e-4,
                "vat.optimizer_d": "adam", "vst.alpha": 0.2, "vst.beta": 0.9, "vst.gamma": 8.0}
    for stage in ("train_source", "train_oracle", "vat", "vst"):
        expected.update({f"{stage}.optimizer": "sgd", f"{stage}.lr": 2.5e-4, f"{stage}.momentum": 0.9,
                         f"{stage}.weight_decay": 5.0e-4, f"{stage}.poly_power": 0.9, f"{stage}.batch_size": 1})
    assert {k: lookup(out, k) for k in expected} == expected
    assert {lookup(out, f"{s}.iterations") for s in ("train_source", "train_oracle", "vat")} == {120000}
    for stage in STAGES:                      # every value is valid for the stage that reads it
        stage_config(stage, apply_preset(out, verbose=False))


def test_every_key_a_profile_sets_reaches_a_stage():
    read = {k for stage in STAGES for k in stage_keys(stage)}
    for name, keys in PROFILES.items():
        assert set(keys) <= read, (name, set(keys) - read)


def test_profile_applies_before_the_method_preset(monkeypatch, tmp_path):
    """A preset fixes what defines a method: under any profile, method advent keeps ADVENT's lambda_v."""
    monkeypatch.setitem(PROFILES, "paper", {**PAPER, "vat.lambda_v": 0.5})
    params = raw_params()
    params.update(profile="paper", method="advent")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    effective = load_params(tmp_path / "params.yaml", verbose=False)
    assert effective["vat"]["lambda_v"] == 1.0e-3 and effective["vat"]["disc_input"] == "entropy"
    assert effective["model"]["backbone"] == "resnet50"
    params["method"] = "ours"
    assert apply_profile(params, verbose=False)["vat"]["lambda_v"] == 0.5


def test_bad_profile_and_missing_key_name_the_key(tmp_path):
    params = raw_params()
    for bad in ("huge", None, ["paper"]):
        with pytest.raises(ParamError, match=r"params.yaml: profile = .* is not one of \['embedded', 'paper', "):
            apply_profile({**params, "profile": bad})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "profile": "huge"}))
    with pytest.raises(ParamError, match="profile = 'huge'"):
        load_params(tmp_path / "params.yaml")
    broken = raw_params()
    broken["profile"] = "paper"
    del broken["vat"]["lr_d"]
    with pytest.raises(ParamError, match=r"vat\.lr_d is missing \(profile 'paper' sets it\)"):
        apply_profile(broken)
    no_profile = read_params(REPO / "params.yaml")
    del no_profile["profile"]
    assert apply_profile(no_profile) is no_profile


@pytest.mark.parametrize("profile, source, target, classes, source_size", [
    ("paper", "viper", "cityscapes_vps", "shin2021", (720, 1280)),
    ("viper_cityscapes_seq", "viper", "cityscapes_seq", "davsn_viper", (720, 1280)),
    ("synthia_seq_cityscapes_seq", "synthia_seq", "cityscapes_seq", "davsn_synthia", (640, 1280)),
])
def test_each_scenario_is_one_switch_on_the_paper_configuration(tmp_path, profile, source, target, classes,
                                                                 source_size):
    """One ``profile`` per benchmark: the paper's training (ResNet-50, SGD, FlowNet2) with the peers' datasets,
    class set and resolutions (DA-VSN's: VIPER 1280 x 720, SYNTHIA-Seq 1280 x 760 less its bottom 120 rows,
    Cityscapes 1024 x 512); every stage's config reads."""
    params = raw_params() | {"profile": profile}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    loaded = load_params(tmp_path / "params.yaml", verbose=False)
    for stage in STAGES:
        stage_config(stage, loaded)
    prepare = stage_config("prepare", loaded)
    assert (prepare.source.dataset, prepare.target.dataset, prepare.classes.name) == (source, target, classes)
    assert (prepare.source.height, prepare.source.width) == source_size
    assert (prepare.target.height, prepare.target.width) == (512, 1024)
    assert stage_config("train_source", loaded).model.backbone == "resnet50"
    assert stage_config("flow", loaded).method == "flownet2"
    if source == "synthia_seq":
        assert prepare.source.crop_bottom == 120 and prepare.source.sequences == ("SYNTHIA-SEQS-04-DAWN",)
        assert prepare.source.layout == "official"
        assert stage_config("evaluate", loaded).classes.evaluated_ids.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    else:
        assert prepare.source.crop_bottom == 0


def test_synthia_needs_its_sequences_and_crop_is_synthia_only(tmp_path):
    params = raw_params()
    params["prepare"]["source"]["dataset"] = "synthia_seq"
    with pytest.raises(ParamError, match="prepare.source.sequences must name the SYNTHIA-Seq sequence folders"):
        stage_config("prepare", params)
    params["prepare"]["source"].update(dataset="viper", crop_bottom=120)
    with pytest.raises(ParamError, match="crop_bottom = 120 applies to synthia_seq only"):
        stage_config("prepare", params)
