"""Evaluation on target validation clips: mIoU (Table 1) and VPQ^s (Table 2) from one metric module."""

import shutil

import numpy as np
import torch

from videoda.choices import PREDICT_BATCH_SIZE, RESOLUTIONS
from videoda.data.classes import DEFAULT
from videoda.errors import DataError, ParamError
from videoda.metrics import clip_counts, score_counts
from videoda.model import load_checkpoint, normalize
from videoda.utils.device import CPU
from videoda.utils.images import write_ids, write_rgb
from videoda.utils.shards import in_clip_order

@torch.no_grad()
def predict_probs(model, images, batch_size=PREDICT_BATCH_SIZE, on_device=False):
    """uint8 frames (N, H, W, 3) -> softmax maps (N, C, H, W), float32 tensor on the CPU, or on the model's
    device with ``on_device`` (the model runs on its own device, under the caller's autocast if any:
    ``Runtime.autocast``; the softmax is taken in float32)."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.device("cpu") if not on_device else device
    return torch.cat([model(normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)))
                      .float().softmax(1).to(out) for i in range(0, len(images), batch_size)])


def predict(model, images, batch_size=PREDICT_BATCH_SIZE):
    """uint8 frames (N, H, W, 3) -> predicted train ids (N, H, W) uint8."""
    return predict_probs(model, images, batch_size).argmax(1).to(torch.uint8).numpy()


def predict_frames(model, images, frames, batch_size=PREDICT_BATCH_SIZE):
    """Predicted train ids (N, H, W) uint8 of ``images[frames]`` (a clip's frames, e.g. a lazy ``FrameArray``),
    reading ``batch_size`` frames at a time: the same forward passes as ``predict(model, images[frames])``."""
    frames = np.asarray(frames, np.int64)
    if not len(frames):
        return np.zeros((0, *images.shape[1:3]), np.uint8)
    return np.concatenate([predict(model, images[frames[i:i + batch_size]], batch_size)
                           for i in range(0, len(frames), batch_size)])


@torch.no_grad()
def predict_at(model, images, size, batch_size=PREDICT_BATCH_SIZE):
    """uint8 frames (N, H, W, 3) -> train ids (N, *size) uint8 at another resolution ``size`` = (H0, W0): each
    frame's logits upsampled bilinearly from the output stride straight to ``size``, corners aligned
    (``DeepLabV2.coarse_logits``; DA-VSN's evaluation: ``nn.Upsample(align_corners=True)``), then the argmax.
    ``batch_size`` frames a forward pass, then one frame's (C, H0, W0) float map at a time: the memory of one
    full-resolution frame, whatever N."""
    model.eval()
    net = getattr(model, "module", model)
    device = next(model.parameters()).device
    out = np.empty((len(images), *size), np.uint8)
    for i in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device))
        coarse = net.coarse_logits(x)
        for j in range(len(coarse)):
            logits = torch.nn.functional.interpolate(coarse[j:j + 1].float(), size=tuple(size), mode="bilinear",
                                                     align_corners=True)
            out[i + j] = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
            del logits
    return out


def predict_and_count(model, clip, cfg):
    """A clip's annotated frames predicted and counted (``clip_counts``) at ``cfg.resolution`` (``RESOLUTIONS``;
    ``cfg``: ``videoda.config.Evaluate`` or a trainer's ``Validation``): (predictions (N, h, w) uint8, counts).

    ``labels``: against ``clip.original_labels`` (the label files' resolution, kept by ``prepare``; the clip's own
    labels where it has none, its label files being at the prepared resolution), predicted by ``predict_at`` and
    counted a frame at a time: the counts add up to those of the whole clip (the confusion matrix is a sum, VPQ's
    per-frame counts are stacked), so memory holds one full-resolution float map, one label map and the clip's
    uint8 predictions."""
    idx, stride, n = np.flatnonzero(clip.labeled), cfg.label_stride, cfg.classes.num_classes
    resolution = cfg.resolution
    if resolution == "prepared" or not len(idx):
        preds = predict_frames(model, clip.images, idx, cfg.batch_size)
        return preds, clip_counts(preds, clip.labels[idx], stride, n)
    if resolution != "labels":
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    original = clip.original_labels
    size = (original if original is not None else clip.labels).shape[1:]
    preds = np.concatenate([predict_at(model, clip.images[idx[i:i + cfg.batch_size]], size, cfg.batch_size)
                            for i in range(0, len(idx), cfg.batch_size)])
    parts = [clip_counts(preds[k:k + 1], original[k:k + 1] if original is not None else clip.labels[t:t + 1],
                         stride, n) for k, t in enumerate(idx)]
    counts = {"confusion": sum(p["confusion"] for p in parts),
              "joint": np.concatenate([p["joint"] for p in parts]),
              "pred_all": np.concatenate([p["pred_all"] for p in parts])}
    return preds, counts


def evaluate_clips(model, clips, cfg, pred_dir=None, compute=CPU, shards=None, description="evaluate"):
    """Score a model on the annotated frames of each clip, with ``cfg`` (``videoda.config.Evaluate``: the class set
    ``classes``, the frames between annotated frames ``label_stride``, ``batch_size``); optionally write the
    predictions as PNGs.

    Clips are read one at a time, their frames ``cfg.batch_size`` at a time (the model predicts under the
    caller's autocast, if any). Returns the report ``{"miou", "iou", "vpq"}`` and the confusion matrix (rows:
    ground truth), from ``videoda.metrics.score_counts`` as ``videoda eval`` scores prediction PNGs.

    Several processes (``compute.world``; ``shards``: a folder every rank sees, ``videoda.utils.shards``): each rank
    predicts its share of the clips, writing each clip's pixel counts and prediction PNGs to ``shards``; rank 0
    then adds the counts in clip order (the float sums of one process, in its order) and copies the PNGs (the bytes
    one process writes) to ``pred_dir``. The other ranks return None. With one process, ``shards`` (a stage's
    ``ClipWork`` folder) keeps each clip's result the same way, so that a rerun after a kill predicts only the
    clips not done.
    """
    world, label_stride, classes = compute.world, cfg.label_stride, cfg.classes

    def predicted(index, clip):
        idx = np.flatnonzero(clip.labeled)
        preds, counts = predict_and_count(model, clip, cfg)      # at cfg.resolution
        png_dir = shards if shards is not None else pred_dir
        if png_dir is not None:
            for name, pred in zip(clip.frame_names[idx], preds):
                write_ids(png_dir / f"{name}.png", pred)
        return counts

    def merged():
        for index, counts in in_clip_order(clips, predicted, compute, shards, description=description):
            if shards is not None and pred_dir is not None:   # rank 0: this clip's PNGs, as its rank wrote them
                clip = clips[index]
                for name in clip.frame_names[np.flatnonzero(clip.labeled)]:
                    shutil.copyfile(shards / f"{name}.png", pred_dir / f"{name}.png")   # kept for a rerun
            yield counts

    result = score_counts(merged(), label_stride, classes)
    return result if world.is_main else None


def qualitative_strip(model, clips, n_rows, classes=DEFAULT):
    """One row per clip (its first annotated frame): input | prediction | ground truth, colourised, RGB."""
    rows = []
    for clip in clips[:n_rows]:
        t = int(np.flatnonzero(clip.labeled)[0])
        pred = predict(model, clip.images[t:t + 1])[0]
        rows.append(np.concatenate([clip.images[t], classes.colorize(pred), classes.colorize(clip.labels[t])],
                                   axis=1))
    return np.concatenate(rows, axis=0)


def checkpoint_spec(spec):
    """A ``--model`` option of stage ``evaluate``, ``NAME=PATH`` -> (name, path)."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ParamError(f"--model {spec!r}: expected NAME=PATH")
    return name, path


def evaluate_models(checkpoints, clips, pred_root, fig_root, cfg, compute=CPU, shards=None):
    """Score each ``(name, checkpoint path)`` on ``clips`` with ``cfg`` (``videoda.config.Evaluate``), predicting on
    ``compute``'s device in its precision (a ``videoda.utils.device.Runtime``): writes each
    model's predictions as ``pred_root/<name>/<frame>.png``, its qualitative strip ``fig_root/<name>_strip.png``
    and every confusion matrix to ``fig_root/confusion.npz`` (the folders must exist). Returns {name: report}
    with ``final``, the selected method's model (``evaluate.final_model``, set by ``conf/method/``), when it was
    evaluated.

    Several processes (``compute.world``), or a stage that resumes (``shards``: its ``ClipWork`` folder): the clips'
    results go through the folder ``shards/<name>`` (``evaluate_clips``); rank 0 alone writes (``pred_root``,
    ``fig_root``: None on the other ranks, which return None) and draws the strips: the files of one process."""
    world = compute.world
    metrics, confusion = {}, {}
    for name, path in checkpoints:
        model = compute.module(load_checkpoint(path, map_location=compute.device)[0])
        check_num_classes(model, cfg.classes, path)
        pred_dir = pred_root / name if world.is_main else None
        if pred_dir is not None:
            pred_dir.mkdir(parents=True)
        with compute.autocast():
            scored = evaluate_clips(model, clips, cfg, pred_dir, compute, shards / name if shards is not None else None,
                                    description=f"evaluate {name}")
            if not world.is_main:
                continue
            metrics[name], confusion[name] = scored
            strip = qualitative_strip(model, clips, cfg.strip_rows, cfg.classes)
        write_rgb(fig_root / f"{name}_strip.png", strip)
    if not world.is_main:
        return None
    np.savez(fig_root / "confusion.npz", **confusion)
    if cfg.final_model in metrics:
        metrics["final"] = metrics[cfg.final_model]
    return metrics


def check_num_classes(model, classes, path, key="params.yaml: classes"):
    """A model must predict the class set's classes: a checkpoint of another set is a DataError naming it, both
    counts and ``key``, where the set was chosen (the stages' param; ``videoda eval/segment``'s option)."""
    n = getattr(model, "module", model).config["num_classes"]
    if n != classes.num_classes:
        raise DataError(f"{path}: the model predicts {n} classes, which does not match the class set "
                        f"{classes.name!r} of {classes.num_classes} ({key})")


def headline_scores(metrics):
    """The headline of ``metrics`` (``evaluate_models``' report): mIoU and mean VPQ^s per model, for
    ``reports/scores.json``, the columns ``dvc exp show`` leads with (docs/guides/experiments.md). ``final`` is left
    out: it repeats the method's model."""
    return {name: {"mIoU": m["miou"], "VPQ": m["vpq"]["mean"]} for name, m in metrics.items() if name != "final"}
