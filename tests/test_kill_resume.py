"""Stages flow, pseudo_labels and evaluate killed with SIGKILL mid-way resume (videoda/utils/resume.py): the rerun
computes only the clips not done, writes the bytes of an uninterrupted run, and removes what was kept; under two
processes, a rank that dies leaves the clips done for a rerun, here by one process.

The kill is deterministic: a ``sitecustomize`` module on the stage process's path wraps ``mark_done`` (the last
write of a clip's result) so that the process logs each clip it finishes and kills itself with SIGKILL after the
n-th: a real ``kill -9`` at a known point, with no hook in the library."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, in_process, link, ok, tiny_params, write_params
from videoda.errors import DataError
from videoda.utils.device import CPU
from videoda.utils.resume import DONE, KEY_FILE, ClipWork, is_done, mark_done, run_key, stage_folder
from videoda.utils.shards import in_clip_order

KILLER = """
import os, signal
from videoda.utils import resume

_mark_done, _done = resume.mark_done, []


def mark_done(folder, index):
    _mark_done(folder, index)
    _done.append(index)
    with open(os.environ["VIDEODA_TEST_DONE_LOG"], "a") as log:
        log.write(f"{os.environ.get('RANK', 0)} {os.path.basename(folder)}/{index}\\n")
    if len(_done) == int(os.environ["VIDEODA_TEST_KILL_AFTER"]) and \\
            os.environ.get("RANK", "0") == os.environ.get("VIDEODA_TEST_KILL_RANK", "0"):
        os.kill(os.getpid(), signal.SIGKILL)


resume.mark_done = mark_done
"""


def files(root):
    """{relative path: md5} of every file under ``root`` (a file or a folder)."""
    root = Path(root)
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): hashlib.md5(p.read_bytes()).hexdigest() for p in paths}


def outputs(cwd, paths):
    return {p: files(cwd / p) for p in paths}


def run_killed(cwd, args, kill_after, tmp_path, kill_rank=0):
    """``stages/<args[0]>`` in its own process, killed (SIGKILL) after it finishes ``kill_after`` clips (on rank
    ``kill_rank``); returns (the process result, the clips it finished, as "rank folder/index" lines)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(KILLER)
    log = tmp_path / "done.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "VIDEODA_TEST_DONE_LOG": str(log),
           "VIDEODA_TEST_KILL_AFTER": str(kill_after), "VIDEODA_TEST_KILL_RANK": str(kill_rank)}
    result = subprocess.run([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=cwd, env=env,
                            capture_output=True, text=True)
    return result, log.read_text().splitlines() if log.exists() else []


def check_resumes(cwd, tmp_path, args, outs, work, clips, kill_after):
    """The stage ``args`` killed after ``kill_after`` of its ``clips`` clip results, then rerun (this process's
    interpreter, in a new process: the same hook logs without killing): its outputs ``outs`` equal an uninterrupted
    run's, the rerun computed only the other clips, and the work folder ``work`` is gone."""
    assert in_process(cwd, *args) == 0
    plain = outputs(cwd, outs)
    for p in outs:           # as `dvc repro` does before it reruns a stage
        subprocess.run(["rm", "-rf", str(cwd / p)], check=True)
    killed, done = run_killed(cwd, args, kill_after, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(done) == kill_after and sum(1 for _ in (cwd / work).rglob(f"*{DONE}")) == kill_after
    assert not any((cwd / p).exists() for p in outs)
    rerun, redone = run_killed(cwd, args, 0, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming, {kill_after} clip result{'s' * (kill_after > 1)} kept" in rerun.stdout
    assert len(redone) == clips - kill_after and not {c.split()[1] for c in done} & {c.split()[1] for c in redone}
    assert outputs(cwd, outs) == plain
    assert not (cwd / work).exists()


@pytest.fixture(scope="module")
def bench_with_models(trained, tmp_path_factory):
    cwd = link(tmp_path_factory.mktemp("kill"), trained, "data/synth", "data/prepared", "models/source_only.pt",
               "models/oracle.pt")
    write_params(cwd, tiny_params())
    return cwd


@pytest.mark.slow
def test_killed_flow_stage_resumes_to_the_same_store(bench_with_models, tmp_path):
    check_resumes(bench_with_models, tmp_path, ["flow.py", "--out", "data/flow/target_train.h5"],
                  ["data/flow/target_train.h5", "reports/flow.json"], "data/flow/.snapshots/flow", 3, 1)


@pytest.mark.slow
def test_killed_pseudo_label_stage_resumes_to_the_same_labels(bench_with_models, tmp_path):
    cwd = bench_with_models
    if not (cwd / "data/flow/target_train.h5").exists():
        assert in_process(cwd, "flow.py") == 0
    check_resumes(cwd, tmp_path, ["pseudo_labels.py", "--model", "models/source_only.pt"],
                  ["data/pseudo_labels", "reports/pseudo_labels.json", "reports/p_miou.json"],
                  "data/.snapshots/pseudo_labels", 3, 2)


@pytest.mark.slow
def test_killed_evaluate_stage_resumes_to_the_same_scores(bench_with_models, tmp_path):
    """Two models of three clips each, killed in the second model's clips."""
    check_resumes(bench_with_models, tmp_path, ["evaluate.py", "--model", "source_only=models/source_only.pt",
                                                "--model", "oracle=models/oracle.pt"],
                  ["data/predictions", "reports/figures", "reports/metrics.json", "reports/scores.json"],
                  "data/.snapshots/evaluate", 6, 4)


@pytest.mark.multiprocess
def test_a_rank_killed_leaves_its_clips_to_a_rerun_by_one_process(bench_with_models, tmp_path):
    """Stage evaluate as two processes (clips 0 and 2 on rank 0, clip 1 on rank 1); rank 0 is killed after its first
    clip (the elastic agent then stops rank 1 and the stage fails); the rerun, as one process, predicts only the
    clips not done (clip 2 at least) and writes the bytes of an uninterrupted run."""
    cwd = bench_with_models
    args = ["evaluate.py", "--model", "source_only=models/source_only.pt", "--predictions", "data/pred2",
            "--figures", "reports/fig2", "--metrics", "reports/m2.json", "--scores", "reports/s2.json"]
    outs = ["data/pred2", "reports/fig2", "reports/m2.json", "reports/s2.json"]
    assert in_process(cwd, *args) == 0
    plain = outputs(cwd, outs)
    for p in outs:
        subprocess.run(["rm", "-rf", str(cwd / p)], check=True)
    params = json.loads((cwd / "data/params/evaluate.json").read_text())
    for n in (1, 2):
        params["compute"].update(device="cpu", nproc_per_node=n)
        (cwd / f"data/params/evaluate_{n}.json").write_text(json.dumps(params))
    killed, done = run_killed(cwd, [*args, "--params", "data/params/evaluate_2.json"], 1, tmp_path, kill_rank=0)
    assert killed.returncode != 0 and "rank 0" in killed.stderr, killed.stderr
    assert "0 source_only/0" in done and not any((cwd / p).exists() for p in outs)
    rerun, redone = run_killed(cwd, [*args, "--params", "data/params/evaluate_1.json"], 0, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 source_only/2" in redone and len(redone) == 3 - len(done)
    assert {line.split()[1] for line in done}.isdisjoint(line.split()[1] for line in redone)
    assert outputs(cwd, outs) == plain and not (cwd / "data/.snapshots").exists()


# --- the library, by hand ------------------------------------------------------------------------------------

def test_in_clip_order_computes_only_the_clips_not_done_and_yields_all_in_order(tmp_path):
    calls = []

    def work(index, item):
        calls.append(index)
        return {"value": item * 10, "name": f"clip{index}"}

    folder = tmp_path / "work"
    first = list(in_clip_order([1, 2, 3, 4], work, CPU, folder))
    assert calls == [0, 1, 2, 3] and [r["value"] for _, r in first] == [10, 20, 30, 40]
    (folder / f"2{DONE}").unlink()                 # clip 2 was being written when the run was killed
    calls.clear()
    again = list(in_clip_order([1, 2, 3, 4], work, CPU, folder))
    assert calls == [2] and [(i, r["value"], r["name"]) for i, r in again] == [
        (0, 10, "clip0"), (1, 20, "clip1"), (2, 30, "clip2"), (3, 40, "clip3")]


def test_clip_work_keeps_its_own_key_and_removes_another_runs(tmp_path, capsys):
    out = tmp_path / "data" / "flow.h5"
    with pytest.raises(RuntimeError):           # a crash: the work stays for the rerun
        with ClipWork(out, "flow", "k1", CPU) as work:
            mark_done(work.folder, 0)
            raise RuntimeError("crash")
    assert work.folder == stage_folder(out, "flow") == tmp_path / "data/.snapshots/flow"
    assert (work.folder / KEY_FILE).read_text() == "k1" and is_done(work.folder, 0)
    with ClipWork(out, "flow", "k1", CPU) as work:
        assert is_done(work.folder, 0) and "resuming, 1 clip result kept" in capsys.readouterr().out
        with pytest.raises(DataError):           # a bad input: nothing to resume, nothing left behind
            with ClipWork(out, "flow", "k2", CPU) as other:
                assert not is_done(other.folder, 0)
                assert "holds the work of another run" in capsys.readouterr().err
                raise DataError("bad clip")
    assert not (tmp_path / "data/.snapshots").exists() and (tmp_path / "data").is_dir()


def test_run_key_ignores_nothing_it_is_given(tmp_path):
    params, model = tmp_path / "p.json", tmp_path / "m.pt"
    params.write_text("{}")
    model.write_bytes(b"w1")
    k = run_key("evaluate", params, files=[model], data=[tmp_path / "p.json"])
    model.write_bytes(b"w2")
    assert run_key("evaluate", params, files=[model], data=[tmp_path / "p.json"]) != k
