"""One training loop for every method; what differs between methods is the list of losses plugged in.

Each step draws a batch (a dict), runs ``forward(model, batch) -> outputs`` once, and asks every *loss term*
``term(outputs, batch) -> {name: scalar tensor}``; the loop sums the terms' losses, back-propagates, steps,
and logs each named loss.  Methods with a discriminator pass ``extra_step``,
called after the segmentation step (the alternating optimisation of AdaptSegNet/ADVENT).
"""

import contextlib
import csv
import time

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from videoda.domain_adaptation.losses import cross_entropy_2d
from videoda.domain_adaptation.snapshot import restore_training_state, training_state
from videoda.model import normalize
from videoda.utils.device import set_deterministic
from videoda.utils.distributed import SINGLE, data_parallel, mean_over_ranks
from videoda.utils.io import atomic_path


def seed_everything(seed, device="cpu"):
    """Seed torch (every device) and numpy; deterministic kernels for ``device``'s type (``set_deterministic``)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    set_deterministic(torch.device(device))


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(param_groups, name, lr, momentum=0.9, weight_decay=5e-4):
    """SGD or Adam (betas 0.9, 0.99, as ADVENT) over ``param_groups``, each remembering its initial lr for
    ``poly_lr_``."""
    for g in param_groups:
        g["initial_lr"] = g["lr"]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def segmentation_optimizer(model, optim):
    """The segmentation network's optimiser from an ``Optimizer`` config (``videoda.config``): ``optim.lr`` for
    the backbone, 10x for the head (``model.param_groups``)."""
    return make_optimizer(model.param_groups(optim.lr), optim.optimizer, optim.lr, optim.momentum,
                          optim.weight_decay)


def poly_lr_(optimizer, step, max_steps, power=0.9):
    """DeepLab's poly schedule, applied to *every* param group from its own initial lr."""
    factor = (1 - step / max_steps) ** power
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor


def train(model, optimizer, batches, forward, loss_terms, iterations, log_path, power=0.9, extra_step=None,
          log_every=10, description="train", snapshot=None, resume=None, compute=None):
    """Run ``iterations`` steps; write a TSV training curve (step, lr and every loss) to ``log_path`` (if given).

    ``batches``: the batch stream, ``.sample()`` the next batch, ``.skip(n)`` advance it by n batches unloaded.
    ``snapshot`` (a ``snapshot.Snapshot``): saved every ``snapshot.every`` steps; ``resume``: a state it loaded,
    to continue from (``snapshot.restore_training_state``). A resumed run ends exactly as an uninterrupted one:
    saving draws no random number and changes no float operation.
    ``compute`` (``videoda.utils.device.Runtime``, with ``model`` already on its device): each batch is moved to
    its device and the forward pass and the losses run under its autocast (backward outside it, as torch
    advises); None: batches as ``batches`` gives them, no autocast (for the CPU in fp32 the two are the
    same computation).

    Several processes (``compute.world``): ``forward`` gets ``model`` wrapped in DistributedDataParallel, so each
    backward averages the gradients over the ranks and every rank holds the same weights after every step; each
    rank's ``batches`` is its own stream (the global batch is the ranks' batches together). The logged losses
    are averaged over the ranks; only rank 0 shows progress, writes the curve and the snapshots.

    Returns ``{"seconds", "final", "rows"}``. The seconds are for the caller to print, never to write into an
    output: a DVC-tracked file must not change when only the run time does.
    """
    world = SINGLE if compute is None else compute.world
    model.train()
    rows, sums, count, first = [], {}, 0, 0
    if resume is not None:
        first, rows, sums, count = restore_training_state(resume, iterations, model, optimizer, extra_step, batches)
    # wrapped after restoring: DDP broadcasts rank 0's weights when it wraps, the restored ones
    net = model if compute is None else data_parallel(model, world, compute.device)
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False, disable=not world.is_main) as progress:
        task = progress.add_task(description, total=iterations, loss="", completed=first)
        for step in range(first, iterations):
            poly_lr_(optimizer, step, iterations, power)
            batch = batches.sample() if compute is None else compute.batch(batches.sample())
            with contextlib.nullcontext() if compute is None else compute.autocast():
                outputs = forward(net, batch)
                losses = {}
                for term in loss_terms:
                    losses.update(term(outputs, batch))
                total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if extra_step is not None:
                losses.update(extra_step(outputs, batch, step))
            values = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in losses.items()}
            for k, v in mean_over_ranks(values, world).items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if (step + 1) % log_every == 0 or step + 1 == iterations:
                row = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"]}
                row.update({k: s / count for k, s in sums.items()})
                rows.append(row)
                sums, count = {}, 0
                progress.update(task, loss=" ".join(f"{k}={v:.3f}" for k, v in row.items() if k not in ("step", "lr")))
            progress.advance(task)
            if snapshot is not None and snapshot.due(step + 1, iterations):
                snapshot.save(training_state(step + 1, iterations, model, optimizer, extra_step, rows, sums, count))
    if log_path is not None and world.is_main:
        write_curve(log_path, rows)
    return {"seconds": round(time.perf_counter() - start, 1), "final": rows[-1], "rows": rows}


def timing_line(stage, steps, seconds):
    """The one line a training stage prints about its run time, e.g. ``train_source: 600 steps in 95.3 s``."""
    return f"{stage}: {steps} steps in {seconds:.1f} s"


def write_curve(path, rows):
    """The training curve as TSV (a DVC plot): one row per logging interval (no rows: a header only)."""
    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["step"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
            w.writeheader()
            w.writerows(rows)


def forward_pairs(model, images):
    """Segment a batch of frame pairs (B, 2, H, W, 3) uint8 in one pass -> logits (B, 2, C, H, W)."""
    b, n = images.shape[:2]
    logits = model(normalize(images.flatten(0, 1)))
    return logits.view(b, n, *logits.shape[1:])


def supervised_forward(model, batch):
    return {"logits": forward_pairs(model, batch["images"])}


def segmentation_loss(outputs, batch, weight=1.0):
    """Eq. 9, first term: cross-entropy summed over the two frames t - tau and t."""
    logits, labels = outputs["logits"], batch["labels"]
    return {"seg": weight * sum(cross_entropy_2d(logits[:, i], labels[:, i]) for i in range(logits.shape[1]))}
