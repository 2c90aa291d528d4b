"""benchmarks/scale.py: every stage of dvc.yaml run as its own process on a generated benchmark, measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_scale_benchmark_measures_every_stage_at_the_tiniest_size(tmp_path):
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(REPO / "benchmarks/scale.py"), "--sizes", "2", "--height", "32", "--width", "64",
           "--frames", "6", "--iterations", "1", "--work", str(tmp_path / "work"), "--json", str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(out.read_text())
    stages = [s for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"] if s not in ("resolve_params",
                                                                                                   "report")]
    (size,) = report["sizes"]
    assert size["clips"] == 2 and size["target_val_clips"] == 1 and list(size["stages"]) == stages
    for name, e in size["stages"].items():
        assert e["peak_rss_mib"] > 0 and e["wall_s"] > 0 and e["cpu_s"] > 0, name
    for name in ("train_source", "train_oracle", "vat", "vst"):
        assert size["stages"][name]["s_per_iteration"] > 0 and size["stages"][name]["items"] == 1, name
    for name, frames in (("synth", 5 * 6), ("prepare", 5 * 6), ("pseudo_labels", 2 * 6), ("evaluate", 4 * 6)):
        assert size["stages"][name]["items"] == frames and size["stages"][name]["per_second"] > 0, name
    assert size["stages"]["flow"]["items"] == 2 * 2 * 5 and size["stages"]["flow"]["per_second"] > 0
    assert size["stages"]["prepare"]["outputs_mib"] > 0 and size["stages"]["train_source"]["outputs_mib"] > 0
    assert not (tmp_path / "work/clips_2").exists()          # each size's folder goes once measured
    assert "peak RSS (MiB)" in r.stdout                            # the table


def test_scale_benchmark_refuses_the_repository_as_its_work_folder():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/scale.py"), "--work", str(REPO / "data/scale")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "inside the repository" in r.stderr
