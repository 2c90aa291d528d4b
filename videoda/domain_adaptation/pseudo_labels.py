"""Making the pseudo labels (paper Sec. 3.3 and 4.4.1, Eq. 3, 4, 10, 11, Algorithm 1): ``make_pseudo_labels``
predicts every target clip once, thresholds it and writes its labels as label PNGs, clip by clip.

All generators share one threshold function, ``adaptive_thresholds``: what differs is the *instance* it is
applied to — one image (IAST, Eq. 4), one clip (ours, Eq. 11) — and whether the predictions were temporally
aggregated first (Eq. 10).  CBST's class-balanced thresholds are the fixed-portion quantile over the whole set,
read back from a spill on disk (``spill.py``) through histograms (``order_statistics``).

The labels' PNGs are read back a pair at a time (``PseudoLabelFiles``) and refined online (Eq. 12, 14) by VST's
training pairs. The analyses of the labels (P-mIoU, Table 7, ...) are ``pseudo_label_analysis``'s: an observer
that ``make_pseudo_labels`` feeds in the same pass.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from videoda.data.classes import IGNORE_ID
from videoda.domain_adaptation.order_statistics import RadixSelect
from videoda.domain_adaptation.spill import shared_spill
from videoda.errors import DataError
from videoda.evaluate import predict_probs
from videoda.flow.warp import flow_to_tensor, non_occluded, warp_labels, warp_probs
from videoda.utils.device import CPU
from videoda.utils.images import read_label_png, write_ids


# --- thresholds (Eq. 3, 4, 11) ----------------------------------------------------------------------------------

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


def placed(array, device):
    """``array`` where the thresholds work on it: on the CPU a numpy array (numpy's partition and comparisons
    are faster there than torch's, and select and compare the same values), elsewhere a tensor on ``device``."""
    return host_array(array) if torch.device(device).type == "cpu" else torch.as_tensor(array, device=device)


def descending_index(portion, count):
    """The index, in descending order, of the value at the top ``portion`` of ``count`` values (IAST's rule)."""
    return min(int(np.floor(portion * count)), count - 1)


def adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, max_theta=0.999):
    """One step of the instance-adaptive EMA thresholds (Eq. 4 / Eq. 11, Algorithm 1 lines 7-12).

    conf, pred: the max softmax value and its argmax over the whole instance (an image or a clip), numpy arrays
    or tensors on any device. theta: (K,) thresholds of the previous instance.  For each class present, Psi is
    the confidence at the top alpha * theta^gamma fraction (hard classes with low theta get a smaller share),
    and theta <- beta * theta + (1 - beta) * Psi.  A class absent from the instance keeps its threshold.
    """
    theta = np.asarray(theta, np.float64)
    new = theta.copy()
    for k in range(len(theta)):
        psi = class_quantile(conf, pred, k, alpha * theta[k] ** gamma)
        if psi is not None:
            new[k] = beta * theta[k] + (1 - beta) * psi
    return np.minimum(new, max_theta)


def class_balanced_thresholds(maxima, portion, num_classes, compute=CPU):
    """CBST: per class, the confidence at the top ``portion`` fraction over the whole target set; 1 (never
    labelled) for a class no pixel is predicted as.

    maxima: a re-iterable of (name, (conf, pred)) (a list, a ``Spill`` view), read ``bits / 16`` times (2 for
    float32 confidences) by ``order_statistics.RadixSelect`` on ``compute``'s device; memory O(classes x 2^16),
    not O(set).
    """
    return class_balanced_selection(RadixSelect(maxima_chunks(maxima), num_classes, compute.device), portion)[0]


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


def generate_clip_labels(instance, conf, pred, theta, cfg):
    """Label one clip with the instance-adaptive generators and ``cfg``'s alpha, beta, gamma; returns (labels
    (T, H, W), new theta).

    instance ``IMAGE``: an instance is one image, thresholds updated frame by frame (Eq. 4);
    instance ``CLIP``: an instance is the whole clip, one threshold per class for all its frames (Eq. 11).
    ``conf``, ``pred``: (T, H, W) max and argmax of the (possibly aggregated) softmax maps, numpy arrays
    (-> uint8 numpy labels) or tensors (-> a uint8 tensor on their device).
    """
    if instance not in (IMAGE, CLIP):
        raise ValueError(f"instance must be {IMAGE!r} or {CLIP!r}, got {instance!r}")
    if instance == CLIP:
        theta = adaptive_thresholds(conf, pred, theta, cfg.alpha, cfg.beta, cfg.gamma)
        return label_with_thresholds(conf, pred, theta), theta
    labels = (torch.empty(pred.shape, dtype=torch.uint8, device=pred.device) if torch.is_tensor(pred)
              else np.empty(pred.shape, np.uint8))
    for t in range(len(pred)):
        theta = adaptive_thresholds(conf[t], pred[t], theta, cfg.alpha, cfg.beta, cfg.gamma)
        labels[t] = label_with_thresholds(conf[t], pred[t], theta)
    return labels, theta


# --- temporal aggregation (Eq. 10) -------------------------------------------------------------------------------

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


# --- online refinement (Eq. 12, 14): VST refines the labels of each training pair, the analyses measure it ------

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


# --- the generators --------------------------------------------------------------------------------------------

# Threshold rules: class-balanced over the whole set (CBST), instance-adaptive per image (IAST, Eq. 4), or per
# clip (ours, Eq. 11).
CLASS_BALANCED, IMAGE, CLIP = "class_balanced", "image", "clip"
# The predictions a generator thresholds: each frame's own softmax, or the temporally aggregated one (Eq. 10).
SINGLE_FRAME, AGGREGATED = "single", "aggregated"


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

    @property
    def predictions(self):
        """The predictions it thresholds: ``AGGREGATED`` or ``SINGLE_FRAME``."""
        return AGGREGATED if self.aggregate else SINGLE_FRAME


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


def label_stream(maxima, cfg, compute=CPU):
    """Threshold (name, (conf, pred)) items in order with the rule of generator ``cfg.pseudo_label``
    (``videoda.config.PseudoLabels``): yields (name, labels, theta) for each item as soon as it is labelled,
    labels (T, H, W) a uint8 tensor on ``compute``'s device, theta the thresholds after it. Whether the maxima
    are aggregated is the caller's business.

    The adaptive rules carry their thresholds from item to item (Algorithm 1), starting at ``cfg.init_theta``,
    so one item is in memory at a time. CBST's thresholds come from all items at once (Eq. 2's class-balanced
    portion ``cfg.cbst_portion``): ``maxima`` must then be re-iterable (a list, a ``Spill`` view), read for the
    thresholds (``class_balanced_thresholds``), then again to label.
    """
    rule, device, n = generator(cfg.pseudo_label).thresholds, compute.device, cfg.classes.num_classes
    if rule == CLASS_BALANCED:
        if iter(maxima) is maxima:
            raise ValueError("class-balanced thresholds read the maxima twice: a list or a Spill view, not an "
                             "iterator")
        theta = class_balanced_thresholds(maxima, cfg.cbst_portion, n, compute)
        for name, (conf, pred) in maxima:
            yield name, torch.as_tensor(label_with_thresholds(placed(conf, device), placed(pred, device), theta)), theta
        return
    theta = np.full(n, cfg.init_theta)
    for name, (conf, pred) in maxima:
        labels, theta = generate_clip_labels(rule, placed(conf, device), placed(pred, device), theta, cfg)
        yield name, torch.as_tensor(labels), theta


# --- prediction ------------------------------------------------------------------------------------------------

def maxima_of(probs):
    """(confidence float32, argmax uint8) maps (T, H, W) of softmax maps (T, C, H, W), on their device."""
    conf, pred = probs.max(1)
    return conf, pred.to(torch.uint8)


def clip_maxima(model, clip, store, cfg, kinds):
    """{kind: (confidence, argmax) maps (T, H, W)} of one clip's softmax on the model's device, for each of
    ``kinds``: ``SINGLE_FRAME`` (each frame's own) and ``AGGREGATED`` (Eq. 10, with the clip's flows from
    ``store`` and ``cfg.occlusion``). The frames are read and predicted once; one clip's softmax maps are held."""
    images = np.asarray(clip.images[0:len(clip)])     # every frame, read once (a lazy clip reads them here)
    probs = predict_probs(model, images, cfg.batch_size, on_device=True)
    out = {}
    if SINGLE_FRAME in kinds:
        out[SINGLE_FRAME] = maxima_of(probs)
    if AGGREGATED in kinds:
        store.check_clip(clip.name, len(clip), *images.shape[1:3])
        out[AGGREGATED] = maxima_of(aggregate_clip(probs, images, lambda a, b: store.flow(clip.name, a, b),
                                                   cfg.occlusion.alpha, cfg.occlusion.occlusion_threshold))
    return out


# --- the label PNGs -----------------------------------------------------------------------------------------------

def pseudo_label_path(root, clip_name, frame_name):
    """Where a frame's pseudo labels are written: ``<root>/<clip>/<frame>.png``."""
    return Path(root) / clip_name / f"{frame_name}.png"


def read_pseudo_label(root, clip, t):
    """Frame t's pseudo labels (H, W) from the PNGs; a map of another size than the frame is a DataError."""
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


class PseudoLabelFiles:
    """The PNGs under ``root`` as ``{clip name: frames}``, read a pair at a time, never a whole split:
    ``files[name][[a, b]]`` is uint8 (2, H, W). Every frame's file is checked when this is made (its PNG header:
    present, and of the clip's size), so that a missing or wrong file stops the stage before any training."""

    def __init__(self, root, clips):
        self.root, self.clips = root, {c.name: c for c in clips}
        for clip in clips:
            for t in range(len(clip)):
                path = pseudo_label_path(root, clip.name, clip.frame_names[t])
                try:
                    with Image.open(path) as image:
                        size = image.size[::-1]
                except (OSError, ValueError) as e:      # missing, not an image (UnidentifiedImageError)
                    raise DataError(f"{path}: unreadable pseudo label ({e}); rerun the pseudo_labels stage") from e
                if size != tuple(clip.labels.shape[1:]):
                    raise DataError(f"{path}: pseudo label of size {size}, the frame is "
                                    f"{tuple(clip.labels.shape[1:])} (rerun the pseudo_labels stage)")

    def __getitem__(self, name):
        return _PseudoLabelFrames(self.root, self.clips[name])


class _PseudoLabelFrames:
    def __init__(self, root, clip):
        self.root, self.clip = root, clip

    def __getitem__(self, frames):
        return np.stack([read_pseudo_label(self.root, self.clip, t) for t in frames])


# --- the entry point ---------------------------------------------------------------------------------------------

def make_pseudo_labels(model, clips, store, cfg, out, compute=CPU, observer=None, work=None):
    """Algorithm 1 (and the baselines' generators): label ``clips`` with generator ``cfg.pseudo_label``
    (``videoda.config.PseudoLabels``), writing each clip's labels under ``out`` (``<out>/<clip>/<frame>.png``,
    ``out`` must not exist yet) as soon as they are made. Returns the final thresholds (K,) (None on the ranks
    other than 0).

    Prediction, aggregation (Eq. 10) and thresholds run on ``compute``'s device (the model must be there) under
    its autocast (the softmax maps come back as float32). Each clip is predicted once and one clip is in memory
    at a time. What is read more than once (CBST's set-wide thresholds; the observer's arrays) is parked in one
    spill (``spill.shared_spill``) in a temporary folder next to ``out``, removed at the end.

    ``observer`` (``pseudo_label_analysis.PseudoLabelAnalysis``): fed in the same pass, it then gets both the
    single-frame and the aggregated maxima of each clip. ``observer.spill_arrays(clip, maxima)`` -> the arrays
    it parks for the clip (called where the clip is predicted; ``maxima``: ``{SINGLE_FRAME: (conf, pred),
    AGGREGATED: ...}``); ``observer.add(clip, labels)`` on rank 0 in the clips' order, labels a uint8 tensor on
    the device; ``observer.finish(spill, theta, compute)`` on rank 0 after the last clip, the spill still there.

    Several processes (``compute.world``; ``out`` matters on rank 0 only, and its folder must be one every rank
    sees): each rank predicts the clips it owns (``world.shard``, round robin) and parks them in the spill; after
    a barrier rank 0 thresholds them in the clips' order, the one Algorithm 1's EMA (and CBST's set-wide
    thresholds) sees with one process, writes the labels and feeds the observer.

    ``work``: a stage's ``ClipWork`` folder (``videoda.utils.resume``): the spill goes there (one process too) and
    is kept across a kill; a rerun predicts only the clips not done, then thresholds every clip in the clips' order
    from the spill, as above. So a resumed run keeps Algorithm 1's order: the EMA's state is never kept, only each
    clip's maxima, which do not depend on it; the thresholds, labels and analyses are made again from clip 0.
    """
    gen, world = generator(cfg.pseudo_label), compute.world
    kinds = (SINGLE_FRAME, AGGREGATED) if observer is not None else (gen.predictions,)
    keys = (f"{gen.predictions}_conf", f"{gen.predictions}_pred")       # the generator's maxima in the spill
    parked = gen.needs_whole_set or world.distributed or work is not None

    def predicted(clip):
        """(the clip's arrays for the spill, the generator's (confidence, argmax))."""
        maxima = clip_maxima(model, clip, store, cfg, kinds)
        arrays = observer.spill_arrays(clip, maxima) if observer is not None else {}
        if parked:              # the same arrays as the observer's, when it parks them too: written once
            arrays.update(zip(keys, maxima[gen.predictions]))
        return arrays, maxima[gen.predictions]

    def maxima_in_order():      # one process: each clip's labels are made (and written) before the next is predicted
        for clip in compute.progress(clips, description="pseudo labels"):
            arrays, conf_pred = predicted(clip)
            spill.append(clip.name, **arrays)
            yield clip.name, conf_pred

    with compute.autocast(), shared_spill(Path(out).parent if world.is_main else None, compute, kept=work) as spill:
        if parked:
            spill.write_shard([clip.name for clip in clips], lambda i: predicted(clips[i])[0], compute,
                              "pseudo labels")
            if not world.is_main:
                return None
            maxima = spill.view(*keys)
            in_order = compute.progress(clips, description="pseudo labels: thresholds in clip order")
        else:
            maxima, in_order = maxima_in_order(), clips
        theta = None
        for clip, (_, labels, theta) in zip(in_order, label_stream(maxima, cfg, compute)):
            write_clip_pseudo_labels(out, clip, labels.cpu().numpy())
            if observer is not None:
                observer.add(clip, labels)
        if observer is not None:
            observer.finish(spill, theta, compute)
    return theta
