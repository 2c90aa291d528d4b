"""Resumable training: a snapshot of a training run every N steps, from which a killed stage resumes exactly.

A snapshot holds everything the next step depends on: the step, the model, the optimiser, the discriminator and
its optimiser (an ``extra_step`` with ``state_dict``, VAT), the RNG states (torch CPU and CUDA generators, numpy's
and Python's global ones), the curve rows so far with the partial sums of the open logging window, and the
caller's ``context`` (VST: its round). The batch stream's position is the step: on resume the loop calls
``batches.skip(step)``. The poly learning rate is recomputed from the step, so it needs no state.

Where: ``<output's folder>/.snapshots/<stage>/snapshot.pt`` (``models/.snapshots/<stage>/`` under DVC;
``videoda.utils.resume.stage_folder``). DVC deletes a stage's declared outputs before it runs it, never other
files, so the snapshot survives the rerun that resumes from it; the stage removes it once its outputs are written.
Written atomically (temporary name, then rename), so a kill while writing leaves the previous snapshot whole.

Key: ``videoda.utils.resume.run_key`` over the stage's name, params, code, the checkpoint it starts from and its
data inputs (the same key as the per-clip work of the inference stages). A snapshot whose key differs, or that
cannot be read (truncated), is reported in one line and ignored: the stage starts from step 0.

Several processes (DistributedDataParallel): every rank holds the same weights and optimiser state, so rank 0
saves them, with every rank's RNG states (gathered) and the world size. The stages key it by their params
without the process layout (``compute.nproc_per_node``, ``nnodes``, ``rdzv_endpoint``; ``run_params``): a
snapshot of the same run taken with another number of processes is recognised, and refused with a ParamError
(each rank draws its own sample stream, so a run cannot change its number of processes midway); another endpoint
or split of the same number over nodes resumes. Rank 0 reads the snapshot and sends it to the others (no shared
filesystem needed for it).
"""

import random
import sys
from pathlib import Path

import numpy as np
import torch

from videoda.errors import ParamError
from videoda.utils.device import CPU
from videoda.utils.distributed import broadcast_object, gather_objects
from videoda.utils.io import atomic_path, remove_stale_temps
from videoda.utils.resume import run_key, stage_folder

FORMAT = 1                 # the layout of a snapshot's dict; another layout is never resumed
REQUIRED = {"format", "key", "step", "iterations", "model", "optimizer", "rng", "rows", "sums", "count", "context"}


def snapshot_path(out, stage):
    """Where stage ``stage`` whose output is ``out`` keeps its snapshot."""
    return stage_folder(out, stage) / "snapshot.pt"


def rng_state():
    """Every global generator a training step may draw from, in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


class Snapshot:
    """A training run's snapshot file ``path`` with key ``key``, taken every ``every`` steps (0: never).

    ``context``: what the caller saves with every snapshot besides the loop's state (a dict of tensors, numbers,
    strings, lists, dicts). ``compute.world`` (``compute``: a ``videoda.utils.device.Runtime``): the training
    processes; ``save`` and ``load`` are then collective (every rank calls them), and only rank 0 touches the file.
    ``resume``: the state ``load`` read, where the next training run on this snapshot continues from (``train``
    takes it: ``take_resume``).
    """

    def __init__(self, path, key, every, compute=CPU):
        if every < 0:
            raise ValueError(f"snapshot every {every} steps: must be >= 0")
        self.path, self.key, self.every, self.world = Path(path), key, every, compute.world
        self.context, self.resume = {}, None

    @classmethod
    def for_stage(cls, stage, out, every, params, script=None, init=None, data=(), compute=CPU):
        """The snapshot of stage ``stage`` writing ``out``, keyed by its inputs (``videoda.utils.resume.run_key``)."""
        files = () if init is None else (init,)
        return cls(snapshot_path(out, stage), run_key(stage, params, script, files, data), every, compute)

    def due(self, steps_done, iterations):
        """Whether to snapshot after ``steps_done`` steps: every ``every``, never at the end (the outputs are)."""
        return self.every > 0 and steps_done % self.every == 0 and steps_done < iterations

    def save(self, state):
        if self.world.distributed:     # each rank's generators, gathered before rank 0 writes
            state = {**state, "world_size": self.world.size, "rank_rng": gather_objects(state["rng"], self.world)}
        if not self.world.is_main:
            return
        state = {**state, "format": FORMAT, "key": self.key, "context": self.context}
        # torch.save straight to the temporary file: no second copy of the state in memory.
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self):
        """The saved state if the file is a whole snapshot of this run (on every rank, with ``rng`` its own);
        else None, after one line saying why. A snapshot of this run taken with another number of processes is
        a ParamError."""
        state = broadcast_object(self._read() if self.world.is_main else None, self.world)
        if isinstance(state, ParamError):
            raise state
        if state is not None and self.world.distributed:
            state = {**state, "rng": state["rank_rng"][self.world.rank]}
        self.resume = state
        return state

    def take_resume(self):
        """The state the last ``load`` read (None: none), once: the training run that resumes from it takes it."""
        state, self.resume = self.resume, None
        return state

    def _read(self):
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:       # truncated, overwritten, not a torch file: torch raises many kinds
            return self._ignore(f"is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        if not isinstance(state, dict) or state.get("format") != FORMAT or not REQUIRED <= set(state):
            return self._ignore("is not a training snapshot of this version")
        if state["key"] != self.key:
            return self._ignore("is from another run (its params, code or inputs differ)")
        if state.get("world_size", 1) != self.world.size:
            n = state.get("world_size", 1)
            return ParamError(f"snapshot {self.path} was taken by {n} training process{'es' * (n > 1)} and this "
                              f"run has {self.world.size} (params.yaml: compute.nproc_per_node x nnodes): each "
                              f"process draws its own batches, so a run cannot resume with another number; run "
                              f"it with {n}, or delete the snapshot to start from step 0")
        where = ", ".join(f"{k} {v}" for k, v in state["context"].items() if isinstance(v, int))
        print(f"snapshot {self.path}: resuming at step {state['step']}" + (f" ({where})" if where else ""))
        return state

    def _ignore(self, why):
        print(f"warning: snapshot {self.path} {why}: ignored, training starts from step 0", file=sys.stderr)
        return None

    def remove(self):
        """Delete the snapshot (the stage's outputs are written), a killed writer's temporary folder, and the
        folders left empty (rank 0's job)."""
        if not self.world.is_main:
            return
        self.path.unlink(missing_ok=True)
        remove_stale_temps(self.path)
        for folder in (self.path.parent, self.path.parent.parent):
            try:
                folder.rmdir()
            except OSError:          # not empty (another stage's snapshot) or already gone
                break


def training_state(steps_done, iterations, model, optimizer, extra_step, log):
    """The training loop's state after ``steps_done`` steps (``Snapshot.save``'s argument); ``log``: its curve so
    far, ``{"rows", "sums", "count"}`` (the rows and the open logging window's sums and step count)."""
    state = {"step": steps_done, "iterations": iterations, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": rng_state(), **log}
    if hasattr(extra_step, "state_dict"):
        state["extra_step"] = extra_step.state_dict()
    return state


def restore_training_state(state, iterations, model, optimizer, extra_step, batches):
    """Put the loop back where ``state`` was taken: weights, optimisers, RNGs and the batch stream; returns
    (steps done, rows, sums, count). Call after the model, optimisers and batch source are built, so that the
    RNG states drawn while building them are overwritten by the snapshot's."""
    step = state["step"]
    if state["iterations"] != iterations or not 0 < step < iterations:
        raise ValueError(f"snapshot: step {step} of {state['iterations']} does not fit a run of {iterations} steps")
    if hasattr(extra_step, "load_state_dict") != ("extra_step" in state):
        raise ValueError("snapshot: its discriminator state does not match this run's")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if "extra_step" in state:
        extra_step.load_state_dict(state["extra_step"])
    set_rng_state(state["rng"])
    batches.skip(step)
    return step, state["rows"], state["sums"], state["count"]
