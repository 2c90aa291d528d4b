"""One training loop for every method; what differs between methods is the ``Objective`` plugged in.

Each step draws a batch (a dict), runs ``forward(model, batch) -> outputs`` once, and asks every *loss term*
``term(outputs, batch) -> {name: scalar tensor}``; the loop sums the terms' losses, back-propagates, steps,
and logs each named loss.  Methods with a discriminator add an ``extra_step``,
called after the segmentation step (the alternating optimisation of AdaptSegNet/ADVENT).
"""

import csv
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from videoda.choices import OPTIMIZERS
from videoda.domain_adaptation.losses import cross_entropy_2d
from videoda.domain_adaptation.snapshot import restore_training_state, training_state
from videoda.domain_adaptation.validation import Validator, validation_path
from videoda.errors import Diverged
from videoda.model import load_checkpoint, normalize, save_checkpoint
from videoda.utils.device import CPU, set_deterministic
from videoda.utils.distributed import data_parallel, mean_over_ranks
from videoda.utils.io import atomic_path


def seed_everything(seed, compute=CPU):
    """Seed torch (every device) and numpy; deterministic kernels for the type of ``compute``'s device
    (``set_deterministic``)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    set_deterministic(compute.device)


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


@dataclass(frozen=True)
class Objective:
    """What a method trains, plugged into ``train``: ``forward(model, batch) -> outputs`` once per step, the loss
    ``terms`` (each ``term(outputs, batch) -> {name: loss}``; summed and back-propagated) and ``extra_step(outputs,
    batch, step) -> {name: loss}`` after the segmentation step (a discriminator's alternating update; None:
    none)."""
    forward: Callable
    terms: tuple
    extra_step: Optional[Callable] = None


@dataclass(frozen=True)
class Curve:
    """The training curve of a run: a row of the mean losses every ``every`` steps (and at the last), written as
    TSV to ``path`` (None: kept in memory only), and the run's ``name`` on its progress bar. ``validation`` (a
    ``validation.Validator``; None: none): the model scored on the target-val clips when it is due, its rows
    written as TSV to its ``path``."""
    path: object = None
    name: str = "train"
    every: int = 10
    validation: object = None

    @classmethod
    def for_stage(cls, path, name, validation, data_root):
        """A training stage's curve: TSV ``path``, ``name`` on the progress bar, and its validation
        (``Validator.for_stage``: the ``Validation`` config ``validation``, the target-val clips under ``data_root``
        when it validates, its TSV ``validation.validation_path(path)``, written even when it does not: no rows)."""
        return cls(path, name, validation=Validator.for_stage(validation, data_root, path))


def train(model, optimizer, batches, objective, cfg, curve=Curve(), snapshot=None, compute=CPU):
    """Run ``cfg.iterations`` steps of ``objective`` (an ``Objective``) on DeepLab's poly schedule with power
    ``cfg.optim.poly_power`` (``cfg``: a phase's training settings, ``videoda.config.Training``); log the ``curve``
    (a ``Curve``: step, lr and every loss).

    ``batches``: the batch stream, ``.sample()`` the next batch, ``.skip(n)`` advance it by n batches unloaded.
    ``snapshot`` (a ``snapshot.Snapshot``): saved every ``snapshot.every`` steps; a state it loaded
    (``Snapshot.load``) is where the run continues from (``snapshot.restore_training_state``; taken, so a later
    run starts afresh). A resumed run ends exactly as an uninterrupted one: saving draws no random number and
    changes no float operation.
    ``compute`` (``videoda.utils.device.Runtime``, with ``model`` already on its device): each batch is moved to
    its device and the forward pass and the losses run under its autocast (backward outside it, as torch
    advises).

    Several processes (``compute.world``): ``forward`` gets ``model`` wrapped in DistributedDataParallel, so each
    backward averages the gradients over the ranks and every rank holds the same weights after every step; each
    rank's ``batches`` is its own stream (the global batch is the ranks' batches together). The logged losses
    are averaged over the ranks; only rank 0 shows progress (in a stage), writes the curve and the snapshots.

    ``curve.validation``: scored after the step (before its snapshot, which keeps the rows so far, so a resumed
    run's validation curve is an uninterrupted one's); scoring changes no weight and draws no random number.

    Returns ``{"seconds", "final", "rows", "validation"}`` (the validation rows). The seconds are for the caller
    to print, never to write into an output: a DVC-tracked file must not change when only the run time does.
    """
    iterations, extra_step, world = cfg.iterations, objective.extra_step, compute.world
    model.train()
    rows, sums, count, first, scored = [], {}, 0, 0, []
    resume = snapshot.take_resume() if snapshot is not None else None
    if resume is not None:
        first, rows, sums, count = restore_training_state(resume, iterations, model, optimizer, extra_step, batches)
        scored = list(resume.get("validation", []))
    validation = curve.validation
    kept = (first, snapshot.path) if resume is not None else None     # this run's last snapshot: (step, file)
    # wrapped after restoring: DDP broadcasts rank 0's weights when it wraps, the restored ones
    net = data_parallel(model, compute)
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False, disable=not compute.shows_progress) as progress:
        task = progress.add_task(curve.name, total=iterations, loss="", completed=first)
        for step in range(first, iterations):
            poly_lr_(optimizer, step, iterations, cfg.optim.poly_power)
            batch = compute.batch(batches.sample())
            with compute.autocast():
                outputs = objective.forward(net, batch)
                losses = {}
                for term in objective.terms:
                    losses.update(term(outputs, batch))
                total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            terms = list(losses)         # the segmentation network's terms; the discriminator's follow
            if extra_step is not None:
                losses.update(extra_step(outputs, batch, step))
            values = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in losses.items()}
            means = mean_over_ranks(values, world)
            # the ranks' means: every rank stops at the same step (a rank's inf makes the mean inf)
            check_losses(means, terms, step + 1, cfg.loss_limit, curve.name, kept)
            for k, v in means.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if (step + 1) % curve.every == 0 or step + 1 == iterations:
                row = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"]}
                row.update({k: s / count for k, s in sums.items()})
                rows.append(row)
                sums, count = {}, 0
                progress.update(task, loss=" ".join(f"{k}={v:.3f}" for k, v in row.items() if k not in ("step", "lr")))
            progress.advance(task)
            if validation is not None and validation.due(step + 1, iterations):
                scored = scored + [validation.score(model, step + 1, compute)]
            if snapshot is not None and snapshot.due(step + 1, iterations):
                log = {"rows": rows, "sums": sums, "count": count, "validation": scored}
                snapshot.save(training_state(step + 1, iterations, model, optimizer, extra_step, log))
                kept = (step + 1, snapshot.path)
    if curve.path is not None and world.is_main:
        write_curve(curve.path, rows)
    if validation is not None and validation.path is not None and world.is_main:
        write_curve(validation.path, scored)
    return {"seconds": round(time.perf_counter() - start, 1), "final": rows[-1], "rows": rows, "validation": scored}


def check_losses(values, terms, step, limit, stage, kept=None):
    """Stop a run whose loss diverged (``Diverged``, one line): a non-finite loss ``values`` entry (floats, every
    term's, the discriminator's too), or, with ``limit`` > 0, a total of the ``terms`` over ``limit``. Runs on the
    floats the loop logs anyway: no device sync of its own. Raised before the step's snapshot, so the run's last
    one, ``kept`` ((step, path); None: none), is finite."""
    bad = next((k for k, v in values.items() if not math.isfinite(v)), None)
    total = sum(values[k] for k in terms)
    if bad is None and not (limit > 0 and total > limit):
        return
    what = (f"loss term {bad} = {values[bad]} (non-finite)" if bad is not None
            else f"total loss {total:.4g} > loss_limit {limit:g}")
    raise Diverged(f"{stage}: step {step}: {what}; "
                   + (f"the last finite snapshot (step {kept[0]}) is kept: {kept[1]}" if kept else
                      "no snapshot was taken in this run")
                   + "; nothing written (lower the lr, or check the inputs)")


def skip_phase(stage, init, out, curve_path):
    """Stage ``stage`` of a method without that training phase (``conf/method/``): the checkpoint ``init`` written
    as its output ``out`` (marked ``enabled: False``) and a curve and a validation curve without rows."""
    model, _ = load_checkpoint(init)
    write_curve(curve_path, [])
    write_curve(validation_path(curve_path), [])
    save_checkpoint(out, model, {"stage": stage, "enabled": False, "init": str(init)})


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


SUPERVISED = Objective(supervised_forward, (segmentation_loss,))     # stages train_source and train_oracle
