"""Video self-training (VST, Sec. 4.4.2, Eq. 12-14): target frame pairs with online-refined pseudo labels.

The training itself is the shared loop (``train.train``) with these loss terms: the cross-entropy of Eq. 13
on both frames against the refined pseudo labels, a regulariser (IAST's entropy on ignored pixels or CRST's
confidence-regularising KLD on labelled pixels), and optionally the source cross-entropy (CBST/CRST-style).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from videoda.data.classes import IGNORE_ID
from videoda.data.pairs import PairSampler
from videoda.domain_adaptation.losses import cross_entropy_2d, ignored_entropy_loss, kld_regulariser
from videoda.domain_adaptation.pseudo_labels import cutout_refine, fillin_refine, generate_pseudo_labels
from videoda.domain_adaptation.train import forward_pairs, make_optimizer, train
from videoda.flow.warp import flow_to_tensor
from videoda.params import Section

REFINEMENTS = ("none", "cutout", "fillin")
REGULARISERS = ("none", "entropy", "kld")


@dataclass
class VSTConfig:
    """The training half of VST (params ``vst``; the pair distance is ``flow.tau``), built by ``vst_config``."""
    tau: int
    refine: str
    regulariser: str
    lambda_reg: float
    lambda_source: float
    rounds: int
    iterations: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    poly_power: float
    hflip: bool


def vst_config(params):
    """VSTConfig from params.yaml, every key checked (a bad value names its key)."""
    p, f = Section(params, "vst"), Section(params, "flow")
    return VSTConfig(
        tau=f.int("tau", lo=1), refine=p.choice("refine", REFINEMENTS), regulariser=p.choice("regulariser", REGULARISERS),
        lambda_reg=p.float("lambda_reg", lo=0.0), lambda_source=p.float("lambda_source", lo=0.0),
        rounds=p.int("rounds", lo=1), iterations=p.int("iterations", lo=1), batch_size=p.int("batch_size", lo=1),
        optimizer=p.choice("optimizer", ["sgd", "adam"]), lr=p.float("lr", lo=0.0),
        momentum=p.float("momentum", lo=0.0, hi=1.0), weight_decay=p.float("weight_decay", lo=0.0),
        poly_power=p.float("poly_power", lo=0.0), hflip=p.bool("hflip"))


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


def self_train(model, clips, pseudo, store, cfg, label_cfg, seed, source_clips=None, progress=lambda xs, **_: xs):
    """VST (Sec. 4.4.2): ``cfg.rounds`` rounds of training on target pairs (t - tau, t) with online-refined pseudo
    labels; round 1 uses ``pseudo`` ({clip: (T, H, W)}), each further round regenerates them with the current
    model and ``label_cfg`` (the same generator). ``clips`` must carry no ground truth. Trains on the model's
    device. Returns the training curve's rows (step counted across rounds, with the round number).
    """
    device = next(model.parameters()).device
    source = (PairSampler(source_clips, cfg.tau, cfg.batch_size, seed + 1)
              if cfg.lambda_source > 0 else None)
    rows = []
    for r in range(cfg.rounds):
        if r > 0:
            pseudo, _ = generate_pseudo_labels(model, clips, store, label_cfg, progress=progress)
        target = PairSampler(clips, cfg.tau, cfg.batch_size, seed + 100 * r, hflip=cfg.hflip,
                             pair_labels=refined_pair_labels(pseudo, store, cfg.refine, label_cfg.occ_alpha,
                                                             label_cfg.occ_threshold))

        def sample_batch():
            batch = target.sample()
            if source is not None:
                s = source.sample()
                batch.update(source_images=s["images"], source_labels=s["labels"])
            return {k: v.to(device) for k, v in batch.items()}

        optimizer = make_optimizer(model.param_groups(cfg.lr), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        result = train(model, optimizer, sample_batch, vst_forward,
                       vst_losses(cfg.regulariser, cfg.lambda_reg, cfg.lambda_source), cfg.iterations, None,
                       power=cfg.poly_power, description=f"vst round {r + 1}")
        rows += [{**row, "step": row["step"] + r * cfg.iterations, "round": r + 1} for row in result["rows"]]
    return rows
