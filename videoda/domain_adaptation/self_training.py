"""Video self-training (VST, Sec. 4.4.2, Eq. 12-14): target frame pairs with online-refined pseudo labels.

The training itself is the shared loop (``train.train``) with these loss terms: the cross-entropy of Eq. 13
on both frames against the refined pseudo labels, a regulariser (IAST's entropy on ignored pixels or CRST's
confidence-regularising KLD on labelled pixels), and optionally the source cross-entropy (CBST/CRST-style).
"""

import numpy as np
import torch

from videoda.domain_adaptation.pseudo_labels import cutout_refine, fillin_refine
from videoda.domain_adaptation.train import forward_pairs
from videoda.flow.warp import flow_to_tensor
from videoda.utils.loss import cross_entropy_2d, ignored_entropy_loss, kld_regulariser

REFINEMENTS = ("none", "cutout", "fillin")
REGULARISERS = ("none", "entropy", "kld")


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
