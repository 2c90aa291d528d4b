"""The one config layer (videoda/config/): typed stage configs, key checks, resolved params files."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videoda.config.compose import compose_params, group_options, known_keys, method_fixes
from videoda.config.fields import load_params, read_stage_config
from videoda.config.stages import STAGES, resolve, resolved_json, stage_config, stage_keys
from videoda.config.vat import VAT
from videoda.errors import ParamError

REPO = Path(__file__).resolve().parents[1]


def raw_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_config_reads_the_repo_params(stage):
    cfg = stage_config(stage, load_params(REPO / "params.yaml"))
    assert dataclasses.is_dataclass(cfg)
    # the resolved file holds exactly what the config reads, and gives the same config back
    assert stage_config(stage, resolve(raw_params(), stage)) == cfg


def test_config_values_are_the_params_values():
    params = raw_params()
    vst = stage_config("vst", params)
    assert vst.train.optim.lr == params["vst"]["lr"] and vst.train.iterations == params["vst"]["iterations"]
    assert vst.tau == params["flow"]["tau"]
    assert vst.labels.occlusion.occlusion_threshold == params["flow"]["occlusion_threshold"]
    assert vst.labels.pseudo_label == params["vst"]["pseudo_label"]
    assert vst.labels.cbst_portion == params["vst"]["cbst_portion"]
    oracle = stage_config("train_oracle", params)
    assert oracle.train.batch_size == params["train_oracle"]["batch_size"]
    assert oracle.model.aspp_rates == tuple(params["model"]["aspp_rates"])
    prepare = stage_config("prepare", params)
    assert prepare.source.root == params["prepare"]["source"]["root"]


def test_stage_keys_are_what_the_stage_reads():
    assert stage_keys("report") == sorted(
        ["classes", "compute.device", "compute.nnodes", "compute.nproc_per_node", "compute.precision",
         "compute.rdzv_endpoint", "compute.workers", "flow.alpha", "flow.occlusion_threshold",
         "flow.tau", "report.figure_scale", "report.fps", "report.pseudo_frames", "report.threads",
         "report.video_clip", "report.video_scale"])
    assert "model.backbone" in stage_keys("train_source") and "seed" in stage_keys("vat")
    assert not any(k.startswith("flow.method") for k in stage_keys("vst"))   # the flow file is its input


def test_no_field_has_a_default_that_could_disagree_with_params_yaml():
    """Every field declared as a param has no default: params.yaml is the only place for its value."""
    for cls, _ in STAGES.values():
        todo = [cls]
        while todo:
            for f in dataclasses.fields(todo.pop()):
                if "kind" in f.metadata:
                    assert f.default is dataclasses.MISSING, (f.name, f.default)
                    if f.metadata["kind"] == "part":
                        todo.append(f.type)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["vat"].update(lr=-1.0), r"params.yaml: vat.lr = -1.0 is out of range \[0.0, None\]"),
    (lambda p: p["vst"].update(pseudo_label="cbts"), r"vst.pseudo_label = 'cbts' is not one of"),
    (lambda p: p["flow"].pop("tau"), r"params.yaml: flow.tau is missing"),
    (lambda p: p["train_source"].update(iterations=1.5), r"train_source.iterations must be an integer"),
    (lambda p: p["synth"].update(label_every=31), r"synth.label_every = 31 is out of range \[1, 30\]"),
    (lambda p: p["train_source"].update(optimizer="rmsprop"), r"train_source.optimizer = 'rmsprop'"),
    (lambda p: p["vst"].update(equal_proportions=[0.4, 2]), r"vst.equal_proportions = 2.0 is out of range"),
    (lambda p: p["model"].update(aspp_rates=[]), r"model.aspp_rates must be a non-empty list"),
])
def test_bad_values_name_their_key(edit, message):
    params = raw_params()
    edit(params)
    with pytest.raises(ParamError, match=message):
        for stage in STAGES:
            stage_config(stage, params)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\nvst:\n  alpha: [0.2\n  beta: 0.5\n")
    with pytest.raises(ParamError, match=r"params.yaml: not valid YAML at line \d+"):
        load_params(bad)
    with pytest.raises(ParamError, match="parameter file not found"):
        load_params(tmp_path / "missing.yaml")


def test_read_stage_config_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ParamError, match="vat.json: resolved params not found"):
        read_stage_config(VAT, tmp_path / "vat.json")
    (tmp_path / "vat.json").write_text("{")
    with pytest.raises(ParamError, match="vat.json: not valid JSON"):
        read_stage_config(VAT, tmp_path / "vat.json")
    (tmp_path / "vat.json").write_text(resolved_json(raw_params(), "vat"))
    assert read_stage_config(VAT, tmp_path / "vat.json") == stage_config("vat", raw_params())


def test_methods_that_share_a_phase_resolve_to_the_same_stage_params():
    """CBST*, CRST* and IAST share AdaptSegNet's warm-up, so the vat stage of all four has one run (DVC's run
    cache restores it); their pseudo-label and VST settings differ."""
    params = raw_params()
    composed = {m: compose_params([f"method={m}"], REPO / "conf") for m in group_options("method", REPO / "conf")}
    resolved = {m: {s: resolve(p, s) for s in STAGES} for m, p in composed.items()}
    vat = {m: r["vat"] for m, r in resolved.items()}
    assert vat["adaptsegnet"] == vat["cbst_star"] == vat["crst_star"] == vat["iast"]
    assert vat["adaptsegnet"] != vat["ours"] and vat["cbst"] == vat["source_only"] == vat["oracle"]
    vst = {m: r["vst"] for m, r in resolved.items()}
    assert vst["cbst_star"] != vst["crst_star"] and vst["cbst"] == vst["cbst_star"]
    labels = {m: r["pseudo_labels"] for m, r in resolved.items()}
    assert labels["cbst_star"] == labels["crst_star"] != labels["iast"]
    assert labels["ours"]["vst"]["alpha"] == params["vst"]["alpha"] and labels["iast"]["vst"]["alpha"] == 0.2
    # stages no method touches resolve alike for every method
    for stage in ("synth", "prepare", "train_source", "train_oracle", "flow", "report"):
        assert len({json.dumps(r[stage], sort_keys=True) for r in resolved.values()}) == 1, stage


def test_every_key_a_method_fixes_reaches_a_stage():
    read = {k for stage in STAGES for k in stage_keys(stage)}
    assert read | {"profile", "method"} == known_keys()
    for method in group_options("method", REPO / "conf"):
        assert set(method_fixes(method, REPO / "conf")) <= read, method


def test_dvc_stages_read_their_resolved_params_file():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    resolver = stages.pop("resolve_params")
    assert "conf" in resolver["deps"] and "videoda/config/compose.py" in resolver["deps"]
    sections = {k.split(".")[0] for stage in STAGES for k in stage_keys(stage)}
    assert set(resolver["params"]) == sections | {"profile", "method"}    # records: no stage reads them
    for name, stage in stages.items():
        path = f"data/params/{name}.json"
        assert path in stage["deps"] and path in resolver["outs"], name
        assert f"--params {path}" in stage["cmd"], name
        assert "params" not in stage, name      # params.yaml itself would rerun it on any method change
    assert set(stages) == set(STAGES)


@pytest.mark.slow
def test_resolve_params_stage_writes_effective_values_or_nothing(tmp_path):
    params = compose_params(["method=iast"], REPO / "conf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(REPO / "stages/resolve_params.py"), "--conf", str(REPO / "conf"), "--out", "data/params"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "data/params/pseudo_labels.json").read_text())
    assert written["vst"]["pseudo_label"] == "iast" and written["vst"]["gamma"] == 8.0
    assert json.loads((tmp_path / "data/params/vat.json").read_text())["vat"]["discriminator"] == "image"
    assert sorted(p.stem for p in (tmp_path / "data/params").glob("*.json")) == sorted(STAGES)
    params = compose_params(["method=ours"], REPO / "conf")
    params["vst"]["beta"] = 7        # a bad value of one stage: no file of any stage is (re)written
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data/params/vat.json").unlink()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: params.yaml: vst.beta = 7.0 is out of range [0.0, 1.0]"]
    assert not (tmp_path / "data/params/vat.json").exists()
    assert json.loads((tmp_path / "data/params/vst.json").read_text())["vst"]["pseudo_label"] == "iast"


def test_config_is_the_only_reader_of_params():
    """Nothing but the config layer parses params.yaml or walks params by hand: stages read their resolved file,
    and only resolve_params, the paper-tables tool and the VST, cross-CPU, GPU-check, scale and DDP benchmarks load
    params.yaml, through the config layer. (benchmarks/vst_screen.py parses a command-line value as YAML,
    benchmarks/gpu_check.py, benchmarks/scale.py and the CLI's stage-command read dvc.yaml's stage commands.)"""
    loaders = {"stages/resolve_params.py", "videoda/paper_tables/runner.py", "videoda/paper_tables/render.py",
               "benchmarks/vst_screen.py", "benchmarks/cross_cpu.py", "benchmarks/gpu_check.py", "benchmarks/scale.py",
               "benchmarks/ddp_scaling.py"}
    yaml_readers = {"benchmarks/vst_screen.py", "benchmarks/gpu_check.py", "benchmarks/scale.py", "videoda/cli.py",
                    "videoda/dvc_deps.py",          # reads dvc.yaml's stage commands, not params
                    "videoda/data/classes.py",      # classes.py reads class-set files, data that is not params
                    "benchmarks/pipeline_time.py",  # reads dvc.yaml's stage names
                    "videoda/docs_reference.py"}    # reads conf/'s profile and method files to document them
    offenders = []
    for path in sorted([*REPO.glob("videoda/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("benchmarks/*.py")]):
        name = path.relative_to(REPO).as_posix()
        if name.startswith("videoda/config/"):
            continue
        source = path.read_text()
        if ("safe_load(" in source and name not in yaml_readers) or "Section(" in source \
                or 'params["' in source or (re.search(r"\b(load|read)_params\(", source) and name not in loaders):
            offenders.append(name)
    assert offenders == []


def test_every_field_is_named_after_its_key():
    """One name per key from the YAML to the code: a field reading ``vst.cbst_portion`` is ``cbst_portion``."""
    def walk(cls, section):
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if meta.get("kind") == "part":
                yield from walk(f.type, meta["section"] or section)
            elif "kind" in meta:
                yield cls.__name__, f.name, meta["key"] or f"{section}.{f.name}"
    fields = {entry for cls, section in STAGES.values() for entry in walk(cls, section)}
    assert len(fields) > 50
    assert [(c, name, key) for c, name, key in sorted(fields) if key.split(".")[-1] != name] == []


@pytest.mark.parametrize("script", ["resolve_params", "synth", "prepare", "flow_gt"])
def test_stages_that_compute_nothing_with_torch_do_not_load_it(script):
    """Reading params loads no torch (``videoda.choices``): ``resolve_params`` (every ``dvc exp run -S``) and the
    data stages start in a fraction of a second instead of 3-6 s. The script's imports and its argument parsing
    run in a fresh process."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['stages/{script}.py', '--help']\n"
            "try:\n"
            f"    runpy.run_path('stages/{script}.py', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'ptlflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_every_pseudo_label_generator_is_a_choice():
    """``vst.pseudo_label``'s names (``videoda.choices``, checked by the config) are the generators' registry."""
    from videoda.choices import PSEUDO_LABELS
    from videoda.domain_adaptation.pseudo_labels import GENERATORS

    assert tuple(GENERATORS) == PSEUDO_LABELS
