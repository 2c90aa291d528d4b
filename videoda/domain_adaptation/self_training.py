"""Video self-training (VST, Sec. 4.4.2, Eq. 12-14): target frame pairs with online-refined pseudo labels.

The training itself is the shared loop (``train.train``) with these loss terms: the cross-entropy of Eq. 13
on both frames against the refined pseudo labels, a regulariser (IAST's entropy on ignored pixels or CRST's
confidence-regularising KLD on labelled pixels), and optionally the source cross-entropy (CBST/CRST-style).
"""

import contextlib
import dataclasses

import numpy as np
import torch

from videoda.data.classes import IGNORE_ID
from videoda.data.pairs import PairSampler
from videoda.domain_adaptation.losses import cross_entropy_2d, ignored_entropy_loss, kld_regulariser
from videoda.domain_adaptation.pseudo_labels import cutout_refine, fillin_refine, generate_pseudo_labels
from videoda.domain_adaptation.train import forward_pairs, segmentation_optimizer, train
from videoda.flow.warp import flow_to_tensor

REFINEMENTS = ("none", "cutout", "fillin")
REGULARISERS = ("none", "entropy", "kld")


def unlabelled_clips(clips):
    """The target clips with their ground truth dropped (every label IGNORE_ID, no frame annotated), so that
    nothing in self-training can train on it: VST is unsupervised."""
    return [dataclasses.replace(c, labels=np.full_like(c.labels, IGNORE_ID), labeled=np.zeros_like(c.labeled))
            for c in clips]


def refined_pair_labels(pseudo, store, refine, occ_alpha=2.0, occ_threshold=0.7):
    """``pair_labels`` for ``PairSampler``: a pair's pseudo labels, each frame refined against the other.

    Eq. 13 sums over both frames l = t, t - tau, so frame t is checked against the warped t - tau (flow
    F_{t -> t-tau}) and frame t - tau against the warped t (flow F_{t-tau -> t}).
    """
    def pair_labels(clip, t_ref, t):
        labels = torch.from_numpy(pseudo[clip.name][[t_ref, t]]).long()
        if refine == "none":
            return labels.numpy()
        flows = flow_to_tensor(np.stack([store.flow(clip.name, t_ref, t), store.flow(clip.name, t, t_ref)]))
        other = labels.flip(0)                   # each frame's reference: the other frame of the pair
        if refine == "cutout":
            out = cutout_refine(labels, other, flows)
        else:
            images = torch.from_numpy(clip.images[[t_ref, t]]).permute(0, 3, 1, 2)
            out = fillin_refine(labels, other, flows, images, images.flip(0), occ_alpha, occ_threshold)
        return out.numpy()
    return pair_labels


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


def self_train(model, clips, pseudo, store, cfg, source_clips=None, progress=lambda xs, **_: xs, compute=None):
    """VST (Sec. 4.4.2) with config ``cfg`` (``videoda.config.VST``): ``cfg.rounds`` rounds of training on target
    pairs (t - tau, t) with online-refined pseudo labels; round 1 uses ``pseudo`` ({clip: (T, H, W)}), each
    further round regenerates them with the current model and ``cfg.labels`` (the same generator). ``clips``
    must carry no ground truth. Trains on the model's device, under ``compute``'s autocast (``train``'s; the
    regenerated pseudo labels' predictions too). Returns the training curve's rows (step counted across rounds,
    with the round number).
    """
    device = next(model.parameters()).device
    train_cfg, occlusion = cfg.train, cfg.labels.occlusion
    source = (PairSampler(source_clips, cfg.tau, train_cfg.batch_size, cfg.seed + 1, require_label=True)
              if cfg.lambda_source > 0 else None)
    rows = []
    for r in range(cfg.rounds):
        if r > 0:
            with contextlib.nullcontext() if compute is None else compute.autocast():
                pseudo, _ = generate_pseudo_labels(model, clips, store, cfg.labels, progress=progress)
        target = PairSampler(clips, cfg.tau, train_cfg.batch_size, cfg.seed + 100 * r, hflip=train_cfg.hflip,
                             pair_labels=refined_pair_labels(pseudo, store, cfg.refine, occlusion.alpha,
                                                             occlusion.threshold))

        def sample_batch():
            batch = target.sample()
            if source is not None:
                s = source.sample()
                batch.update(source_images=s["images"], source_labels=s["labels"])
            return {k: v.to(device) for k, v in batch.items()}

        optimizer = segmentation_optimizer(model, train_cfg.optim)
        result = train(model, optimizer, sample_batch, vst_forward,
                       vst_losses(cfg.regulariser, cfg.lambda_reg, cfg.lambda_source), train_cfg.iterations, None,
                       power=train_cfg.optim.poly_power, description=f"vst round {r + 1}", compute=compute)
        rows += [{**row, "step": row["step"] + r * train_cfg.iterations, "round": r + 1} for row in result["rows"]]
    return rows
