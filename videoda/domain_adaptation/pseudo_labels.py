"""Pseudo-label thresholds and labelling (paper Sec. 3.3 and 4.4.1, Eq. 3, 4, 11, Algorithm 1).

All generators share one threshold function, ``adaptive_thresholds``: what differs is the *instance* it is
applied to — one image (IAST, Eq. 4), one clip (ours, Eq. 11) — and whether the predictions were temporally
aggregated first (Eq. 10).  CBST's class-balanced thresholds are the fixed-portion quantile over the whole set.
"""

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from videoda.data.classes import DEFAULT, IGNORE_ID
from videoda.domain_adaptation.order_statistics import RadixSelect, kth_largest
from videoda.domain_adaptation.spill import Spill, shared_spill
from videoda.errors import DataError
from videoda.evaluate import predict_probs
from videoda.flow.warp import flow_to_tensor, non_occluded, warp_labels, warp_probs
from videoda.metrics import ConfusionMatrix
from videoda.utils.distributed import SINGLE
from videoda.utils.images import read_label_png, write_ids


def class_quantile(conf, pred, k, portion):
    """The confidence at the top ``portion`` fraction of the pixels predicted as class ``k``, or None if absent.

    conf, pred: numpy arrays or tensors on any device (the work runs there). A selection (O(n)), not a full
    sort: this runs once per class per instance.
    """
    if on_accelerator(conf):
        values = conf[torch.as_tensor(pred, device=conf.device) == k]
        n = values.numel()
    else:          # numpy: on the CPU its partition is faster than torch's kthvalue, and selects the same value
        conf, pred = host_array(conf), host_array(pred)
        values = conf[pred == k]
        n = values.size
    if n == 0:
        return None
    # Index of the portion-th largest value, as IAST computes it: sorted descending, index floor(portion * n).
    idx = descending_index(portion, n)
    if torch.is_tensor(values):
        return float(torch.kthvalue(values, n - idx).values)         # the (n - idx)-th smallest
    return float(np.partition(values, n - 1 - idx)[n - 1 - idx])


def on_accelerator(array):
    """Whether ``array`` is a tensor on another device than the CPU (then the work stays there)."""
    return torch.is_tensor(array) and array.device.type != "cpu"


def host_array(array):
    """A numpy array of a tensor (no copy on the CPU), or the array itself."""
    return array.cpu().numpy() if torch.is_tensor(array) else np.asarray(array)


def placed(array, device=None):
    """``array`` where the thresholds work on it: on the CPU a numpy array (numpy's partition and comparisons
    are faster there than torch's, and select and compare the same values), elsewhere a tensor on ``device``.
    device None: where the array is."""
    if device is None:
        device = array.device if torch.is_tensor(array) else "cpu"
    return host_array(array) if torch.device(device).type == "cpu" else torch.as_tensor(array, device=device)


def descending_index(portion, count):
    """The index, in descending order, of the value at the top ``portion`` of ``count`` values (IAST's rule)."""
    return min(int(np.floor(portion * count)), count - 1)


def adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, num_classes, max_theta=0.999):
    """One step of the instance-adaptive EMA thresholds (Eq. 4 / Eq. 11, Algorithm 1 lines 7-12).

    conf, pred: the max softmax value and its argmax over the whole instance (an image or a clip), numpy arrays
    or tensors on any device. theta: (K,) thresholds of the previous instance.  For each class present, Psi is
    the confidence at the top alpha * theta^gamma fraction (hard classes with low theta get a smaller share),
    and theta <- beta * theta + (1 - beta) * Psi.  A class absent from the instance keeps its threshold.
    """
    theta = np.asarray(theta, np.float64)
    new = theta.copy()
    for k in range(num_classes):
        psi = class_quantile(conf, pred, k, alpha * theta[k] ** gamma)
        if psi is not None:
            new[k] = beta * theta[k] + (1 - beta) * psi
    return np.minimum(new, max_theta)


def class_balanced_thresholds(conf, pred, portion, num_classes):
    """CBST: per class, the confidence at the top ``portion`` fraction over the whole target set, given in
    memory (``streamed_class_balanced_thresholds`` reads the set clip by clip)."""
    theta = np.ones(num_classes)
    for k in range(num_classes):
        psi = class_quantile(conf, pred, k, portion)
        if psi is not None:
            theta[k] = psi
    return theta


def streamed_class_balanced_thresholds(maxima, portion, num_classes, device=None):
    """``class_balanced_thresholds`` over a set read clip by clip, the same values bit for bit.

    maxima: a re-iterable of (name, (conf, pred)) (a list, a ``Spill`` view), read ``bits / 16`` times (2 for
    float32 confidences) by ``order_statistics.RadixSelect``; memory O(classes x 2^16), not O(set).
    """
    selector = RadixSelect(maxima_chunks(maxima), num_classes, device)
    return class_balanced_selection(selector, portion)[0]


def maxima_chunks(maxima):
    """``RadixSelect``'s stream of a re-iterable of (name, (conf, pred)): the confidences grouped by class."""
    return lambda: (conf_pred for _, conf_pred in maxima)


def class_balanced_selection(selector, portion):
    """CBST's thresholds from a ``RadixSelect`` over (confidence, class) for ``portion``: (thresholds (K,),
    pixels labelled). An absent class gets threshold 1 (never labelled); a present one the value at
    ``descending_index(portion, n)``, and the pixels strictly above it are labelled."""
    counts = selector.counts
    values, above, _ = selector.select([descending_index(portion, int(n)) if n else None for n in counts])
    return np.where(counts > 0, values, 1.0), int(above.sum())


def label_with_thresholds(conf, pred, theta):
    """Eq. 3: keep the argmax where its confidence exceeds the class threshold, else IGNORE_ID.

    conf, pred: numpy arrays (-> a uint8 numpy array) or tensors (-> a uint8 tensor on their device)."""
    theta = np.asarray(theta, np.float64)   # float32 confidences are compared in float64, on either path
    if on_accelerator(conf):
        pred = torch.as_tensor(pred, device=conf.device).long()
        keep = conf > torch.as_tensor(theta, device=conf.device)[pred]
        return torch.where(keep, pred, IGNORE_ID).to(torch.uint8)
    as_tensor = torch.is_tensor(conf)
    conf, pred = host_array(conf), host_array(pred)
    labels = np.where(conf > theta[pred], pred, IGNORE_ID).astype(np.uint8)
    return torch.from_numpy(labels) if as_tensor else labels


def aggregate_clip(probs, images, flow, alpha, threshold):
    """Eq. 10: average each frame's softmax with its neighbours i-1 and i+1, warped onto frame i by flow and
    counted only where not occluded.

    probs: float (T, C, H, W) tensor, on any device (the work runs there); images: uint8 (T, H, W, 3) array
    or tensor; ``flow(a, b)`` returns F_{a->b} as (H, W, 2) (the flow from the reference frame a, which
    backward-warps frame b onto a).  Returns (T, C, H, W) on the device of ``probs``.
    """
    t_len, device = probs.shape[0], probs.device
    # np.asarray: a clip's lazy FrameArray too
    frames = torch.as_tensor(np.asarray(images)).to(device).permute(0, 3, 1, 2)
    num, den = probs.clone(), torch.ones(t_len, 1, *probs.shape[2:], device=device)
    for step in (-1, 1):
        ref = list(range(max(0, -step), t_len - max(0, step)))      # frames i that have neighbour i + step
        nbr = [i + step for i in ref]
        flows = flow_to_tensor(np.stack([flow(i, j) for i, j in zip(ref, nbr)])).to(device)
        warped, _ = warp_probs(probs[nbr], flows)
        keep = non_occluded(frames[ref], frames[nbr], flows, alpha, threshold)[:, None].float()
        num[ref] += keep * warped
        den[ref] += keep
    return num / den


def generate_clip_labels(instance, conf, pred, theta, alpha, beta, gamma):
    """Label one clip with the instance-adaptive generators; returns (labels (T, H, W), new theta).

    instance ``IMAGE``: an instance is one image, thresholds updated frame by frame (Eq. 4);
    instance ``CLIP``: an instance is the whole clip, one threshold per class for all its frames (Eq. 11).
    ``conf``, ``pred``: (T, H, W) max and argmax of the (possibly aggregated) softmax maps, numpy arrays
    (-> uint8 numpy labels) or tensors (-> a uint8 tensor on their device).
    """
    if instance not in (IMAGE, CLIP):
        raise ValueError(f"instance must be {IMAGE!r} or {CLIP!r}, got {instance!r}")
    if instance == CLIP:
        theta = adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, len(theta))
        return label_with_thresholds(conf, pred, theta), theta
    labels = (torch.empty(pred.shape, dtype=torch.uint8, device=pred.device) if torch.is_tensor(pred)
              else np.empty(pred.shape, np.uint8))
    for t in range(len(pred)):
        theta = adaptive_thresholds(conf[t], pred[t], theta, alpha, beta, gamma, len(theta))
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
        """Class-balanced thresholds come from every clip at once: the set's maxima are parked on disk first."""
        return self.thresholds == CLASS_BALANCED

    @property
    def knob(self):
        """The setting Table 7 tunes to reach a proportion of labelled pixels: CBST's portion, else alpha."""
        return "cbst_portion" if self.thresholds == CLASS_BALANCED else "alpha"


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


def model_device(model, device=None):
    """Where prediction, aggregation and thresholding run: ``device`` when given (the model is moved there),
    else the device of the model's parameters."""
    if device is None:
        return next(model.parameters()).device
    model.to(device)
    return torch.device(device)


def clip_frames(clip):
    """Every frame of a clip, uint8 (T, H, W, 3), read once (a lazy clip reads them from disk here)."""
    return np.asarray(clip.images[0:len(clip)])


def clip_predictions(model, clip, store, cfg, aggregate, images=None):
    """Softmax maps (T, C, H, W) of every frame of a clip on the model's device, temporally aggregated (Eq. 10)
    when ``aggregate``; ``images``: the clip's frames when the caller already read them."""
    images = clip_frames(clip) if images is None else images
    probs = predict_probs(model, images, cfg.batch_size, on_device=True)
    return aggregate_predictions(probs, clip, store, cfg, images) if aggregate else probs


def aggregate_predictions(probs, clip, store, cfg, images=None):
    """Eq. 10 on one clip's softmax maps, with the clip's stored flows, on the device of ``probs``."""
    images = clip_frames(clip) if images is None else images
    store.check_clip(clip.name, len(clip), *images.shape[1:3])
    return aggregate_clip(probs, images, lambda a, b: store.flow(clip.name, a, b), cfg.occlusion.alpha,
                          cfg.occlusion.occlusion_threshold)


def maxima_of(probs):
    """(confidence float32, argmax uint8) maps (T, H, W) of softmax maps (T, C, H, W), on their device."""
    conf, pred = probs.max(1)
    return conf, pred.to(torch.uint8)


def clip_maxima(model, clip, store, cfg, aggregate):
    """(confidence, argmax) maps (T, H, W) of a clip's softmax on the model's device, temporally aggregated
    (Eq. 10) when asked."""
    return maxima_of(clip_predictions(model, clip, store, cfg, aggregate))


def initial_thresholds(kind, cfg):
    """The thresholds before any clip: CBST's are 1 (never labelled) until the set is seen, the adaptive ones
    start at ``cfg.init_theta``."""
    n = cfg.classes.num_classes
    return np.ones(n) if generator(kind).thresholds == CLASS_BALANCED else np.full(n, cfg.init_theta)


def label_stream(kind, maxima, cfg, device=None, spill_root=None):
    """Threshold (name, (conf, pred)) items in order with the threshold rule of generator ``kind`` (a name in
    GENERATORS): yields (name, labels, theta) for each item as soon as it is labelled, labels (T, H, W) a uint8
    tensor on ``device`` (default: where the maxima are; numpy maxima: the CPU), theta the thresholds after it.
    Whether the maxima are aggregated is the caller's business.

    The adaptive rules carry their thresholds from item to item (Algorithm 1), so one item is in memory at a
    time. CBST's thresholds come from all items at once (Eq. 2's class-balanced portion ``cfg.cbst_portion``): a
    re-iterable ``maxima`` (a list, a ``Spill`` view) is read for them (``streamed_class_balanced_thresholds``),
    then again to label; a one-shot iterator is first written to a spill on disk in a temporary folder under
    ``spill_root`` (default: the system's), removed after.
    """
    rule = generator(kind).thresholds

    def on_device(conf, pred):
        return placed(conf, device), placed(pred, device)

    if rule == CLASS_BALANCED:
        if iter(maxima) is maxima:
            with tempfile.TemporaryDirectory(dir=spill_root, prefix=".cbst-maxima-") as folder:
                spill = Spill(folder)
                for name, (conf, pred) in maxima:
                    spill.append(name, conf=conf, pred=pred)
                yield from label_stream(kind, spill.view("conf", "pred"), cfg, device)
            return
        theta = streamed_class_balanced_thresholds(maxima, cfg.cbst_portion, cfg.classes.num_classes, device)
        for name, (conf, pred) in maxima:
            yield name, torch.as_tensor(label_with_thresholds(*on_device(conf, pred), theta)), theta
        return
    theta = initial_thresholds(kind, cfg)
    for name, (conf, pred) in maxima:
        labels, theta = generate_clip_labels(rule, *on_device(conf, pred), theta, cfg.alpha, cfg.beta, cfg.gamma)
        yield name, torch.as_tensor(labels), theta


def label_maxima(kind, maxima, cfg, device=None):
    """``label_stream`` collected: ({name: labels (T, H, W) uint8 numpy}, the final thresholds). Holds every
    item's labels: for tests and small sets; the stages stream."""
    out, theta = {}, initial_thresholds(kind, cfg)
    for name, labels, theta in label_stream(kind, maxima, cfg, device):
        out[name] = labels.cpu().numpy()
    return out, theta


def iter_pseudo_labels(model, clips, store, cfg, progress=lambda xs, **_: xs, device=None, spill_root=None,
                       world=SINGLE):
    """Algorithm 1 (and the baselines' generators) over the target clips, clip by clip in order: yields
    (clip, labels (T, H, W) uint8 tensor on the device, thresholds after it).

    Prediction, aggregation (Eq. 10) and thresholds run on ``device`` (default: the model's; the model is
    moved there). The adaptive thresholds carry over from clip to clip and one clip is in memory at a time;
    CBST first parks every clip's (confidence, argmax) on disk under ``spill_root`` (``label_stream``).

    Several processes (``world``): each rank predicts and aggregates the clips it owns (``world.shard``) and
    parks their (confidence, argmax) in a spill under ``spill_root`` (a folder every rank sees); after a
    barrier rank 0 thresholds them in the clips' order, the one Algorithm 1's EMA runs in, and yields every
    clip; the other ranks yield nothing. Every rank must run the generator to its end.
    """
    gen = generator(cfg.pseudo_label)
    device = model_device(model, device)
    if world.distributed:
        def maxima(i):
            conf, pred = clip_maxima(model, clips[i], store, cfg, gen.aggregate)
            return {"conf": conf, "pred": pred}

        with shared_spill(spill_root, world) as spill:
            spill.write_shard([clip.name for clip in clips], maxima, world, progress, "pseudo labels")
            if world.is_main:
                yield from labelled_clips(clips, label_stream(cfg.pseudo_label, spill.view("conf", "pred"), cfg,
                                                              device))
        return
    maxima = ((clip.name, clip_maxima(model, clip, store, cfg, gen.aggregate))
              for clip in progress(clips, description="pseudo labels"))
    yield from labelled_clips(clips, label_stream(cfg.pseudo_label, maxima, cfg, device, spill_root))


def labelled_clips(clips, stream):
    """``label_stream``'s (name, labels, theta) as (clip, labels, theta), the clips in the stream's order."""
    for clip, (name, labels, theta) in zip(clips, stream):
        yield clip, labels, theta


def generate_pseudo_labels(model, clips, store, cfg, progress=lambda xs, **_: xs, device=None):
    """``iter_pseudo_labels`` collected: ({clip name: labels (T, H, W) uint8 numpy}, the final thresholds).
    Holds every clip's labels (VST's later rounds train on them); stage ``pseudo_labels`` writes them clip by
    clip instead (``write_clip_pseudo_labels``)."""
    generator(cfg.pseudo_label)
    out, theta = {}, initial_thresholds(cfg.pseudo_label, cfg)
    for clip, labels, theta in iter_pseudo_labels(model, clips, store, cfg, progress, device):
        out[clip.name] = labels.cpu().numpy()
    return out, theta


# Table 7's generators, entries of GENERATORS: class-balanced (CB) and instance-adaptive (IA) on single-frame
# predictions, ours (clip-adaptive on aggregated predictions); the knob tuned to reach a proportion is
# ``Generator.knob`` (CB's portion, else alpha).
TABLE7_GENERATORS = {"cb": "cbst", "ia": "iast", "ours": "clip_agg"}


def knob_at_proportion(kind, maxima, cfg, proportion, steps=16, device=None):
    """Bisect the generator's proportion knob (CBST's portion, else alpha; Table 7 "tune alpha ... to have the
    same proportion") until the share of labelled pixels over all frames is closest to ``proportion``.
    Returns (knob value, proportion reached); ``label_stream`` with that knob gives the labels again.
    Labelling grows with the knob, so bisection applies; a proportion out of reach ends at the nearest end of
    [0, 1]. maxima: a re-iterable of (name, (conf, pred)), read once per step, one item at a time (CBST: once
    per step after a first pass, the labelled count being the count above each class's threshold)."""
    knob = generator(kind).knob
    if generator(kind).thresholds == CLASS_BALANCED:
        selector = RadixSelect(maxima_chunks(maxima), cfg.classes.num_classes, device)

        def run(value):
            return class_balanced_selection(selector, value)[1] / int(selector.counts.sum())
    else:
        def run(value):
            labelled = total = 0
            for _, labels, _ in label_stream(kind, maxima, replace(cfg, **{knob: value}), device):
                labelled += int(torch.count_nonzero(labels != IGNORE_ID))
                total += labels.numel()
            return labelled / total

    lo, hi = 0.0, 1.0
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        reached = run(mid)
        if best is None or abs(reached - proportion) < abs(best[1] - proportion):
            best = (mid, reached)
        lo, hi = (mid, hi) if reached < proportion else (lo, mid)
    return best


def table7_p_miou(single, aggregated, clips, cfg, proportions, device=None):
    """Table 7: P-mIoU of CB, IA and ours, each tuned to the same proportions of labelled pixels.

    single, aggregated: re-iterables of (clip name, (conf, pred)) of every target-train frame, in the order of
    ``clips`` (lists, or ``Spill`` views read from disk one clip at a time). The thresholds use every frame;
    P-mIoU is scored on the annotated ones. Returns {proportion: {generator: {knob, proportion (%), p_miou}}}."""
    out = {}
    for proportion in proportions:
        row = {}
        for name, kind in TABLE7_GENERATORS.items():
            maxima = aggregated if GENERATORS[kind].aggregate else single
            knob, reached = knob_at_proportion(kind, maxima, cfg, proportion, device=device)
            stats = LabelStats(cfg.classes)
            tuned = replace(cfg, **{GENERATORS[kind].knob: knob})
            for clip, (label_name, labels, _) in zip(clips, label_stream(kind, maxima, tuned, device)):
                if label_name != clip.name:
                    raise ValueError(f"maxima of clip '{label_name}' where clip '{clip.name}' was expected")
                stats.add(clip, labels.cpu().numpy())
            row[name] = {"knob": round(knob, 6), "proportion": round(100 * reached, 4),
                         "p_miou": stats.result()["p_miou"]}
        out[f"{proportion:g}"] = row
    return out


def annotated_labels(clip):
    """(indices of the annotated frames, their ground truth (F, H, W)), reading only those frames."""
    idx = np.flatnonzero(clip.labeled)
    return idx, np.asarray(clip.labels[idx.tolist()]) if len(idx) else np.zeros((0,) + clip.labels.shape[1:],
                                                                                 np.uint8)


class LabelStats:
    """``pseudo_label_report`` accumulated clip by clip: ``add(clip, labels)`` for each clip, then ``result()``.
    Memory: the class counts and a confusion matrix. P-mIoU averages over the class set's evaluated classes, as
    mIoU does."""

    def __init__(self, classes=DEFAULT):
        self.classes = classes
        self.counts, self.total = np.zeros(classes.num_classes, np.int64), 0
        self.cm = ConfusionMatrix(classes.num_classes, classes.names, classes.evaluated_ids)

    def add(self, clip, labels, annotated=None):
        """labels: the clip's (T, H, W) uint8 numpy labels; annotated: ``annotated_labels(clip)`` if read."""
        n = self.classes.num_classes
        self.counts += np.bincount(labels[labels != IGNORE_ID], minlength=n)[:n]
        self.total += labels.size
        idx, gt = annotated_labels(clip) if annotated is None else annotated
        kept = labels[idx] != IGNORE_ID
        self.cm.update(labels[idx][kept], gt[kept])

    def result(self):
        scores = self.cm.to_dict()
        return {"proportion": round(100 * self.counts.sum() / self.total, 4),
                "proportion_per_class": {c: round(100 * n / self.total, 4)
                                         for c, n in zip(self.classes.names, self.counts)},
                "p_miou": scores["miou"], "p_iou": scores["iou"]}


def pseudo_label_report(labels_by_clip, clips, classes=DEFAULT):
    """Proportion of pixels labelled (overall, and the share of each class), and P-mIoU: the mIoU of the pseudo
    labels against the ground truth where both exist (the paper's Table 7), for the class set ``classes``."""
    stats = LabelStats(classes)
    for clip in clips:
        stats.add(clip, labels_by_clip[clip.name])
    return stats.result()


def miou_at_proportion(chunks, proportion, device=None, classes=DEFAULT):
    """P-mIoU of the most confident ``proportion`` of the ground-truth-labelled pixels (Table 7's comparison of
    label generators at equal proportion), exactly as a stable sort of all of them would pick them.

    chunks: a function returning a fresh iterator of (conf, pred, gt) arrays or tensors, the pixels in one
    fixed order (ties in confidence go to the earlier pixel); read three times (``kth_largest``'s two passes,
    then the confusion matrix), one chunk at a time: memory O(2^16 + chunk), not O(pixels)."""
    def labelled():
        for conf, pred, gt in chunks():
            conf, pred, gt = (torch.as_tensor(a, device=device) for a in (conf, pred, gt))
            valid = gt != IGNORE_ID
            yield conf[valid], pred[valid], gt[valid]

    wanted = {}

    def ranks(counts):
        wanted["n"], wanted["total"] = int(round(proportion * int(counts[0]))), int(counts[0])
        return [wanted["n"] - 1 if 0 < wanted["n"] < wanted["total"] else None]

    value, above, _, _ = kth_largest(lambda: ((c, torch.zeros(c.shape, dtype=torch.int64, device=c.device))
                                              for c, _, _ in labelled()), 1, ranks, device)
    n, total = wanted.get("n", 0), wanted.get("total", 0)
    cm = ConfusionMatrix(classes.num_classes, classes.names, classes.evaluated_ids)
    if n == 0:
        return cm.to_dict()["miou"]
    ties_left = n - int(above[0])             # of the pixels equal to the n-th value, the first ones are kept
    for conf, pred, gt in labelled():
        if n < total:
            tie = conf == float(value[0])
            keep = (conf > float(value[0])) | (tie & (torch.cumsum(tie.long(), 0) <= ties_left))
            ties_left -= int(tie.sum())
            pred, gt = pred[keep], gt[keep]
        cm.update(pred, gt)
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


def write_clip_pseudo_labels(root, clip, labels):
    """One clip's pseudo labels (T, H, W) as label PNGs ``<root>/<clip>/<frame>.png`` (the clip's folder must
    not exist yet)."""
    (Path(root) / clip.name).mkdir(parents=True)
    for name, frame_labels in zip(clip.frame_names, labels):
        write_ids(pseudo_label_path(root, clip.name, name), frame_labels)


def write_pseudo_labels(root, clips, labels_by_clip):
    """Every clip's pseudo labels as label PNGs ``<root>/<clip>/<frame>.png`` (``root`` must not exist yet)."""
    for clip in clips:
        write_clip_pseudo_labels(root, clip, labels_by_clip[clip.name])
