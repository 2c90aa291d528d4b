"""Pseudo labels with several processes (gloo on the CPU): each rank predicts and aggregates its share of the
clips, rank 0 thresholds them in the clips' order (Algorithm 1's EMA) and writes; the files are byte-identical to
one process's. Stage ``pseudo_labels`` run as a script with 1 and 2 processes, and VST's later-round
regeneration (``regenerate_pseudo_labels``) on 2 ranks."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from helpers import PAN_T as T, REPO, in_process, panning_clips, sharp_model, write_pan_flows, write_params
from videoda.config.stages import stage_config
from videoda.data.clips import save_clip
from videoda.data.pairs import load_split
from videoda.domain_adaptation.self_training import regenerate_pseudo_labels
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint, save_checkpoint
from videoda.utils.device import CPU
from videoda.utils.distributed import World
from videoda.utils.images import read_label_png
from videoda.utils.io import atomic_path, scratch_folder
from videoda.utils.shards import shared_folder


CLIPS = 3          # 3 clips on 2 ranks: rank 0 predicts clips 0 and 2, rank 1 clip 1
torch.set_num_threads(1)                # as each rank: the same float operations


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Prepared target-train clips (a pan, some frames annotated), their flow store (the pan's flow with noise:
    occlusions), a model with sharp softmax maps, and the resolved params."""
    root = tmp_path_factory.mktemp("sharded")
    rng = np.random.default_rng(7)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["compute"]["device"] = "cpu"
    params["vst"]["threads"] = 1
    write_params(root, params)
    clips = panning_clips(rng, CLIPS)
    for clip in clips:
        save_clip(root / "data/prepared/target_train" / clip.name, clip)
    flow_path = root / "data/flow/target_train.h5"
    flow_path.parent.mkdir(parents=True)
    write_pan_flows(flow_path, clips, rng)
    model = sharp_model(params)
    save_checkpoint(root / "models/vat.pt", model)
    return root


def stage_args(params_file, out):
    """Stage pseudo_labels' arguments: its params, writing under ``<root>/<out>/``."""
    return ["--params", str(params_file), "--model", "models/vat.pt", "--out", f"{out}/pseudo_labels",
            "--report", f"{out}/pseudo_labels.json", "--summary", f"{out}/p_miou.json"]


def run_stage(root, params_file, out):
    """Stage pseudo_labels as dvc runs it (its own process, which launches the ranks), writing under
    ``<root>/<out>/``."""
    result = subprocess.run([sys.executable, str(REPO / "stages/pseudo_labels.py"), *stage_args(params_file, out)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def files_under(folder):
    """{relative path: bytes} of everything under ``folder``, hidden leftovers included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file()}


def finished_pid():
    """The pid of a process that has exited (a killed run's)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.multiprocess
@pytest.mark.parametrize("kind, equal_proportions", [("clip_agg", [0.5]), ("cbst", [])])
def test_stage_with_two_processes_writes_the_bytes_of_one(inputs, kind, equal_proportions):
    """Ours (Algorithm 1 on aggregated predictions, with Table 7's search) and CBST (set-wide thresholds): the
    label PNGs and both reports are byte-identical, only the outputs are written, and a killed run's temporary
    folder is removed."""
    resolved = json.loads((inputs / "data/params/pseudo_labels.json").read_text())
    resolved["vst"].update(pseudo_label=kind, equal_proportions=equal_proportions)
    params = {}
    for n in (1, 2):
        resolved["compute"]["nproc_per_node"] = n
        params[n] = inputs / f"data/params/{kind}_{n}.json"
        params[n].write_text(json.dumps(resolved))
    out = {n: f"out_{kind}_{n}" for n in (1, 2)}
    stale = inputs / out[2] / f".pseudo_labels.partial-{finished_pid()}-x1y2"
    (stale / "pseudo_labels").mkdir(parents=True)
    assert in_process(inputs, "pseudo_labels.py", *stage_args(params[1], out[1])) == 0      # one process: this one
    two = run_stage(inputs, params[2], out[2])
    one, two_files = files_under(inputs / out[1]), files_under(inputs / out[2])
    assert len([p for p in one if p.endswith(".png")]) == CLIPS * T
    assert sorted(two_files) == sorted(one)                          # no shard folder, no leftover
    assert all(two_files[p] == one[p] for p in one), [p for p in one if two_files[p] != one[p]]
    assert ("table7" in json.loads(one["p_miou.json"])) == bool(equal_proportions)
    assert sorted(q.name for q in (inputs / out[2]).iterdir()) == ["p_miou.json", "pseudo_labels",
                                                                    "pseudo_labels.json"]
    assert "Traceback" not in two.stderr


# --- VST's later rounds: regenerate_pseudo_labels on 2 ranks --------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def label_config(params, kind):
    """VST's generator of its later rounds, set to ``kind``."""
    return dataclasses.replace(stage_config("vst", params).labels, pseudo_label=kind, batch_size=2)


def regenerate_on_rank(rank, size, port, root, kinds):
    """One rank: regenerate the pseudo labels of each generator in ``kinds`` into ``<root>/<kind>_ranks/labels``
    with the model wrapped as VST trains it (DistributedDataParallel), then read every frame back from the
    returned ``PseudoLabelFiles`` into ``<root>/<kind>_rank<r>.npy``."""
    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        clips = load_split(root / "data/prepared", "target_train")
        model = torch.nn.parallel.DistributedDataParallel(load_checkpoint(root / "models/vat.pt")[0])
        params = yaml.safe_load((root / "params.yaml").read_text())
        with FlowStore(root / "data/flow/target_train.h5") as store:
            for kind in kinds:
                folder = root / f"{kind}_ranks" / "labels"
                if rank == 0:
                    folder.parent.mkdir()
                dist.barrier()
                files = regenerate_pseudo_labels(model, clips, store, label_config(params, kind), folder,
                                                 dataclasses.replace(CPU, world=World(rank, size, rank)))
                np.save(root / f"{kind}_rank{rank}.npy", np.stack([files[c.name][range(T)] for c in clips]))
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
def test_regeneration_on_two_ranks_writes_the_files_of_one(inputs):
    """Ours and CBST: the PNGs of 2 ranks are those of one process, no spill is left beside them, and each
    rank reads them back as soon as the call returns."""
    kinds = ("clip_agg", "cbst")
    params = yaml.safe_load((inputs / "params.yaml").read_text())
    clips = load_split(inputs / "data/prepared", "target_train")
    model = load_checkpoint(inputs / "models/vat.pt")[0]
    with FlowStore(inputs / "data/flow/target_train.h5") as store:
        for kind in kinds:
            (inputs / f"{kind}_one").mkdir()
            regenerate_pseudo_labels(model, clips, store, label_config(params, kind), inputs / f"{kind}_one/labels")
    mp.spawn(regenerate_on_rank, args=(2, free_port(), inputs, kinds), nprocs=2, join=True)
    for kind in kinds:
        one = files_under(inputs / f"{kind}_one")
        assert len(one) == CLIPS * T and files_under(inputs / f"{kind}_ranks") == one
        expected = np.stack([[read_label_png(inputs / f"{kind}_one/labels" / c.name / f"{n}.png")
                              for n in c.frame_names] for c in clips])
        for rank in (0, 1):
            assert np.array_equal(np.load(inputs / f"{kind}_rank{rank}.npy"), expected), (kind, rank)


def test_scratch_folder_is_removed_after_and_a_killed_runs_by_the_next(tmp_path):
    """The folder VST's rounds (or any work files of an output) live in, as ``shared_folder`` makes it on rank 0:
    named as ``atomic_path`` names its temporaries, so a killed run's is removed by the next run."""
    stale = tmp_path / f".vst.pt.partial-{finished_pid()}-abc_1"
    stale.mkdir()
    with shared_folder(lambda: scratch_folder(tmp_path / "vst.pt")) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f".vst.pt.partial-{os.getpid()}-")
        assert sorted(tmp_path.iterdir()) == [folder]                    # the stale one is gone
        (folder / "labels").mkdir()
        with atomic_path(tmp_path / "vst.pt") as tmp:                    # the output itself keeps it
            tmp.write_bytes(b"weights")
        assert folder.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["vst.pt"]


@pytest.mark.multiprocess
def test_vst_stage_with_two_processes_and_two_rounds(inputs):
    """Stage vst on 2 ranks over 2 rounds (the second regenerates its labels sharded, into a folder next to the
    output that both ranks read): it finishes, writes only its checkpoint and curve, and leaves no round folder or
    snapshot behind."""
    assert in_process(inputs, "pseudo_labels.py", *stage_args("data/params/pseudo_labels.json", "vst_labels")) == 0
    resolved = json.loads((inputs / "data/params/vst.json").read_text())
    resolved["compute"]["nproc_per_node"] = 2
    resolved["vst"].update(rounds=2, iterations=3, batch_size=2, snapshot_every=2)
    (inputs / "data/params/vst_2.json").write_text(json.dumps(resolved))
    done = subprocess.run(
        [sys.executable, str(REPO / "stages/vst.py"), "--params", "data/params/vst_2.json", "--init", "models/vat.pt",
         "--pseudo", "vst_labels/pseudo_labels", "--out", "vst_out/vst.pt", "--curve", "vst_out/vst.tsv"],
        cwd=inputs, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 processes" in done.stdout
    assert sorted(p.name for p in (inputs / "vst_out").iterdir()) == ["vst.pt", "vst.tsv"]
    rows = (inputs / "vst_out/vst.tsv").read_text().splitlines()
    assert rows[0].split("\t")[-1] == "round" and [r.split("\t")[-1] for r in rows[1:]] == ["1", "2"]
