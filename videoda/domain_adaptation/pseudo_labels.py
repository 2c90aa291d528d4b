"""Pseudo-label thresholds and labelling (paper Sec. 3.3 and 4.4.1, Eq. 3, 4, 11, Algorithm 1).

All generators share one threshold function, ``adaptive_thresholds``: what differs is the *instance* it is
applied to — one image (IAST, Eq. 4), one clip (ours, Eq. 11) — and whether the predictions were temporally
aggregated first (Eq. 10).  CBST's class-balanced thresholds are the fixed-portion quantile over the whole set.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from videoda.data.classes import CLASSES, IGNORE_ID, NUM_CLASSES
from videoda.errors import DataError
from videoda.evaluate import predict_probs
from videoda.flow.warp import flow_to_tensor, non_occluded, warp_labels, warp_probs
from videoda.metrics import ConfusionMatrix
from videoda.utils.images import read_label_png, write_ids


def class_quantile(conf, pred, k, portion):
    """The confidence at the top ``portion`` fraction of the pixels predicted as class ``k``, or None if absent.

    Uses a partition (O(n)), not a full sort: this runs once per class per instance.
    """
    values = conf[pred == k]
    if values.size == 0:
        return None
    # Index of the portion-th largest value, as IAST computes it: sorted descending, index floor(portion * n).
    idx = min(int(np.floor(portion * values.size)), values.size - 1)
    return float(np.partition(values, values.size - 1 - idx)[values.size - 1 - idx])


def adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, num_classes, max_theta=0.999):
    """One step of the instance-adaptive EMA thresholds (Eq. 4 / Eq. 11, Algorithm 1 lines 7-12).

    conf, pred: the max softmax value and its argmax over the whole instance (an image or a clip).
    theta: (K,) thresholds of the previous instance.  For each class present, Psi is the confidence at the top
    alpha * theta^gamma fraction (hard classes with low theta get a smaller share), and
    theta <- beta * theta + (1 - beta) * Psi.  A class absent from the instance keeps its threshold.
    """
    theta = np.asarray(theta, np.float64)
    new = theta.copy()
    for k in range(num_classes):
        psi = class_quantile(conf, pred, k, alpha * theta[k] ** gamma)
        if psi is not None:
            new[k] = beta * theta[k] + (1 - beta) * psi
    return np.minimum(new, max_theta)


def class_balanced_thresholds(conf, pred, portion, num_classes):
    """CBST: per class, the confidence at the top ``portion`` fraction over the whole target set."""
    theta = np.ones(num_classes)
    for k in range(num_classes):
        psi = class_quantile(conf, pred, k, portion)
        if psi is not None:
            theta[k] = psi
    return theta


def label_with_thresholds(conf, pred, theta):
    """Eq. 3: keep the argmax where its confidence exceeds the class threshold, else IGNORE_ID."""
    keep = conf > np.asarray(theta)[pred]
    return np.where(keep, pred, IGNORE_ID).astype(np.uint8)


def aggregate_clip(probs, images, flow, alpha, threshold):
    """Eq. 10: average each frame's softmax with its neighbours i-1 and i+1, warped onto frame i by flow and
    counted only where not occluded.

    probs: float (T, C, H, W); images: uint8 (T, H, W, 3); ``flow(a, b)`` returns F_{a->b} as (H, W, 2) (the
    flow from the reference frame a, which backward-warps frame b onto a).  Returns (T, C, H, W).
    """
    t_len = probs.shape[0]
    frames = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2)   # np.asarray: a clip's lazy FrameArray too
    num, den = probs.clone(), torch.ones(t_len, 1, *probs.shape[2:])
    for step in (-1, 1):
        ref = list(range(max(0, -step), t_len - max(0, step)))      # frames i that have neighbour i + step
        nbr = [i + step for i in ref]
        flows = flow_to_tensor(np.stack([flow(i, j) for i, j in zip(ref, nbr)]))
        warped, _ = warp_probs(probs[nbr], flows)
        keep = non_occluded(frames[ref], frames[nbr], flows, alpha, threshold)[:, None].float()
        num[ref] += keep * warped
        den[ref] += keep
    return num / den


def generate_clip_labels(instance, conf, pred, theta, alpha, beta, gamma):
    """Label one clip with the instance-adaptive generators; returns (labels (T, H, W), new theta).

    instance ``IMAGE``: an instance is one image, thresholds updated frame by frame (Eq. 4);
    instance ``CLIP``: an instance is the whole clip, one threshold per class for all its frames (Eq. 11).
    ``conf``, ``pred``: (T, H, W) max and argmax of the (possibly aggregated) softmax maps.
    """
    if instance not in (IMAGE, CLIP):
        raise ValueError(f"instance must be {IMAGE!r} or {CLIP!r}, got {instance!r}")
    if instance == CLIP:
        theta = adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, NUM_CLASSES)
        return label_with_thresholds(conf, pred, theta), theta
    labels = np.empty(pred.shape, np.uint8)
    for t in range(len(pred)):
        theta = adaptive_thresholds(conf[t], pred[t], theta, alpha, beta, gamma, NUM_CLASSES)
        labels[t] = label_with_thresholds(conf[t], pred[t], theta)
    return labels, theta


def cutout_refine(labels, ref_labels, flow_to_ref):
    """Eq. 12, online cut-out refinement: keep a pseudo label only where the reference frame's pseudo label,
    warped onto this frame (nearest), agrees; elsewhere IGNORE_ID.

    labels, ref_labels: (B, H, W) int tensors; flow_to_ref: (B, 2, H, W) = F_{t->ref} on this frame's grid.
    """
    warped = warp_labels(ref_labels, flow_to_ref)
    return torch.where(labels == warped, labels, torch.full_like(labels, IGNORE_ID))


def fillin_refine(labels, ref_labels, flow_to_ref, images, ref_images, alpha, threshold):
    """Eq. 14 (appendix B), fill-in: keep this frame's pseudo labels, and where it has none, take the warped
    reference pseudo label wherever the reference is not occluded.

    images, ref_images: uint8 (B, 3, H, W) for the occlusion mask of Eq. 10.
    """
    warped = warp_labels(ref_labels, flow_to_ref)
    visible = non_occluded(images, ref_images, flow_to_ref, alpha, threshold)
    fill = (labels == IGNORE_ID) & visible
    return torch.where(fill, warped, labels)


# Threshold rules: class-balanced over the whole set (CBST), instance-adaptive per image (IAST, Eq. 4), or per
# clip (ours, Eq. 11).
CLASS_BALANCED, IMAGE, CLIP = "class_balanced", "image", "clip"


@dataclass(frozen=True)
class Generator:
    """A pseudo-label generator: its threshold rule (``CLASS_BALANCED``, ``IMAGE`` or ``CLIP``) and whether the
    thresholds see temporally aggregated predictions (Eq. 10)."""
    thresholds: str
    aggregate: bool = False

    def __post_init__(self):
        if self.thresholds not in (CLASS_BALANCED, IMAGE, CLIP):
            raise ValueError(f"unknown threshold rule {self.thresholds!r}")

    @property
    def needs_whole_set(self):
        """Class-balanced thresholds come from every clip at once: the set's maxima are kept in memory first."""
        return self.thresholds == CLASS_BALANCED

    @property
    def knob(self):
        """The setting Table 7 tunes to reach a proportion of labelled pixels: CBST's portion, else alpha."""
        return "portion" if self.thresholds == CLASS_BALANCED else "alpha"


# The generators by their name in params.yaml (``vst.pseudo_label``).
GENERATORS = {
    "cbst": Generator(CLASS_BALANCED),
    "iast": Generator(IMAGE),
    "clip": Generator(CLIP),
    "clip_agg": Generator(CLIP, aggregate=True),      # ours
}


def generator(name):
    """The registry entry of generator ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in GENERATORS:
        raise ValueError(f"vst.pseudo_label must be one of {tuple(GENERATORS)}, got {name!r}")
    return GENERATORS[name]


def clip_predictions(model, clip, store, cfg, aggregate):
    """Softmax maps of every frame of a clip, temporally aggregated (Eq. 10) when ``aggregate``."""
    probs = predict_probs(model, clip.images, cfg.batch_size)
    return aggregate_predictions(probs, clip, store, cfg) if aggregate else probs


def aggregate_predictions(probs, clip, store, cfg):
    """Eq. 10 on one clip's softmax maps, with the clip's stored flows."""
    store.check_clip(clip.name, len(clip), *clip.images.shape[1:3])
    return aggregate_clip(probs, clip.images, lambda a, b: store.flow(clip.name, a, b), cfg.occlusion.alpha,
                          cfg.occlusion.threshold)


def generate_pseudo_labels(model, clips, store, cfg, progress=lambda xs, **_: xs):
    """Algorithm 1 (and the baselines' generators) over the target clips: ({clip name: labels (T, H, W) uint8},
    the final thresholds).

    Clips are processed one at a time, in order; the adaptive thresholds carry over from clip to clip.
    CBST needs the whole set first, so it keeps every clip's (confidence, argmax) in memory.
    """
    gen = generator(cfg.kind)
    maxima = ((clip.name, clip_maxima(model, clip, store, cfg, gen.aggregate))
              for clip in progress(clips, description="pseudo labels"))
    if gen.needs_whole_set:
        maxima = list(maxima)
    return label_maxima(cfg.kind, maxima, cfg)


def clip_maxima(model, clip, store, cfg, aggregate):
    """(confidence, argmax) maps (T, H, W) of a clip's softmax, temporally aggregated (Eq. 10) when asked."""
    conf, pred = clip_predictions(model, clip, store, cfg, aggregate).max(1)
    return conf.numpy(), pred.numpy().astype(np.uint8)


def label_maxima(kind, maxima, cfg):
    """Threshold (clip name, (conf, pred)) items in order with the threshold rule of generator ``kind`` (a name in
    GENERATORS): ({name: labels}, theta). Whether the maxima are aggregated is the caller's business.
    CBST's thresholds come from all clips at once (Eq. 2's class-balanced portion ``cfg.portion``)."""
    rule = generator(kind).thresholds
    if rule == CLASS_BALANCED:
        maxima = list(maxima)
        conf_all = np.concatenate([c.ravel() for _, (c, _) in maxima])
        pred_all = np.concatenate([p.ravel() for _, (_, p) in maxima])
        theta = class_balanced_thresholds(conf_all, pred_all, cfg.portion, NUM_CLASSES)
        return {name: label_with_thresholds(c, p, theta) for name, (c, p) in maxima}, theta
    out, theta = {}, np.full(NUM_CLASSES, cfg.init_theta)
    for name, (conf, pred) in maxima:
        out[name], theta = generate_clip_labels(rule, conf, pred, theta, cfg.alpha, cfg.beta, cfg.gamma)
    return out, theta


# Table 7's generators, entries of GENERATORS: class-balanced (CB) and instance-adaptive (IA) on single-frame
# predictions, ours (clip-adaptive on aggregated predictions); the knob tuned to reach a proportion is
# ``Generator.knob`` (CB's portion, else alpha).
TABLE7_GENERATORS = {"cb": "cbst", "ia": "iast", "ours": "clip_agg"}


def labels_at_proportion(kind, maxima, cfg, proportion, steps=16):
    """Bisect the generator's proportion knob (CBST's portion, else alpha; Table 7 "tune alpha ... to have the
    same proportion") until the share of labelled pixels over all frames is closest to ``proportion``.
    Returns (labels by clip, knob value, proportion reached). Labelling grows with the knob, so bisection
    applies; a proportion out of reach ends at the nearest end of [0, 1]."""
    total = sum(c.size for _, (c, _) in maxima)
    knob = generator(kind).knob

    def run(value):
        labels, _ = label_maxima(kind, maxima, replace(cfg, **{knob: value}))
        return labels, sum(int((lab != IGNORE_ID).sum()) for lab in labels.values()) / total

    lo, hi = 0.0, 1.0
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        labels, reached = run(mid)
        if best is None or abs(reached - proportion) < abs(best[2] - proportion):
            best = (labels, mid, reached)
        lo, hi = (mid, hi) if reached < proportion else (lo, mid)
    return best


def table7_p_miou(single, aggregated, clips, cfg, proportions):
    """Table 7: P-mIoU of CB, IA and ours, each tuned to the same proportions of labelled pixels.

    single, aggregated: [(clip name, (conf, pred))] of every target-train frame, in clip order. The thresholds
    use every frame; P-mIoU is scored on the annotated ones. Returns {proportion: {generator: {knob,
    proportion (%), p_miou}}}."""
    out = {}
    for proportion in proportions:
        row = {}
        for name, kind in TABLE7_GENERATORS.items():
            maxima = aggregated if GENERATORS[kind].aggregate else single
            labels, knob, reached = labels_at_proportion(kind, maxima, cfg, proportion)
            row[name] = {"knob": round(knob, 6), "proportion": round(100 * reached, 4),
                         "p_miou": pseudo_label_report(labels, clips)["p_miou"]}
        out[f"{proportion:g}"] = row
    return out


def pseudo_label_report(labels_by_clip, clips):
    """Proportion of pixels labelled (overall, and the share of each class), and P-mIoU: the mIoU of the pseudo
    labels against the ground truth where both exist (the paper's Table 7)."""
    counts, total = np.zeros(NUM_CLASSES, np.int64), 0
    cm = ConfusionMatrix(NUM_CLASSES)
    for clip in clips:
        labels = labels_by_clip[clip.name]
        counts += np.bincount(labels[labels != IGNORE_ID], minlength=NUM_CLASSES)[:NUM_CLASSES]
        total += labels.size
        idx = np.flatnonzero(clip.labeled)
        kept = labels[idx] != IGNORE_ID
        cm.update(labels[idx][kept], clip.labels[idx][kept])
    scores = cm.to_dict()
    return {"proportion": round(100 * counts.sum() / total, 4),
            "proportion_per_class": {c: round(100 * n / total, 4) for c, n in zip(CLASSES, counts)},
            "p_miou": scores["miou"], "p_iou": scores["iou"]}


def miou_at_proportion(conf, pred, gt, proportion):
    """P-mIoU of the most confident ``proportion`` of the ground-truth-labelled pixels (Table 7's comparison of
    label generators at equal proportion)."""
    valid = gt != IGNORE_ID
    conf, pred, gt = conf[valid], pred[valid], gt[valid]
    n = int(round(proportion * conf.size))
    keep = np.argsort(-conf, kind="stable")[:n]
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(pred[keep], gt[keep])
    return cm.to_dict()["miou"]


def label_precision(labels, gt):
    """Share of the kept pseudo labels that agree with the ground truth, and how many were kept (pixels)."""
    kept = (labels != IGNORE_ID) & (gt != IGNORE_ID)
    return float((labels[kept] == gt[kept]).mean()) if kept.any() else float("nan"), int(kept.sum())


def pseudo_label_path(root, clip_name, frame_name):
    """Where stage `pseudo_labels` writes a frame's pseudo labels: ``<root>/<clip>/<frame>.png``."""
    return Path(root) / clip_name / f"{frame_name}.png"


def read_pseudo_label(root, clip, t):
    """Frame t's pseudo labels (H, W) from the stage's PNGs; a map of another size than the frame is a DataError."""
    path = pseudo_label_path(root, clip.name, clip.frame_names[t])
    labels = read_label_png(path)
    if labels.shape != clip.labels.shape[1:]:
        raise DataError(f"{path}: pseudo label of size {labels.shape}, the frame is {clip.labels.shape[1:]} "
                        f"(rerun the pseudo_labels stage)")
    return labels


def read_pseudo_labels(root, clips):
    """{clip: (T, H, W)} pseudo labels of every frame of ``clips`` from the stage's PNGs."""
    return {clip.name: np.stack([read_pseudo_label(root, clip, t) for t in range(len(clip))]) for clip in clips}


def write_pseudo_labels(root, clips, labels_by_clip):
    """Every clip's pseudo labels as label PNGs ``<root>/<clip>/<frame>.png`` (``root`` must not exist yet)."""
    for clip in clips:
        (Path(root) / clip.name).mkdir(parents=True)
        for name, labels in zip(clip.frame_names, labels_by_clip[clip.name]):
            write_ids(pseudo_label_path(root, clip.name, name), labels)
