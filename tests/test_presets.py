"""The method presets (videoda/presets.py): one parameter selects a row of the paper's tables."""

from pathlib import Path

import pytest
import yaml

from videoda.errors import ParamError
from videoda.config.fields import load_params
from videoda.presets import PRESETS, apply_preset, final_model

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
