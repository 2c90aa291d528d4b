"""Several processes for one stage: PyTorch's distributed engine, launched by its elastic agent (what ``torchrun``
runs), docs/guides/gpus-and-clusters.md.

A stage with ``compute.nproc_per_node`` x ``compute.nnodes`` > 1 processes is started as usual
(``python stages/<stage>.py ...``, the command in ``dvc.yaml``); ``launch_ranks`` then makes that process the
node's elastic agent: it starts ``nproc_per_node`` copies of the same command as ranks, rendezvouses with the
other nodes' agents (c10d), watches the ranks, and returns when all have finished, or raises ``RankFailed``
naming the first rank that failed (the agent stops the others: no hang). Started by ``torchrun`` or by another
launcher that sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, the stage is a rank already and starts nothing.

Why from inside the stage rather than ``torchrun`` in ``dvc.yaml``'s command: the layout is a param like any
other, resolved (profile, method preset) and checked into the stage's params file, so ``dvc exp run -S
compute.nproc_per_node=8`` works, one process runs exactly as before with no launcher at all, and ``dvc.yaml``
stays the same for every layout. The agent is torch's own (``torch.distributed.launcher.api.elastic_launch``).

Each rank is a ``World`` (rank, size, local rank): it shards inference (``shard``: clips r, r + W, ...),
wraps models in ``DistributedDataParallel`` (``data_parallel``) and averages logged losses (``mean_over_ranks``).

The io layer: torch and the project's error types only.
"""

import datetime
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from videoda.errors import ParamError, RankFailed
from videoda.numerics import share_cores

RDZV_ENDPOINT_ENV = "VIDEODA_RDZV_ENDPOINT"
# How long a collective waits for the slowest rank. Rank 0 does sequential work while the others wait at a
# barrier (merging shards, Algorithm 1's thresholds in clip order), minutes at paper scale. A rank that dies is
# not detected by this timeout but by its elastic agent, within a second (``launch_ranks``).
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
RDZV_TIMEOUT_S = 1800


@dataclass(frozen=True)
class World:
    """This process's place among the stage's processes: global ``rank`` of ``size``, ``local_rank`` on its
    node. One process: rank 0 of 1."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        """Rank 0: the only one that writes outputs, snapshots, curves and logs."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def shard(self, items):
        """This rank's share of ``items``: items r, r + W, r + 2W, ... (round robin: the ranks' shares differ
        by at most one item, and consecutive items, e.g. clips in order, run at the same time)."""
        return list(items)[self.rank::self.size]


SINGLE = World()


def rank_world():
    """The ``World`` of this process when a launcher started it as a rank (``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` set, as torchrun sets them), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def check_layout(nproc_per_node, nnodes, key="params.yaml: compute"):
    """The world size of a layout; a launcher's world of another size is a ParamError: the size is part of the
    result (one sample stream per rank), so it must be the one the params record."""
    size = nproc_per_node * nnodes
    world = rank_world()
    if world is not None and world.size != size:
        raise ParamError(f"{key}.nproc_per_node x nnodes = {nproc_per_node} x {nnodes} = {size} processes, but "
                         f"the launcher started {world.size} (WORLD_SIZE); set the params to the launcher's layout")
    return size


def _describe_exit(code):
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch_ranks(nproc_per_node, nnodes, rdzv_endpoint, run_id, argv=None):
    """Run this stage as ``nproc_per_node`` ranks on this node (of ``nnodes``) under torch's elastic agent, when
    the layout has more than one process and this process is not a rank already; returns True when it did (the
    ranks have all finished: the caller has nothing left to do), False when the caller is to run the stage
    itself (one process, or a rank).

    ``argv``: the stage's command line (default ``sys.argv``), run by each rank with this Python. One node:
    rendezvous on a free local port. Several: c10d rendezvous at ``rdzv_endpoint`` (host:port of the first node;
    the environment variable ``VIDEODA_RDZV_ENDPOINT`` overrides it, for a scheduler that picks the node at run
    time), ``run_id`` the same on every node. No restarts: a failed rank fails the stage (``RankFailed``), and
    a rerun resumes from the training snapshot.
    """
    if check_layout(nproc_per_node, nnodes) == 1 or rank_world() is not None:
        return False
    # torch's launcher modules load only here: a one-process stage never imports them
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc_per_node > 1:
        share_cores()     # the node's ranks share its cores: their idle OpenMP threads sleep (videoda/numerics.py)
    endpoint = "localhost:0" if nnodes == 1 else os.environ.get(RDZV_ENDPOINT_ENV) or rdzv_endpoint
    # The nodes wait this long for each other: under DVC the first node checks the stage's inputs (hashing
    # data) before it starts the stage, while the others are already waiting (examples/slurm_stage.sh).
    config = LaunchConfig(min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc_per_node, run_id=run_id,
                          rdzv_backend="c10d", rdzv_endpoint=endpoint, rdzv_configs={"join_timeout": RDZV_TIMEOUT_S},
                          max_restarts=0, monitor_interval=0.5)
    argv = sys.argv if argv is None else argv
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        raise RankFailed(f"rank {rank} of {nproc_per_node * nnodes} (local rank {failure.local_rank}, pid "
                         f"{failure.pid}) {_describe_exit(failure.exitcode)}; the other ranks were stopped"
                         + ("" if nnodes == 1 else " (a rank that failed in a collective may have lost a peer on "
                                                   "another node: that node's log names the first failure)"),
                         2 if failure.exitcode == 2 else 1) from None
    except (RendezvousError, dist.DistError) as e:     # the agents' store is gone: the node that held it stopped
        raise RankFailed(f"this node's agent lost the rendezvous at {endpoint} ({type(e).__name__}): the node "
                         f"that holds it stopped or is unreachable; its log names why") from None
    return True


def die_with_launcher():
    """Linux: this rank is killed when its launcher (the node's elastic agent, the stage's own process) dies. A
    rank outlives a killed agent otherwise and goes on training with the other nodes, which then wait for the
    dead agent at the end (measured: a SIGKILLed agent on one of two localhost "nodes" left its rank training to
    the end, and the other node's agent waited 300 s for it)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # 1: PR_SET_PDEATHSIG


def init_process_group(world, device):
    """Join the stage's process group (a rank's environment says where): gloo for CPU tensors, NCCL for CUDA
    tensors beside it. Nothing for one process. The group is left when the process exits; the process is killed
    if its launcher dies (``die_with_launcher``)."""
    if not world.distributed or dist.is_initialized():
        return
    die_with_launcher()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    import atexit
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())


def barrier(world):
    """Wait for every rank (nothing for one process)."""
    if world.distributed:
        dist.barrier()


def broadcast_object(obj, world):
    """Rank 0's ``obj`` on every rank (pickled; for small things and a resumed snapshot's state)."""
    if not world.distributed:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, world):
    """Every rank's ``obj``, in rank order, on every rank (one process: ``[obj]``)."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values, world):
    """``{name: float}`` averaged over the ranks (the same dict, in the same key order, on every rank; the keys
    must agree): what the training curve logs under several processes. One process: ``values`` as they are."""
    if not world.distributed:
        return values
    names = list(values)
    t = torch.tensor([values[k] for k in names], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(names, (t / world.size).tolist()))


def data_parallel(module, compute, norm_key="params.yaml: model.norm"):
    """``module`` wrapped in ``DistributedDataParallel`` for the several processes of ``compute`` (a
    ``videoda.utils.device.Runtime``: its ``world`` and ``device``; the gradients averaged over the ranks at every
    backward), else ``module`` itself. BatchNorm layers that train become ``SyncBatchNorm`` (batch statistics over
    the global batch), which torch runs on CUDA only: on the CPU they are a ParamError. Frozen BatchNorm
    (torchvision's ``FrozenBatchNorm2d``, no ``_BatchNorm``) and GroupNorm need no synchronisation."""
    world, device = compute.world, compute.device
    if not world.distributed:
        return module
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        if device.type != "cuda":
            raise ParamError(f"{norm_key} = 'batch' with {world.size} processes needs SyncBatchNorm, which torch "
                             f"runs on CUDA only; use group or frozen_batch on the CPU")
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
