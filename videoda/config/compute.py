"""The ``compute`` section, a part of every computing stage's config (README "Device and precision"). Its own
module, so that the stages that compute nothing (``synth``, ``prepare``) do not depend on the device code."""

from dataclasses import dataclass

from videoda.config.fields import choice, integer, text
from videoda.utils.device import PRECISIONS, check_device_name, resolve_runtime


@dataclass(frozen=True)
class Compute:
    """Where and how a computing stage runs: the device (auto | cpu | cuda | cuda:N), the precision (fp32 | bf16
    autocast) and the data-loader workers. The names are checked here, where the params are resolved; whether the
    device exists and supports the precision, where the stage runs (``runtime``)."""
    device: str = text()
    precision: str = choice(PRECISIONS)
    workers: int = integer(lo=0)

    def __post_init__(self):
        check_device_name(self.device)

    def runtime(self):
        """The resolved ``videoda.utils.device.Runtime`` on this machine; a CUDA device that is not here, or bf16
        where the GPU has none, is a ParamError naming the key."""
        return resolve_runtime(self.device, self.precision, self.workers)
