"""The ``compute`` section, a part of every computing stage's config (docs/guides/gpus-and-clusters.md). Its own
module, so that the stages that compute nothing on a device (``synth``, ``prepare``, ``flow_gt``) do not depend on
it. It loads torch only when a stage asks for its runtime or launches its ranks."""

import json
from dataclasses import dataclass
from pathlib import Path

from videoda.choices import PRECISIONS, check_device_name
from videoda.config.fields import choice, integer, text
from videoda.errors import ParamError


@dataclass(frozen=True)
class Compute:
    """Where and how a computing stage runs: the device (auto | cpu | cuda | cuda:N), the precision (fp32 | bf16
    autocast), the data-loader workers, and the process layout (``nproc_per_node`` processes on each of ``nnodes``
    nodes, meeting at ``rdzv_endpoint``; docs/guides/gpus-and-clusters.md). The names are checked here, where the
    params are resolved; whether the device exists and supports the precision, where the stage runs
    (``runtime``)."""
    device: str = text()
    precision: str = choice(PRECISIONS)
    workers: int = integer(lo=0)
    nproc_per_node: int = integer(lo=1)
    nnodes: int = integer(lo=1)
    rdzv_endpoint: str = text()

    def __post_init__(self):
        check_device_name(self.device)
        if self.nproc_per_node > 1 and self.device.startswith("cuda:"):
            raise ParamError(f"params.yaml: compute.device = {self.device!r} names one GPU, but "
                             f"compute.nproc_per_node = {self.nproc_per_node}: use cuda (rank r of a node takes "
                             f"cuda:r) or auto")
        host, _, port = self.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ParamError(f"params.yaml: compute.rdzv_endpoint = {self.rdzv_endpoint!r} is not host:port")

    @property
    def world_size(self):
        return self.nproc_per_node * self.nnodes

    def launch(self, stage):
        """With more than one process, run stage ``stage`` (this process's command) as the layout's ranks under
        torch's elastic agent and return True once they have all finished; else False: this process is the
        stage's only process, or one of its ranks (``videoda.utils.distributed.launch_ranks``). Checks the device
        and precision first, so that a bad value stops the stage once, before any rank starts."""
        # imported here: reading a config loads no torch (videoda.choices); running a stage does
        from videoda.utils.device import resolve_runtime
        from videoda.utils.distributed import launch_ranks
        if self.world_size > 1:
            resolve_runtime(self.device, self.precision, self.workers)
        return launch_ranks(self.nproc_per_node, self.nnodes, self.rdzv_endpoint, run_id=f"videoda-{stage}")

    def runtime(self):
        """The resolved ``videoda.utils.device.Runtime`` of this process, the run context a stage passes to the
        library (a rank: its device and the joined process group; progress bars on rank 0); a CUDA device that is
        not here, or bf16 where the GPU has none, is a ParamError naming the key."""
        from videoda.utils.device import resolve_runtime   # here, not at the top: see launch
        return resolve_runtime(self.device, self.precision, self.workers, world_size=self.world_size,
                               show_progress=True)


LAYOUT_KEYS = ("nproc_per_node", "nnodes", "rdzv_endpoint")


def run_params(path):
    """A stage's resolved params file as bytes without the process layout: what keys a training snapshot
    (``videoda.domain_adaptation.snapshot``), which checks the number of processes apart, with a clear message,
    and may resume under another endpoint or split of the same number over nodes."""
    params = json.loads(Path(path).read_text())
    params["compute"] = {k: v for k, v in params["compute"].items() if k not in LAYOUT_KEYS}
    return json.dumps(params, sort_keys=True).encode()
