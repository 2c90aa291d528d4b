"""Video self-training (VST, Sec. 4.4.2, Eq. 12-14): target frame pairs with online-refined pseudo labels.

The entry point is ``self_train``. The training itself is the shared loop (``train.train``) with these loss
terms: the cross-entropy of Eq. 13 on both frames against the refined pseudo labels, a regulariser (IAST's
entropy on ignored pixels or CRST's confidence-regularising KLD on labelled pixels), and optionally the source
cross-entropy (CBST/CRST-style). The target pairs stream through a ``PairLoader`` (``PseudoLabelPairs``: images,
pseudo labels and flows read a pair at a time); their online refinement (Eq. 12/14) runs on each whole batch on
the training device (``refine_pairs``). A later round's pseudo labels are made again with the current model
(``pseudo_labels.make_pseudo_labels``).
"""

import contextlib
import dataclasses
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from videoda.choices import REFINEMENTS
from videoda.data.classes import IGNORE_ID
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.losses import cross_entropy_2d, ignored_entropy_loss, kld_regulariser
from videoda.domain_adaptation.pseudo_labels import PseudoLabelFiles, cutout_refine, fillin_refine, make_pseudo_labels
from videoda.domain_adaptation.train import (Curve, Objective, forward_pairs, segmentation_optimizer, train,
                                             write_curve)
from videoda.flow.store import FlowStore
from videoda.flow.warp import flow_to_tensor
from videoda.utils.device import CPU
from videoda.utils.distributed import barrier
from videoda.utils.io import scratch_folder
from videoda.utils.shards import shared_folder

def unlabelled_clips(clips):
    """The target clips with their ground truth hidden (every label reads IGNORE_ID, no frame annotated), so
    that nothing in self-training can train on it: VST is unsupervised. Views, nothing is copied or read: the
    labels are a zero-stride broadcast of IGNORE_ID of the clip's label shape."""
    return [dataclasses.replace(c, labels=np.broadcast_to(np.uint8(IGNORE_ID), c.labels.shape),
                                labeled=np.zeros(np.shape(c.labeled), bool)) for c in clips]


@dataclass(frozen=True)
class VSTData:
    """What VST trains on: the target clips without their ground truth (``unlabelled_clips``), round 1's pseudo
    labels ``pseudo`` (``{clip name: frames}``: arrays (T, H, W) or ``PseudoLabelFiles``), the open ``FlowStore``
    of the clips' flows (its file is reopened by the loader's readers) and, for the source term, the source
    clips."""
    clips: list
    pseudo: object
    store: object
    source: list = None

    @classmethod
    def from_prepared(cls, root, pseudo_root, store, cfg):
        """Stage ``vst``'s data: the target-train clips under ``root`` without their ground truth, their pseudo
        labels (the PNGs under ``pseudo_root``, read a pair at a time), their flows (``store``, checked against
        every clip) and, when ``cfg.lambda_source`` > 0, the source clips."""
        clips = unlabelled_clips(load_split(root, "target_train"))
        pseudo = PseudoLabelFiles(pseudo_root, clips)
        for clip in clips:
            store.check_clip(clip.name, len(clip), *clip.images.shape[1:3])
        return cls(clips, pseudo, store, load_split(root, "source") if cfg.lambda_source > 0 else None)


class PseudoLabelPairs(PairDataset):
    """VST's target pairs (t - tau, t) of ``clips`` with their pseudo labels, for ``refine_pairs``.

    ``pseudo``: ``{clip name: frames}`` with ``frames[[a, b]]`` -> (2, H, W) (arrays, or ``PseudoLabelFiles``).
    Item ``(k, flip)``: uint8 ``images`` (2, H, W, 3), uint8 ``labels`` (2, H, W) (the pseudo labels), bool
    ``labeled`` (2,) and bool ``flip``, all *unflipped* (the refinement needs the frames as the flows see them),
    and for a refinement float32 ``flows`` (2, H, W, 2): F_{t-tau -> t} (frame t - tau's reference is frame t)
    and F_{t -> t-tau}, from the flow store at ``flow_path``. Each process that reads opens the store itself:
    an HDF5 handle must not cross a fork into the loader's workers.
    """

    def __init__(self, clips, tau, pseudo, refine, flow_path=None):
        super().__init__(clips, tau)
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
        if refine != "none" and flow_path is None:
            raise ValueError(f"refinement {refine!r} needs the flow store")
        self.pseudo, self.refine, self.flow_path = pseudo, refine, flow_path
        self.store, self.store_pid = None, None

    def flow_store(self):
        if self.store_pid != os.getpid():
            self.store, self.store_pid = FlowStore(self.flow_path), os.getpid()
        return self.store

    def __getstate__(self):       # pickled (spawned workers): the handle stays behind
        return {**self.__dict__, "store": None, "store_pid": None}

    def __getitem__(self, item):
        k, flip = item
        clip, frames = self.pair(k)
        t_ref, t = frames
        pair = {"images": np.ascontiguousarray(clip.images[frames]),
                "labels": np.ascontiguousarray(self.pseudo[clip.name][frames], np.uint8),
                "labeled": np.asarray(clip.labeled, bool)[frames], "flip": np.bool_(flip)}
        if self.refine != "none":
            store = self.flow_store()
            pair["flows"] = np.stack([store.flow(clip.name, t_ref, t), store.flow(clip.name, t, t_ref)])
        return pair

    def close(self):
        if self.store is not None and self.store_pid == os.getpid():
            self.store.close()
        self.store = self.store_pid = None


def refine_pairs(batch, refine, occ_alpha=2.0, occ_threshold=0.7):
    """A batch of ``PseudoLabelPairs`` -> the training batch: the pseudo labels of every pair refined, each
    frame against the other (Eq. 12 cut-out, Eq. 14 fill-in, or none), then images and labels flipped where
    ``flip``. Runs on the batch's device, the whole batch at once: every operation is per pixel, so on the CPU
    it gives the pair-by-pair refinement's labels bit for bit (tests/test_pair_loader.py).

    Eq. 13 sums over both frames l = t, t - tau, so frame t is checked against the warped t - tau (flow
    F_{t -> t-tau}) and frame t - tau against the warped t (flow F_{t-tau -> t}).
    """
    images, labels = batch["images"], batch["labels"].long()
    if refine != "none":
        flows = flow_to_tensor(batch["flows"].flatten(0, 1))           # (2B, 2, H, W)
        own, other = labels.flatten(0, 1), labels.flip(1).flatten(0, 1)  # each frame's reference: the other
        if refine == "cutout":
            refined = cutout_refine(own, other, flows)
        else:
            frames = images.flatten(0, 1).permute(0, 3, 1, 2)
            ref_frames = images.flip(1).flatten(0, 1).permute(0, 3, 1, 2)
            refined = fillin_refine(own, other, flows, frames, ref_frames, occ_alpha, occ_threshold)
        labels = refined.view_as(labels)
    flip = batch["flip"]
    return {"images": torch.where(flip[:, None, None, None, None], images.flip(3), images),
            "labels": torch.where(flip[:, None, None, None], labels.flip(3), labels),
            "labeled": batch["labeled"]}


class VSTBatches:
    """VST's training batches: ``refine_pairs`` of the target loader's batches (``images``, ``labels``,
    ``labeled``), with ``source_images``/``source_labels`` from ``source`` (a ``PairLoader``) when given."""

    def __init__(self, target, refine, occ_alpha, occ_threshold, source=None):
        self.target, self.source = target, source
        self.refine, self.occ_alpha, self.occ_threshold = refine, occ_alpha, occ_threshold

    def sample(self):
        batch = refine_pairs(self.target.sample(), self.refine, self.occ_alpha, self.occ_threshold)
        if self.source is not None:
            s = self.source.sample()
            batch.update(source_images=s["images"], source_labels=s["labels"])
        return batch

    def skip(self, n):
        self.target.skip(n)
        if self.source is not None:
            self.source.skip(n)


def vst_forward(model, batch):
    outputs = {"logits": forward_pairs(model, batch["images"])}
    if "source_images" in batch:
        outputs["source_logits"] = forward_pairs(model, batch["source_images"])
    return outputs


def vst_losses(regulariser, lambda_reg, lambda_source):
    """The loss terms of Eq. 13 (+ the optional source cross-entropy of Eq. 5)."""
    def target_terms(outputs, batch):
        logits, labels = outputs["logits"], batch["labels"]
        frames = range(logits.shape[1])
        losses = {"seg_t": sum(cross_entropy_2d(logits[:, i], labels[:, i]) for i in frames)}
        if regulariser == "entropy":
            losses["reg"] = lambda_reg * sum(ignored_entropy_loss(logits[:, i], labels[:, i]) for i in frames)
        elif regulariser == "kld":
            losses["reg"] = lambda_reg * sum(kld_regulariser(logits[:, i], labels[:, i]) for i in frames)
        return losses

    def source_term(outputs, batch):
        logits, labels = outputs["source_logits"], batch["source_labels"]
        return {"seg_s": lambda_source * sum(cross_entropy_2d(logits[:, i], labels[:, i])
                                             for i in range(logits.shape[1]))}

    return [target_terms] + ([source_term] if lambda_source > 0 else [])


def regenerate_pseudo_labels(model, clips, store, cfg, folder, compute=CPU):
    """A later VST round's pseudo labels from the current model (``make_pseudo_labels`` with generator ``cfg``):
    written clip by clip as label PNGs under ``folder`` (as stage ``pseudo_labels`` writes them), read back a
    pair at a time (``PseudoLabelFiles``), so no round holds the whole split's labels in memory. PNGs are
    lossless: the labels are the generated ones.

    Several processes (``compute.world``; ``folder`` the same path on every rank, on a filesystem they all see):
    each rank predicts the clips it owns, rank 0 thresholds them in the clips' order (Algorithm 1's EMA) and
    writes the PNGs, and every rank returns once they are written. ``model``: the module itself, or its
    ``DistributedDataParallel`` wrapper (unwrapped here: the ranks predict different clips, and the wrapper's
    forward would synchronise buffers across them)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    make_pseudo_labels(model, clips, store, cfg, folder, compute)
    barrier(compute.world)                     # the other ranks read the PNGs rank 0 wrote
    return PseudoLabelFiles(folder, clips)


def round_folder(scratch):
    """What makes a later round's label folder: a ``scratch_folder`` next to ``scratch`` (the stage's output: a
    folder every rank sees, removed by the next run if this one is killed), or one in the system's temporary
    folder without it (one process)."""
    if scratch is None:
        return lambda: tempfile.TemporaryDirectory(prefix="vst-round-")
    return lambda: scratch_folder(scratch)


def self_train(model, data, cfg, compute=CPU, snapshot=None, scratch=None, validation=None):
    """VST (Sec. 4.4.2) with config ``cfg`` (``videoda.config.VST``) on ``data`` (``VSTData``): ``cfg.rounds``
    rounds of training on target pairs (t - tau, t) with online-refined pseudo labels; round 1 uses
    ``data.pseudo``, each further round regenerates them with the current model and ``cfg.labels`` (the same
    generator). Pairs are read by ``compute.workers`` processes; training and the refinement run on
    ``compute``'s device (the model must be there), under its autocast (the regenerated pseudo labels'
    predictions too). Returns the training curve's rows (step counted across rounds, with the round number).
    ``validation`` (``validation.Validator``; None: none): each round scored when due, its rows (steps counted
    across rounds, with the round) written to ``validation.path`` by rank 0 at the end and kept in the snapshots.

    ``snapshot`` (``snapshot.Snapshot``): saved during every round with the round, the rows of the rounds before
    and, after round 1, the weights the round's pseudo labels were generated from; a run resumed from it
    regenerates them from those weights (deterministic) instead of storing every label map.

    Several processes (``compute.world``): each rank trains on its own batches (DistributedDataParallel,
    ``train``) and a later round's labels are generated sharded (``regenerate_pseudo_labels``) into a folder
    next to ``scratch`` (the stage's output), which every rank reads; without ``scratch``, the system's temporary
    folder (one process only).
    """
    train_cfg, occlusion, world = cfg.train, cfg.labels.occlusion, compute.world
    resume = snapshot.load() if snapshot is not None else None      # ``train`` takes it in the round it was in
    first_round, rows = (resume["context"]["round"] - 1, resume["context"]["rows"]) if resume is not None else (0, [])
    scored = resume["context"].get("validation", []) if resume is not None else []     # the rounds before's
    objective = Objective(vst_forward, tuple(vst_losses(cfg.regulariser, cfg.lambda_reg, cfg.lambda_source)))
    source = (PairLoader(PairDataset(data.source, cfg.tau, require_label=True), train_cfg.batch_size,
                         cfg.seed + 1, compute=compute)       # each training process draws its own batches
              if cfg.lambda_source > 0 else None)
    if source is not None:
        source.skip(first_round * train_cfg.iterations)      # the source stream runs on across rounds
    pseudo = data.pseudo
    for r in range(first_round, cfg.rounds):
        context = {"round": r + 1, "rows": rows, "validation": scored}          # counted from 1, as in the curve
        round_files = contextlib.ExitStack()
        if r > 0:
            if resume is not None and r == first_round:
                model.load_state_dict(resume["context"]["round_start"])
            if snapshot is not None and snapshot.every > 0:
                context["round_start"] = {k: v.clone() for k, v in model.state_dict().items()}
            folder = round_files.enter_context(shared_folder(round_folder(scratch), world)) / "labels"
            pseudo = regenerate_pseudo_labels(model, data.clips, data.store, cfg.labels, folder, compute)
        pairs = PseudoLabelPairs(data.clips, cfg.tau, pseudo, cfg.refine,
                                 data.store.path if cfg.refine != "none" else None)
        with PairLoader(pairs, train_cfg.batch_size, cfg.seed + 100 * r, train_cfg.hflip, compute) as target:
            batches = VSTBatches(target, cfg.refine, occlusion.alpha, occlusion.occlusion_threshold, source)
            optimizer = segmentation_optimizer(model, train_cfg.optim)
            if snapshot is not None:
                snapshot.context = context
            curve = Curve(None, f"vst round {r + 1}", validation=validation and validation.for_round())
            result = train(model, optimizer, batches, objective, train_cfg, curve, snapshot, compute)
        pairs.close()
        barrier(world)      # every rank's loader is done with the round's labels before rank 0 removes them
        round_files.close()
        rows = rows + [{**row, "step": row["step"] + r * train_cfg.iterations, "round": r + 1}
                       for row in result["rows"]]      # a new list: the snapshots' context keeps the old one
        scored = scored + [{**row, "step": row["step"] + r * train_cfg.iterations, "round": r + 1}
                           for row in result["validation"]]
    if source is not None:
        source.close()
    if validation is not None and validation.path is not None and world.is_main:
        write_curve(validation.path, scored)
    return rows
