"""Where and how a stage computes: the device (``compute.device``), the precision (``compute.precision``) and the
deterministic settings of each device type (docs/guides/gpus-and-clusters.md).

- ``resolve_device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a ``torch.device``; a CUDA device that does
  not exist here is a ``ParamError`` naming the key.
- ``check_precision``: ``fp32`` | ``bf16``; bf16 on a GPU without native bf16 is a ``ParamError`` naming the key.
- ``Runtime``: the resolved device and precision: moves models and batches, opens the autocast context.
- ``set_deterministic``: the CPU keeps torch's strict deterministic mode (an op without a deterministic kernel
  raises); CUDA uses deterministic kernels where they exist and warns where none does (bilinear upsampling's
  backward, ``nll_loss2d``, ``grid_sample``'s backward: docs/engineering/reproducibility.md lists what is and is
  not bit-reproducible).

The io layer: torch and the project's error types only.
"""

import contextlib
import os
from dataclasses import dataclass

import torch

from videoda.choices import DEVICE_KEY, PRECISIONS, check_device_name
from videoda.errors import ParamError
from videoda.utils.distributed import SINGLE, World, init_process_group, rank_world
from videoda.utils.progress import progress

PRECISION_KEY = "params.yaml: compute.precision"
WORKERS_KEY = "params.yaml: compute.workers"
# cuBLAS picks its reduction split by workspace size; a fixed workspace makes its matrix products deterministic.
# It is read when cuBLAS makes its first handle, so it must be set before any CUDA computation.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
# the channels-last layout of each weight rank (2D and 3D convolutions); Module.to(memory_format=) takes one format
# for both ranks and fails on the 3D convolution of the sequence discriminator
CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def cuda_missing_reason():
    """Why torch sees no CUDA device, in a few words."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES)"


def resolve_device(name, key=DEVICE_KEY, local_rank=0):
    """The ``torch.device`` of ``name``: ``auto`` is CUDA device ``local_rank`` (a rank's index on its node; 0 for
    one process) when CUDA is available, else the CPU; ``cuda`` is ``cuda:<local_rank>``. A CUDA device that is not
    there is a ParamError naming ``key``. Resolving to CUDA sets ``CUBLAS_WORKSPACE_CONFIG`` (unless set) before
    CUDA computes anything."""
    check_device_name(name, key)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ParamError(f"{key} = {name!r} but CUDA is not available: {cuda_missing_reason()}; "
                         f"use auto or cpu")
    index = int(name.partition(":")[2] or local_rank)
    count = torch.cuda.device_count()
    if index >= count:
        raise ParamError(f"{key} = {name!r} but {count} CUDA device{'s' if count != 1 else ''} "
                         f"{'are' if count != 1 else 'is'} visible (cuda:0 .. cuda:{count - 1})")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    return torch.device("cuda", index)


def bf16_supported(device):
    """Whether ``device`` runs bf16 natively: every CPU does under torch's CPU autocast (emulated, slower, on
    CPUs without AVX512-BF16 or AMX); a GPU needs bf16 tensor cores (compute capability 8.0, Ampere, or later),
    not the software emulation that ``torch.cuda.is_bf16_supported()`` also counts by default."""
    if device.type != "cuda":
        return True
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def check_precision(precision, device, key=PRECISION_KEY):
    """``precision`` if it is fp32, or bf16 on a device that supports it; else a ParamError naming ``key``."""
    if precision not in PRECISIONS:
        raise ParamError(f"{key} = {precision!r} is not one of {list(PRECISIONS)}")
    if precision == "bf16" and not bf16_supported(device):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        raise ParamError(f"{key} = 'bf16' but {device} ({name}) has no native bf16 (needs compute capability "
                         f">= 8.0); use fp32")
    return precision


def channels_last(module):
    """``module`` with its 4D and 5D weights and buffers channels-last (NHWC, NDHWC), in place: the layout cuDNN's
    tensor-core convolutions read without transposing."""
    return module._apply(lambda t: t.contiguous(memory_format=CHANNELS_LAST[t.dim()]) if t.dim() in CHANNELS_LAST
                         else t)


def set_deterministic(device):
    """Deterministic kernels for ``device``'s type. CPU: torch's strict mode, as before devices existed (an op
    without a deterministic CPU kernel raises). CUDA: deterministic kernels where torch has them, a warning
    where it has none (strict mode would raise at the first training step: the backward of bilinear
    upsampling and ``nll_loss2d`` have no deterministic CUDA kernel), deterministic cuDNN convolutions and no
    cuDNN autotuning (its choice of algorithm varies from run to run)."""
    # Deterministic mode also fills every new tensor (torch.empty) with NaN, a debugging aid that exposes reads of
    # uninitialised memory; no kernel here reads it (a run's bytes are the same with it off: tests/test_train.py)
    # and the fills cost 3-7% of a training step on the CPU (benchmarks/profile_training.py: aten::fill_).
    torch.utils.deterministic.fill_uninitialized_memory = False
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(True)


@dataclass(frozen=True)
class Runtime:
    """The run context of a computing stage, passed whole to every library function that computes: the device,
    the precision, the data-loader workers, this process's place among the stage's processes (``world``) and
    whether it shows progress bars (``show_progress``: set for a stage, and only rank 0 draws them; never in a
    test or a library call).
    ``CPU`` below is the context of a call without one: the CPU, fp32, one process, no bars.

    ``fp32``: everything in float32 (on CUDA, cuDNN's convolutions may use TF32 tensor cores, torch's default;
    docs/guides/gpus-and-clusters.md). ``bf16``: the forward pass and the losses under ``torch.autocast(device,
    bfloat16)``: convolutions and matrix products in bf16, the weights, gradients and optimiser state stay float32; the losses cast their
    logits to float32 first.
    """
    device: torch.device
    precision: str = "fp32"
    workers: int = 0
    world: World = SINGLE      # this process's rank among the stage's processes (videoda.utils.distributed)
    show_progress: bool = False

    @property
    def shows_progress(self):
        """Whether this process draws progress bars: rank 0 of a stage only (one bar for a stage, not one per
        rank)."""
        return self.show_progress and self.world.is_main

    def progress(self, items, description=""):
        """``items``, wrapped in a rich progress bar when this process shows them (``shows_progress``)."""
        return progress(items, description, self.shows_progress)

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    def autocast(self):
        """The context a forward pass (and its losses) runs in: bf16 autocast, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def module(self, module):
        """``module`` moved to the device, in place; on CUDA its convolution weights channels-last
        (``channels_last``). On the CPU nothing changes (no copy, the layout of before)."""
        module = module.to(self.device)
        return channels_last(module) if self.is_cuda else module

    def tensor(self, x):
        """A tensor on the device (asynchronously from pinned memory); a CPU tensor for the CPU is ``x`` itself."""
        return x.to(self.device, non_blocking=True)

    def batch(self, batch):
        """A batch dict with every tensor moved to the device (other values as they are)."""
        return {k: self.tensor(v) if torch.is_tensor(v) else v for k, v in batch.items()}

    def describe(self):
        """One line for a stage's log, e.g. ``cuda:0 (NVIDIA H200), bf16``."""
        name = f" ({torch.cuda.get_device_name(self.device)})" if self.is_cuda else ""
        ranks = f", {self.world.size} processes" if self.world.distributed else ""
        return f"{self.device}{name}, {self.precision}{ranks}"


def resolve_runtime(device="auto", precision="fp32", workers=0, device_key=DEVICE_KEY, precision_key=PRECISION_KEY,
                    world_size=1, show_progress=False):
    """The ``Runtime`` of these settings, every one checked on this machine (a ParamError names its key). A rank
    of a stage of ``world_size`` processes (its launcher's environment says which) takes its node's
    ``local_rank``-th CUDA device under ``cuda``/``auto`` and joins the process group."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ParamError(f"{WORKERS_KEY} = {workers!r} must be an integer >= 0")
    world = (rank_world() if world_size > 1 else None) or SINGLE      # the launcher checked its size
    resolved = resolve_device(device, device_key, world.local_rank)
    runtime = Runtime(resolved, check_precision(precision, resolved, precision_key), workers, world, show_progress)
    init_process_group(world, resolved)
    return runtime


CPU = Runtime(torch.device("cpu"))    # what every function without a runtime argument computes on
