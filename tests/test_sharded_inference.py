"""Sharded inference: stages `flow` and `evaluate` run as two processes (gloo, the CPU) write the bytes that one
process writes, and leave nothing behind (``videoda.utils.shards``)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import in_process, link, ok, stage, tiny_params, write_params

from videoda.data.classes import load_class_set
from videoda.metrics import ConfusionMatrix, VPQStuff, clip_counts, score_counts
from videoda.utils.device import CPU
from videoda.utils.distributed import World
from videoda.utils.io import TEMP_TAG
from videoda.utils.shards import in_clip_order


@pytest.fixture(scope="module")
def sharded(trained, tmp_path_factory):
    """The session's benchmark, three target clips per split (two ranks: clips 0 and 2 on rank 0, clip 1 on rank
    1), and its source-only model, in a folder of this module's."""
    cwd = link(tmp_path_factory.mktemp("sharded"), trained, "data/synth", "data/prepared", "models/source_only.pt")
    params = tiny_params()
    params["flow"].update(method="dis", tau=2, epe=True, compare=["gt"])     # DIS, and the EPE of two backends
    write_params(cwd, params)
    return cwd


def params_file(cwd, name, processes, **section):
    """A copy of stage ``name``'s resolved params run by ``processes`` processes on the CPU (``section``: other
    values of its own section)."""
    params = json.loads((cwd / f"data/params/{name}.json").read_text())
    params["compute"].update(device="cpu", nproc_per_node=processes)
    params[name].update(section)
    path = cwd / f"data/params/{name}_{processes}.json"
    path.write_text(json.dumps(params))
    return str(path.relative_to(cwd))


def files(root):
    """{relative path: md5} of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def leftovers(root):
    return list(Path(root).rglob(f"*{TEMP_TAG}*"))


def flow_args(cwd, processes, out, **flow):
    return ["--params", params_file(cwd, "flow", processes, **flow), "--out", f"{out}/flow.h5",
            "--report", f"{out}/flow.json"]


def run_flow(cwd, processes, out, **flow):
    return stage(cwd, "flow.py", *flow_args(cwd, processes, out, **flow))


@pytest.mark.multiprocess
def test_two_processes_write_the_flow_store_and_report_of_one_after_a_failed_run(sharded, capsys):
    """One process (this one) and two: the same files, one line of output. Before the two processes' run, a run
    that fails on both ranks writes nothing, and the run after it removes what a killed one left."""
    # a shard folder of a rank 0 killed with its run (a pid that is gone), next to the output
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    stale = sharded / f"two/.flow.h5{TEMP_TAG}{gone.pid}-x1"
    stale.mkdir(parents=True)
    (stale / "0.h5").write_bytes(b"half")
    failed = run_flow(sharded, 2, "two", tau=10)        # every clip has 10 frames: too short, on both ranks
    assert failed.returncode == 2 and "too short for flow.tau = 10" in failed.stderr
    assert "error: rank " in failed.stderr and not (sharded / "two/flow.h5").exists()
    two = ok(run_flow(sharded, 2, "two"))
    assert in_process(sharded, "flow.py", *flow_args(sharded, 1, "one")) == 0
    one = capsys.readouterr()
    assert files(sharded / "one") == files(sharded / "two") and len(files(sharded / "one")) == 2
    report = json.loads((sharded / "two/flow.json").read_text())
    assert report["clips"] == 3 and set(report["epe"]) == {"dis", "gt", "zero"}
    assert two.stdout.count("flow: 102 flows of 3 clips") == 1 == one.out.count("flow: 102 flows")  # rank 0
    assert not leftovers(sharded)


@pytest.mark.multiprocess
def test_two_processes_write_the_predictions_figures_and_metrics_of_one(sharded):
    for processes in (1, 2):
        out = f"eval{processes}"
        args = ["--params", params_file(sharded, "evaluate", processes), "--model", "a=models/source_only.pt",
                "--model", "b=models/source_only.pt",                      # two models: a shard folder each
                "--metrics", f"{out}/metrics.json", "--scores", f"{out}/scores.json",
                "--predictions", f"{out}/predictions", "--figures", f"{out}/figures"]
        if processes == 1:
            assert in_process(sharded, "evaluate.py", *args) == 0             # one process: this one
        else:
            ok(stage(sharded, "evaluate.py", *args))
    one = files(sharded / "eval1")
    assert one == files(sharded / "eval2")
    assert len([p for p in one if p.startswith("predictions/b/")]) == 3 * 2    # 3 clips, frames 5 and 10
    assert {"figures/confusion.npz", "figures/a_strip.png", "metrics.json", "scores.json"} <= set(one)
    assert not leftovers(sharded)


def test_one_process_computes_each_clip_when_it_is_taken(tmp_path):
    """One process: no files, and clip i is consumed before clip i + 1 is computed (memory: one clip)."""
    log = []
    work = lambda index, item: log.append(f"work {item}") or {"x": item}      # noqa: E731
    for index, result in in_clip_order("abc", work, CPU, None):
        log.append(f"take {index} {result['x']}")
    assert log == ["work a", "take 0 a", "work b", "take 1 b", "work c", "take 2 c"]
    assert World(1, 2).shard("abcde") == ["b", "d"]


def test_score_counts_adds_the_clips_as_update_does():
    """``score_counts`` over ``clip_counts`` (what the ranks send) equals ``ConfusionMatrix.update`` and
    ``VPQStuff.update`` clip by clip, bit for bit."""
    rng = np.random.default_rng(0)
    clips = [(rng.integers(0, 4, (n, 6, 8)), np.where(rng.random((n, 6, 8)) < 0.1, 255, rng.integers(0, 4, (n, 6, 8))))
             for n in (4, 3, 2)]
    cm, vpq = ConfusionMatrix(4), VPQStuff(4, label_stride=5)
    for preds, gts in clips:
        cm.update(preds, gts)
        vpq.update(preds, gts)
    four = load_class_set({"classes": [[c, [0, 0, 0]] for c in "0123"], "maps": {"cityscapes": {}}})
    report, mat = score_counts([clip_counts(p, g, 5, 4) for p, g in clips], 5, four)
    assert np.array_equal(mat, cm.mat) and report["vpq"] == vpq.compute() and report["miou"] == cm.to_dict()["miou"]
