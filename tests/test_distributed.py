"""Training on several processes (videoda/utils/distributed.py, docs/guides/gpus-and-clusters.md), on the CPU with
gloo and a tiny model: the real stage script under torch's elastic agent, one node and two "nodes" on localhost,
a killed rank, and resuming.

What holds exactly, and what within float tolerance: DistributedDataParallel averages the ranks' gradients, so
after every step the ranks hold bit-identical weights. Against one process training on the two ranks' batches
together (the global batch) the result is equal in exact arithmetic when the ranks' batches hold the same
number of labelled pixels (cross-entropy is a mean over a rank's labelled pixels, and DDP averages the ranks),
as here; in floats the sums are grouped differently (two half-batch gradients averaged vs one gradient of the
whole batch), so it is compared within a tolerance.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from videoda.config.fields import read_params, read_stage_config, with_overrides
from videoda.config.stages import resolved_json
from videoda.config.training import Supervised
from videoda.data.clips import save_clip
from videoda.data.pairs import PairDataset, PairLoader, load_split, rank_seed
from videoda.domain_adaptation.train import SUPERVISED, Curve, seed_everything, segmentation_optimizer, train
from videoda.errors import ParamError
from videoda.model import load_checkpoint
from videoda.model.build import build_model
from videoda.utils.device import CPU
from videoda.utils.distributed import SINGLE, World, check_layout, mean_over_ranks

from helpers import clips

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 6
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TIMEOUT = 120


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def write_params(folder, nproc=1, nnodes=1, endpoint="localhost:29400", iterations=ITERATIONS, snapshot_every=2):
    params = with_overrides(read_params(REPO / "params.yaml"), {
        "model.num_layers": 1, "model.aspp_rates": [1], "compute.device": "cpu", "compute.nproc_per_node": nproc,
        "compute.nnodes": nnodes, "compute.rdzv_endpoint": endpoint, "train_source.iterations": iterations,
        "train_source.batch_size": 2, "train_source.threads": 1, "train_source.snapshot_every": snapshot_every})
    path = folder / f"params-{nproc}x{nnodes}.json"
    path.write_text(resolved_json(params, "train_source"))
    return path


def stage(params, out, data):
    return [sys.executable, str(REPO / "stages" / "train_supervised.py"), "--stage", "train_source", "--params",
            str(params), "--split", "source", "--data", str(data), "--out", str(out / "model.pt"),
            "--curve", str(out / "curve.tsv")]


def run(command, **kw):
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    for c in clips(n=4, h=32, w=64):
        save_clip(root / "data" / "source" / f"{c.name}.npz", c)
    return root


@pytest.fixture(scope="module")
def two_processes(split):
    """stages/train_supervised.py with compute.nproc_per_node 2: the output folder."""
    out = split / "two"
    done = run(stage(write_params(split, nproc=2), out, split / "data"))
    assert done.returncode == 0, done.stderr
    return out


# --- the layout's bookkeeping ------------------------------------------------------------------------------

def test_world_shards_round_robin_and_one_process_is_everything():
    assert World(1, 3).shard(range(8)) == [1, 4, 7]
    assert SINGLE.shard("abc") == list("abc") and SINGLE.is_main and not SINGLE.distributed
    assert mean_over_ranks({"b": 1.0, "a": 2.0}, SINGLE) == {"b": 1.0, "a": 2.0}


def test_rank_zero_draws_the_one_process_stream_and_other_ranks_their_own():
    data = PairDataset(clips(), 1)
    one, zero, other = (PairLoader(data, 4, 5, compute=replace(CPU, world=World(r, 2))) for r in (0, 0, 1))
    a, b, c = one.sample(), zero.sample(), other.sample()
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])
    assert rank_seed(5, 0) == 5


def test_a_launcher_world_of_another_size_is_an_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ParamError, match=r"1 x 2 = 2 processes, but the launcher started 4"):
        check_layout(1, 2)


def test_bad_layout_params_name_their_key(tmp_path):
    params = read_params(REPO / "params.yaml")
    for overrides, message in [({"compute.nproc_per_node": 0}, "compute.nproc_per_node"),
                               ({"compute.rdzv_endpoint": "nohost"}, "compute.rdzv_endpoint = 'nohost'"),
                               ({"compute.device": "cuda:1", "compute.nproc_per_node": 2}, "names one GPU")]:
        path = tmp_path / "p.json"
        path.write_text(json.dumps(with_overrides(params, overrides)))
        with pytest.raises(ParamError, match=message):
            read_stage_config(Supervised, path, section="train_source")


# --- training: DDP ---------------------------------------------------------------------------------------------

PROBE = """
import videoda, json, sys, torch, torch.distributed as dist
from types import SimpleNamespace
from videoda.config.fields import read_stage_config
from videoda.config.training import Supervised
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.adversarial import VATBatches, vat_objective
from videoda.domain_adaptation.train import SUPERVISED, Curve, seed_everything, segmentation_optimizer, train
from videoda.model.build import build_model
params, data, out, kind = sys.argv[1:]
cfg = read_stage_config(Supervised, params, section="train_source")
if cfg.compute.launch("probe"):
    sys.exit(0)
compute = cfg.compute.runtime()
seed_everything(cfg.seed, compute)
torch.set_num_threads(1)
model = build_model(cfg.model)
optimizer = segmentation_optimizer(model, cfg.train.optim)
pairs = PairDataset(load_split(data, "source"), cfg.tau, require_label=True)
loaders = [PairLoader(pairs, cfg.train.batch_size, cfg.seed + i, compute=compute) for i in (0, 1)]
if kind == "vat":            # VAT: the segmentation network and D_V, whose step is the last of each training step
    vat = SimpleNamespace(discriminator="sequence", disc_input="softmax", dice="tube", lambda_v=0.01, lambda_dice=1.0,
                          disc_channels=8, optimizer_d="adam", lr_d=1e-4, train=cfg.train)
    objective = vat_objective(vat, compute=compute)
    networks, last = [model, objective.extra_step.discriminator], objective.extra_step.optimizer
    batches = VATBatches(*loaders)
else:                        # train_source
    networks, last, objective, batches = [model], optimizer, SUPERVISED, loaders[0]
identical = []

def compare_ranks(*_):      # after every step: every rank's weights, gathered, bit for bit
    w = torch.cat([p.detach().flatten() for net in networks for p in net.parameters()])
    gathered = [torch.empty_like(w) for _ in range(compute.world.size)]
    dist.all_gather(gathered, w)
    identical.append(all(torch.equal(gathered[0], g) for g in gathered))

last.register_step_post_hook(compare_ranks)
train(model, optimizer, batches, objective, cfg.train, Curve(), compute=compute)
if compute.world.is_main:
    open(out, "w").write(json.dumps(identical))
"""


@pytest.mark.multiprocess
@pytest.mark.parametrize("kind", ["train_source", "vat"])
def test_ranks_hold_identical_weights_after_every_step(split, kind):
    script = split / "probe.py"
    script.write_text(PROBE)
    done = run([sys.executable, str(script), str(write_params(split, nproc=2)), str(split / "data"),
                str(split / "identical.json"), kind])
    assert done.returncode == 0, done.stderr
    assert json.loads((split / "identical.json").read_text()) == [True] * ITERATIONS


class GlobalBatches:
    """One process's batches made of the two ranks' batches together: what 2 x batch_size on one GPU sees."""

    def __init__(self, pairs, batch_size, seed):
        self.ranks = [PairLoader(pairs, batch_size, seed, compute=replace(CPU, world=World(r, 2))) for r in (0, 1)]

    def sample(self):
        parts = [r.sample() for r in self.ranks]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.multiprocess
def test_two_processes_train_as_one_process_on_the_global_batch(split, two_processes, tmp_path):
    cfg = read_stage_config(Supervised, write_params(split, nproc=2), section="train_source")
    seed_everything(cfg.seed)
    torch.set_num_threads(1)
    model = build_model(cfg.model)
    optimizer = segmentation_optimizer(model, cfg.train.optim)
    pairs = PairDataset(load_split(split / "data", "source"), cfg.tau, require_label=True)
    train(model, optimizer, GlobalBatches(pairs, cfg.train.batch_size, cfg.seed), SUPERVISED, cfg.train,
          Curve(tmp_path / "curve.tsv"))
    ddp, _ = load_checkpoint(two_processes / "model.pt")
    reference = model.state_dict()
    for name, value in ddp.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5, msg=name)
    # the logged loss is the ranks' mean: the global batch's loss
    logged = [line.split("\t") for line in (two_processes / "curve.tsv").read_text().splitlines()]
    expected = [line.split("\t") for line in (tmp_path / "curve.tsv").read_text().splitlines()]
    assert logged[0] == expected[0] and abs(float(logged[-1][2]) - float(expected[-1][2])) < 1e-4


@pytest.mark.multiprocess
def test_only_rank_zero_writes(two_processes):
    assert sorted(p.name for p in two_processes.iterdir()) == ["curve.tsv", "model.pt"]


@pytest.mark.multiprocess
def test_two_nodes_on_localhost_train_as_one_node_with_two_processes(split, two_processes):
    """nnodes 2, one process each, meeting at a c10d rendezvous on localhost: the same two ranks, so the same
    checkpoint, byte for byte."""
    params = write_params(split, nproc=1, nnodes=2, endpoint=f"localhost:{free_port()}")
    out = split / "nodes"
    nodes = [subprocess.Popen(stage(params, out, split / "data"), env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=TIMEOUT)
        assert node.returncode == 0, err
    assert (out / "model.pt").read_bytes() == (two_processes / "model.pt").read_bytes()
    assert (out / "curve.tsv").read_bytes() == (two_processes / "curve.tsv").read_bytes()


def rank_pids(launcher_pid, rank):
    """The pids of the launcher's children whose environment says RANK=<rank>."""
    found = []
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            found.append(int(pid))
    return found


@pytest.mark.multiprocess
def test_a_killed_rank_fails_the_stage_naming_it_and_the_rerun_resumes(split, two_processes):
    """SIGKILL rank 1 after the first snapshot: the stage ends (no hang) with one line naming rank 1; a rerun
    with another number of processes is refused; a rerun with two resumes and ends byte-identical to the
    uninterrupted run."""
    params = write_params(split, nproc=2, iterations=40)
    out = split / "killed"
    snapshot = out / ".snapshots" / "train_source" / "snapshot.pt"
    plain = run(stage(params, split / "plain40", split / "data"))
    assert plain.returncode == 0, plain.stderr
    stage_process = subprocess.Popen(stage(params, out, split / "data"), env=ENV, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while not snapshot.exists() and stage_process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victims = rank_pids(stage_process.pid, 1)
    assert victims and stage_process.poll() is None, "the stage ended before its first snapshot"
    killed_at = time.monotonic()
    os.kill(victims[0], signal.SIGKILL)
    _, err = stage_process.communicate(timeout=60)
    assert stage_process.returncode == 1 and time.monotonic() - killed_at < 30
    assert "error: rank 1 of 2" in err and "was killed by SIGKILL" in err, err
    assert not (out / "model.pt").exists()

    one = run(stage(write_params(split, nproc=1, iterations=40), out, split / "data"))
    assert one.returncode == 2 and "was taken by 2 training processes and this run has 1" in one.stderr, one.stderr

    rerun = run(stage(params, out, split / "data"))
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming at step" in rerun.stdout
    for f in ("model.pt", "curve.tsv"):
        assert (out / f).read_bytes() == (split / "plain40" / f).read_bytes(), f
    assert not (out / ".snapshots").exists()


# --- several nodes under SLURM: examples/slurm_stage.sh with stand-ins for srun, scontrol and dvc -------------

SHIMS = {
    "scontrol": 'printf "node-a\\nnode-b\\n"',
    "srun": 'while [ "${1#--}" != "$1" ]; do shift; done\n'
            'for id in 0 1; do SLURM_NODEID=$id "$@" || exit $?; done',
    "dvc": '[ "$1" = status ] && exit 1\necho "node $SLURM_NODEID: dvc $* at $VIDEODA_RDZV_ENDPOINT" >> "$LOG"',
    "python": '[ "$1" = -m ] && exec "$REAL_PYTHON" "$@"\n'
              'echo "node $SLURM_NODEID: python $* at $VIDEODA_RDZV_ENDPOINT" >> "$LOG"',
}


def test_slurm_script_runs_dvc_on_the_first_node_and_the_stage_command_on_the_others(tmp_path):
    for name, body in SHIMS.items():
        (tmp_path / name).write_text(f"#!/bin/bash\n{body}\n")
        (tmp_path / name).chmod(0o755)
    log = tmp_path / "log"
    env = {**ENV, "PATH": f"{tmp_path}:{os.environ['PATH']}", "LOG": str(log), "REAL_PYTHON": sys.executable,
           "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_NODELIST": "node-[a-b]"}
    done = subprocess.run(["bash", str(REPO / "examples" / "slurm_stage.sh"), "vat"], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "node 0: dvc repro --single-item vat at node-a:29400",
        "node 1: python stages/vat.py --params data/params/vat.json --init models/source_only.pt --data "
        "data/prepared --out models/vat.pt --curve reports/curves/vat.tsv at node-a:29400"]


@pytest.mark.multiprocess
def test_a_killed_node_agent_takes_its_ranks_and_the_other_node_down(split):
    """Two "nodes" on localhost training; SIGKILL the stage process (the elastic agent) of the node with rank 1,
    as a scheduler or a crash would: its rank dies with it (``die_with_launcher``) instead of training on, and
    the other node's stage ends within seconds with one error line. (Without ``die_with_launcher`` the orphaned
    rank trained to the end and the other node waited 300 s for the dead agent.)"""
    params = write_params(split, nproc=1, nnodes=2, endpoint=f"localhost:{free_port()}", iterations=100000,
                          snapshot_every=5)
    out = split / "agent"
    snapshot = out / ".snapshots" / "train_source" / "snapshot.pt"
    nodes = [subprocess.Popen(stage(params, out, split / "data"), env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + TIMEOUT
    while not snapshot.exists() and time.monotonic() < deadline:     # both ranks have joined and trained
        time.sleep(0.05)
    if not rank_pids(nodes[1].pid, 1):
        nodes.reverse()                        # kill the node that got rank 1
    rank_one = rank_pids(nodes[1].pid, 1)
    assert snapshot.exists() and rank_one, "the two nodes did not start training"
    nodes[1].kill()
    killed_at = time.monotonic()
    _, err = nodes[0].communicate(timeout=60)
    assert nodes[0].returncode == 1 and time.monotonic() - killed_at < 30, err
    # one line naming the rank, or, when the killed node held the rendezvous, the lost rendezvous
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 0 of 2") and "another node" in last or "lost the rendezvous" in last, err
    nodes[1].wait()
    time.sleep(1)
    assert not Path(f"/proc/{rank_one[0]}").exists() or "State:\tZ" in Path(f"/proc/{rank_one[0]}/status").read_text()
    assert not (out / "model.pt").exists()
