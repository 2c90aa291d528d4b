"""Adversarial adaptation in output space: VAT (Sec. 4.3, Eq. 6-9) and the image-level baselines.

Everything here plugs into the one training loop (``videoda.domain_adaptation.train.train``):

- ``VATBatches``: each step draws labelled source pairs and *unlabelled* target pairs (t - tau, t);
- ``adversarial_forward``: segments both in one pass (GroupNorm/BatchNorm-free models see each sample alone);
- loss terms for the segmentation network: ``segmentation_loss`` (per-frame CE on source, from ``train``),
  ``DiceTerm`` (tube matching loss, Eq. 6-7, or its single-frame degradation) and ``AdversarialTerm``
  (lambda_V times the generator side of the video GAN loss, Eq. 8);
- ``DiscriminatorStep``: the alternating discriminator update, with its own optimiser and poly schedule;
- ``vat_objective``: stage ``vat``'s assembly of the above from its config, an ``Objective``.

The variants of Table 3 and the baselines are combinations: discriminator none | image | sequence,
discriminator input softmax (AdaptSegNet) | entropy (ADVENT), Dice none | single | tube.
"""

import torch

from videoda.data.classes import NUM_CLASSES
from videoda.data.pairs import PairDataset, PairLoader, load_split
from videoda.domain_adaptation.train import (Objective, forward_pairs, make_optimizer, poly_lr_, segmentation_loss,
                                             supervised_forward)
from videoda.model.discriminator import Discriminator
from videoda.utils.device import CPU
from videoda.utils.distributed import data_parallel
from videoda.domain_adaptation.losses import (SOURCE_LABEL, TARGET_LABEL, adversarial_bce, entropy_map,
                                              full_precision, single_frame_dice_loss, tube_dice_loss)

def unlabelled(batch):
    """The unsupervised setting: of a target batch only the images go on; its labels never reach a loss."""
    return {"images": batch["images"]}


class VATBatches:
    """Joint batches: source ``images``/``labels`` (B, 2, ...) with their ``labeled`` flags (B, 2) and
    ``target_images`` (B, 2, H, W, 3), no labels. ``source``, ``target``: ``PairLoader``s (or anything with
    ``sample()`` and ``skip(n)``); ``skip(n)`` moves both streams on by n batches; ``close()`` (or the end of a
    ``with`` block) stops both loaders' workers."""

    def __init__(self, source, target):
        self.source, self.target = source, target

    @classmethod
    def from_prepared(cls, root, cfg, compute=CPU):
        """Stage ``vat``'s batches from the prepared clips under ``root``, with its config ``cfg``
        (``videoda.config.VAT``): source pairs (t - ``cfg.tau``, t) whose frame t is labelled, seed ``cfg.seed``,
        and target-train pairs without their labels (unsupervised), seed ``cfg.seed + 1``, each
        ``cfg.train.batch_size`` pairs a batch, flipped as ``cfg.train.hflip`` says, loaded for ``compute``."""
        source = PairDataset(load_split(root, "source"), cfg.tau, require_label=True)
        target = PairDataset(load_split(root, "target_train"), cfg.tau, labels=False)
        return cls(*(PairLoader(pairs, cfg.train.batch_size, seed, cfg.train.hflip, compute)
                     for pairs, seed in ((source, cfg.seed), (target, cfg.seed + 1))))

    def sample(self):
        src = self.source.sample()
        tgt = unlabelled(self.target.sample())
        return {"images": src["images"], "labels": src["labels"], "labeled": src["labeled"],
                "target_images": tgt["images"]}

    def skip(self, n):
        self.source.skip(n)
        self.target.skip(n)

    def close(self):
        self.source.close()
        self.target.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def adversarial_forward(model, batch):
    """Segment source and target pairs in one pass -> ``logits`` (source) and ``target_logits``, (B, 2, C, H, W);
    in two passes when the domains were prepared at different resolutions (``prepare.source``/``target``)."""
    src, tgt = batch["images"], batch["target_images"]
    if src.shape[2:] != tgt.shape[2:]:
        return {"logits": forward_pairs(model, src), "target_logits": forward_pairs(model, tgt)}
    logits = forward_pairs(model, torch.cat([src, tgt]))
    return {"logits": logits[:len(src)], "target_logits": logits[len(src):]}


def discriminator_input(logits, kind):
    """(B, T, C, H, W) logits -> what D sees: the softmax of *each frame* over its C classes (never a joint
    softmax over the T*C stacked channels), or ADVENT's entropy map of it; float32 whatever the logits' dtype."""
    probs = full_precision(logits).softmax(dim=2)
    return entropy_map(probs) if kind == "entropy" else probs


class DiceTerm:
    """``weight`` times the tube matching loss (``mode="tube"``) or its single-frame version, on source pairs.

    With the batch's ``labeled`` flags (``PairDataset``), the tube loss counts only pairs whose two frames are
    labelled (the single-frame loss only labelled frames): with VIPER labelled on a subset of frames a pair may
    hold an unlabelled frame t - tau. Every frame labelled (the paper's setting): the plain batch mean."""

    def __init__(self, mode, weight=1.0):
        if mode not in ("single", "tube"):
            raise ValueError(f"dice mode must be 'single' or 'tube', got {mode!r}")
        self.loss = tube_dice_loss if mode == "tube" else single_frame_dice_loss
        self.weight = weight

    def __call__(self, outputs, batch):
        return {"dice": self.weight * self.loss(full_precision(outputs["logits"]).softmax(dim=2), batch["labels"],
                                                labeled=batch.get("labeled"))}


class AdversarialTerm:
    """lambda times the generator's GAN loss: target predictions should make D answer "source" (Eq. 8).

    D is frozen while the segmentation network steps (its gradients are not needed and must not leak into
    its own update); ``DiscriminatorStep`` unfreezes it.
    """

    def __init__(self, discriminator, disc_input, weight):
        self.discriminator, self.disc_input, self.weight = discriminator, disc_input, weight

    def __call__(self, outputs, batch):
        self.discriminator.requires_grad_(False)
        d_target = self.discriminator(discriminator_input(outputs["target_logits"], self.disc_input))
        return {"adv": self.weight * adversarial_bce(d_target, SOURCE_LABEL)}


class DiscriminatorStep:
    """The discriminator's half of the alternating optimisation (``extra_step`` of the training loop).

    Trains D to tell source (label 1) from target (label 0) on the detached predictions of this step, with its
    own optimiser whose every param group follows the poly schedule over ``iterations``. D's forward pass and
    losses run under ``compute``'s autocast (a ``videoda.utils.device.Runtime``, with D on its device); the
    backward runs outside it. Its update runs ``trainable``: D wrapped in DistributedDataParallel under several
    processes (``compute.world``), so its gradients are averaged over the ranks, else D itself; the generator's
    term (``AdversarialTerm``) uses D itself, as D is not updated there.
    """

    def __init__(self, discriminator, optimizer, disc_input, iterations, power=0.9, compute=CPU):
        self.discriminator, self.optimizer, self.disc_input = discriminator, optimizer, disc_input
        self.trainable = data_parallel(discriminator, compute)
        self.iterations, self.power = iterations, power
        self.autocast = compute.autocast

    def __call__(self, outputs, batch, step):
        poly_lr_(self.optimizer, step, self.iterations, self.power)
        self.discriminator.requires_grad_(True)
        src, tgt = outputs["logits"].detach(), outputs["target_logits"].detach()
        with self.autocast():
            if src.shape[3:] == tgt.shape[3:]:
                d_out = self.trainable(discriminator_input(torch.cat([src, tgt]), self.disc_input))   # one pass
                d_src, d_tgt = d_out[:len(src)], d_out[len(src):]
            else:      # domains at different resolutions
                d_src, d_tgt = (self.trainable(discriminator_input(x, self.disc_input)) for x in (src, tgt))
            loss_src, loss_tgt = adversarial_bce(d_src, SOURCE_LABEL), adversarial_bce(d_tgt, TARGET_LABEL)
        self.optimizer.zero_grad(set_to_none=True)
        ((loss_src + loss_tgt) / 2).backward()
        self.optimizer.step()
        return {"d_src": loss_src.detach(), "d_tgt": loss_tgt.detach()}

    def state_dict(self):
        """D's weights and its optimiser's state, for a training snapshot."""
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])


def vat_objective(cfg, num_classes=NUM_CLASSES, compute=CPU):
    """VAT's ``Objective`` (Eq. 9), or one of its baselines / Table 3 variants, from stage ``vat``'s config
    (``videoda.config.VAT``).

    Terms: per-frame cross-entropy on source, + ``cfg.lambda_dice`` x the Dice loss (``cfg.dice`` single | tube;
    none: left out), + ``cfg.lambda_v`` x the GAN loss against a new discriminator of kind ``cfg.discriminator``
    (image | sequence, ``cfg.disc_channels`` base channels, reading ``num_classes`` maps: the segmentation
    network's; none: no discriminator, and the forward segments source pairs only: the target images are unused)
    reading ``cfg.disc_input`` (softmax | entropy). The discriminator gets its own optimiser ``cfg.optimizer_d``
    (sgd | adam, learning rate ``cfg.lr_d``, the segmentation network's momentum ``cfg.train.optim.momentum``, no
    weight decay) on the poly schedule over ``cfg.train.iterations`` with ``cfg.train.optim.poly_power``. Draws
    the discriminator's random initialisation from torch's global generator (on the CPU, so the weights do not
    depend on the device), then moves it to ``compute``'s device (``videoda.utils.device.Runtime``), whose
    autocast its step runs under; under several processes (``compute.world``) its update is
    DistributedDataParallel.
    """
    train, terms, extra_step = cfg.train, [segmentation_loss], None
    if cfg.dice != "none":
        terms.append(DiceTerm(cfg.dice, cfg.lambda_dice))
    if cfg.discriminator != "none":
        disc = compute.module(Discriminator(num_classes, cfg.discriminator, base_channels=cfg.disc_channels))
        d_optimizer = make_optimizer([{"params": list(disc.parameters()), "lr": cfg.lr_d}], cfg.optimizer_d,
                                     cfg.lr_d, train.optim.momentum, weight_decay=0.0)
        terms.append(AdversarialTerm(disc, cfg.disc_input, cfg.lambda_v))
        extra_step = DiscriminatorStep(disc, d_optimizer, cfg.disc_input, train.iterations, train.optim.poly_power,
                                       compute)
    forward = supervised_forward if cfg.discriminator == "none" else adversarial_forward   # no D: targets unused
    return Objective(forward, tuple(terms), extra_step)
