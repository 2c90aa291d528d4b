"""What the tests share (a helper module, not a test file): the tiny benchmark's params, a stage run as `dvc repro`
runs it (its own process) or in the test's process, what a stage wrote, and small synthetic clips."""

import copy
import dataclasses
import functools
import random
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml

from videoda.config.compose import check_params, compose_params
from videoda.config.fields import read_params, with_overrides
from videoda.config.stages import stage_config, write_resolved
from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.data.clips import Clip
from videoda.domain_adaptation.snapshot import Snapshot
from videoda.domain_adaptation.train import seed_everything
from videoda.model import DeepLabV2
from videoda.flow.store import FlowWriter, stored_pairs
from videoda.model.build import build_model

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


# --- params ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _composed(overrides):
    return compose_params(list(overrides), CONF)


def composed(*overrides):
    """params.yaml composed from conf/ with ``overrides`` (e.g. ``method=source_only``): a fresh copy of a
    composition made once per process (Hydra's compose takes a fraction of a second)."""
    return copy.deepcopy(_composed(overrides))


def tiny_params(*overrides):
    """params.yaml composed with ``overrides``, at the tiny benchmark's size: synth 24 x 48, 2 source sequences,
    3 target clips per split (two ranks shard them unevenly), prepared at 32 x 64 (VAT's discriminators need 32
    pixels a side), 3 training steps."""
    params = composed(*overrides)
    params["synth"].update(height=24, width=48, frames_per_clip=10, source_sequences=2, target_train_clips=3,
                           target_val_clips=3)
    for side in ("source", "target"):
        params["prepare"][side].update(height=32, width=64)
    for s in ("train_source", "train_oracle"):
        params[s].update(iterations=3, batch_size=2)
    params["evaluate"]["strip_rows"] = 2
    return params


def write_params(cwd, params, check=True):
    """params.yaml and what stage resolve_params makes of it, ``data/params/<stage>.json``, through the library
    it runs: ``check_params`` then ``write_resolved``. ``check=False`` writes the values unchecked (the class
    set by name), for a test of a stage's own check of its file (as under `dvc repro` after a hand-edited one)."""
    cwd = Path(cwd)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    write_resolved(check_params(params, conf_dir=CONF) if check else params, cwd / "data/params")


# --- stages ------------------------------------------------------------------------------------------------

def stage(cwd, *args, **kwargs):
    """``stages/<args[0]>`` with ``args[1:]`` in its own process in ``cwd``, as `dvc repro` runs it."""
    return subprocess.run([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=cwd,
                          capture_output=True, text=True, **kwargs)


def in_process(cwd, script, *args):
    """``stages/<script>`` with ``args`` run in this process in ``cwd`` (no interpreter start-up): its exit code
    (what it printed goes to pytest's capture: ``capsys``). The process state a stage sets (threads,
    deterministic mode, the global generators, the working folder) is restored after."""
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    generators = torch.get_rng_state(), np.random.get_state(), random.getstate()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(sys, "argv", [script, *map(str, args)])
        try:
            runpy.run_path(str(REPO / "stages" / script), run_name="__main__")
            return 0
        except SystemExit as e:
            return e.code
        finally:
            torch.set_num_threads(threads)
            cv2.setNumThreads(cv2_threads)
            torch.use_deterministic_algorithms(deterministic)
            torch.set_rng_state(generators[0])
            np.random.set_state(generators[1])
            random.setstate(generators[2])


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def fails_cleanly(result, *names):
    """A stage's process that stopped at a bad input: exit code 2, one ``error: ...`` line on stderr naming each
    of ``names``, no traceback. Returns the line."""
    assert result.returncode == 2, result.stderr
    return one_error_line(result.stderr, *names)


def one_error_line(stderr, *names):
    """The one ``error: ...`` line of ``stderr`` (a stage's, captured), naming each of ``names``."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def written_files(root):
    """The files under ``root`` besides the params (params.yaml, data/params/)."""
    return [p for p in Path(root).rglob("*")
            if p.is_file() and p.name != "params.yaml" and "params" not in p.relative_to(root).parts[:2]]


def synth_and_prepare(cwd, params=None):
    """The tiny benchmark generated and prepared in ``cwd`` (stages synth and prepare, in this process)."""
    write_params(cwd, params or tiny_params())
    assert in_process(cwd, "synth.py", "--out", "data/synth") == 0
    assert in_process(cwd, "prepare.py", "--out", "data/prepared") == 0
    return Path(cwd)


def link(cwd, source, *paths):
    """``cwd/<path>`` a symbolic link to ``source/<path>`` for each of ``paths``: a stage's working folder that
    reads the shared benchmark (read only) and writes its own outputs."""
    for path in paths:
        (Path(cwd) / path).parent.mkdir(parents=True, exist_ok=True)
        (Path(cwd) / path).symlink_to(Path(source) / path)
    return Path(cwd)


def dataset_settings(dataset, root, size, **settings):
    """A dataset's prepare settings, as ``videoda.config.SourceDataset`` holds them (VIPER: every sequence, its ego
    vehicle void)."""
    defaults = dict(dataset=dataset, root=root, height=size[0], width=size[1], ignore_ego_vehicle=True,
                    conditions=None, sequences=None)
    return SimpleNamespace(**{**defaults, **settings})


# --- small synthetic clips ---------------------------------------------------------------------------------

def clips(n=3, frames=4, h=16, w=32, seed=0, name="c"):
    """``n`` clips of random frames, every frame labelled with random classes."""
    rng = np.random.default_rng(seed)
    return [Clip(f"{name}{i}", rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8),
                 rng.integers(0, NUM_CLASSES, (frames, h, w)).astype(np.uint8), np.ones(frames, bool),
                 np.array([f"{name}{i}_{t}" for t in range(frames)])) for i in range(n)]


PAN_H, PAN_W, PAN_T = 16, 32, 5


def panning_clips(rng, n=3):
    """``n`` clips of a pan (frames shift by a pixel) of random texture, frames 0, 2, 4 annotated (their top rows
    void)."""
    out = []
    for i in range(n):
        base = rng.integers(0, 256, (PAN_H, PAN_W + PAN_T, 3), dtype=np.uint8)
        images = np.stack([base[:, t:t + PAN_W] for t in range(PAN_T)])     # a pan: frames shift by a pixel
        labels = np.full((PAN_T, PAN_H, PAN_W), IGNORE_ID, np.uint8)
        labeled = np.zeros(PAN_T, bool)
        for t in (0, 2, 4):
            labels[t] = rng.integers(0, NUM_CLASSES, (PAN_H, PAN_W))
            labels[t, :3] = IGNORE_ID
            labeled[t] = True
        out.append(Clip(f"clip{i}", images, labels, labeled,
                        np.array([f"clip{i}_{t:03d}" for t in range(PAN_T)])))
    return out


def write_pan_flows(path, clips, rng):
    """A flow store of ``clips``: the pan's exact flow, with noise in the upper half (occlusions)."""
    with FlowWriter(path, [1], PAN_H, PAN_W, "test") as writer:
        for c in clips:
            flows = {}
            for a, b in stored_pairs(PAN_T, [1]):
                f = np.zeros((PAN_H, PAN_W, 2), np.float32)
                f[..., 0] = b - a                                         # the pan's exact flow
                f[: PAN_H // 2, :, 1] = rng.normal(0, 0.7, (PAN_H // 2, PAN_W))   # and some noise: occlusions
                flows[a, b] = f
            writer.add_clip(c.name, PAN_T, flows)


def sharp_model(params):
    """The params' model, initialised from seed 0, weights x3: sharper softmax maps than a fresh head gives, so
    varied labels."""
    torch.manual_seed(0)
    model = build_model(stage_config("train_source", params).model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def schedule(iterations, power=0.9):
    """A phase's training settings as ``train`` reads them (``videoda.config.Training``: steps, poly power)."""
    return SimpleNamespace(iterations=iterations, loss_limit=0, optim=SimpleNamespace(poly_power=power))


# --- a training run stopped as a kill would stop it ----------------------------------------------------------

class Killed(Exception):
    pass


class KilledAfter(Snapshot):
    """A snapshot that stops the run (as a kill would) right after it saves step ``step`` of round ``round``."""

    def __init__(self, path, key, every, step, round=1):
        super().__init__(path, key, every)
        self.kill_step, self.kill_round = step, round

    def save(self, state):
        super().save(state)
        if state["step"] == self.kill_step and self.context.get("round", 1) == self.kill_round:
            raise Killed()


def tiny_vst(**overrides):
    """Two VST rounds of 4 steps (batch 1, IAST labels, no refinement, snapshots every 2 steps; ``overrides``: other
    ``vst`` keys) on tiny clips: (its config, a tiny model seeded 0, target clips without labels, their random
    pseudo labels)."""
    params = with_overrides(read_params(REPO / "params.yaml"), {
        "vst.rounds": 2, "vst.iterations": 4, "vst.batch_size": 1, "vst.refine": "none", "vst.pseudo_label": "iast",
        "vst.snapshot_every": 2, **{f"vst.{k}": v for k, v in overrides.items()}})
    cfg = stage_config("vst", params)
    cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, batch_size=4))
    seed_everything(0)
    model = DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,))
    target = [dataclasses.replace(c, labels=np.full_like(c.labels, IGNORE_ID), labeled=np.zeros_like(c.labeled))
              for c in clips(seed=3, name="t")]
    pseudo = {c.name: np.random.default_rng(5).integers(0, NUM_CLASSES, c.labels.shape).astype(np.uint8)
              for c in target}
    return cfg, model, target, pseudo
