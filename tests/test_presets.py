"""The method presets (videoda/presets.py): one parameter selects a row of the paper's tables."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videoda.errors import ParamError
from videoda.params import load_params
from videoda.presets import PRESETS, STAGE_PARAMS, apply_preset, final_model, stage_params

REPO = Path(__file__).resolve().parents[1]


def raw_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_ours_is_params_yaml_as_it_is():
    params = raw_params()
    assert params["method"] == "ours"
    assert apply_preset(params) == params
    assert load_params(REPO / "params.yaml") == params


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


def test_methods_that_share_a_phase_resolve_to_the_same_stage_params():
    """Stage resolve_params writes these: CBST*, CRST* and IAST share AdaptSegNet's warm-up, so the vat stage
    of all four has one run; their pseudo-label and VST settings differ."""
    params = raw_params()
    vat = {m: stage_params(apply_preset({**params, "method": m}, verbose=False), "vat") for m in PRESETS}
    assert vat["adaptsegnet"] == vat["cbst_star"] == vat["crst_star"] == vat["iast"]
    assert vat["adaptsegnet"] != vat["ours"] and vat["cbst"] == vat["source_only"] == vat["oracle"]
    vst = {m: stage_params(apply_preset({**params, "method": m}, verbose=False), "vst") for m in PRESETS}
    assert vst["cbst_star"] != vst["crst_star"] and vst["cbst"] == vst["cbst_star"]
    labels = {m: stage_params(apply_preset({**params, "method": m}, verbose=False), "pseudo_labels")
              for m in PRESETS}
    assert labels["cbst_star"] == labels["crst_star"] != labels["iast"]
    assert labels["ours"]["vst.alpha"] == params["vst"]["alpha"] and labels["iast"]["vst.alpha"] == 0.2


def test_every_key_a_preset_sets_reaches_a_resolved_stage():
    covered = {k for keys in STAGE_PARAMS.values() for k in keys}
    for method, sections in PRESETS.items():
        for section, overrides in sections.items():
            for key in overrides:
                assert section in covered or f"{section}.{key}" in covered, (method, section, key)
    broken = raw_params()
    del broken["flow"]["tau"]
    with pytest.raises(ParamError, match=r"flow\.tau.*pseudo_labels"):
        stage_params(broken, "pseudo_labels")


def test_dvc_stages_read_preset_params_only_from_resolve_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    resolver = stages["resolve_params"]
    for name in STAGE_PARAMS:
        assert f"data/params/{name}.json" in stages[name]["deps"] and f"data/params/{name}.json" in resolver["outs"]
        assert "params" not in stages[name]        # params.yaml itself would rerun them on any method change
    sections = {k.split(".")[0] for keys in STAGE_PARAMS.values() for k in keys}
    assert set(resolver["params"]) == sections | {"method"}
    assert "videoda/presets.py" in resolver["deps"]


def test_resolve_params_stage_writes_effective_values_or_nothing(tmp_path):
    params = raw_params()
    params["method"] = "iast"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(REPO / "stages/resolve_params.py"), "--out", "data/params"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "data/params/pseudo_labels.json").read_text())
    assert written["vst.pseudo_label"] == "iast" and written["vst.gamma"] == 8.0
    assert json.loads((tmp_path / "data/params/vat.json").read_text())["vat"]["discriminator"] == "image"
    params["method"] = "iat"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data/params/vat.json").unlink()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "method = 'iat'" in r.stderr
    assert not (tmp_path / "data/params/vat.json").exists()
