"""``videoda eval``'s scoring of a folder of prediction PNGs against Cityscapes-VPS style ground truth.

Frames are matched by name (``<clip>_<frame index>_...``), grouped into clips in frame order, checked (sizes,
ids; Cityscapes train ids mapped to the class set's with ``gt_ids="cityscapes"``) and scored by the pipeline's
evaluator, ``videoda.metrics.score_clips`` (stage ``evaluate`` uses it too), for a class set
(``videoda.data.classes``; the default: the seed paper's 15). Bad input is a ``DataError``.
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from videoda.data.classes import DEFAULT, IGNORE_ID
from videoda.errors import DataError
from videoda.metrics import score_clips
from videoda.utils.images import read_label_png


def cityscapes_lut(classes=DEFAULT) -> np.ndarray:
    """256-entry lookup Cityscapes train id (0..18, 255) -> the train id of ``classes``; -1 for values that are
    neither."""
    lut = np.full(256, -1, dtype=np.int16)
    for cs_id, train_id in classes.table("cityscapes").items():
        lut[cs_id] = train_id
    return lut


def frame_key(path):
    """Cityscapes-VPS names start ``<clip>_<frame index>_``: return (clip, frame index)."""
    parts = Path(path).stem.split("_")
    if len(parts) < 2 or not parts[1].isdigit():
        raise DataError(f"{path}: file name must start with '<clip>_<frame index>_'")
    return parts[0], int(parts[1])


def match_frames(pred_dir, gt_dir):
    """{clip: [(gt_path, pred_path), ...] in frame order}; the prediction of a gt frame is the PNG with
    the same file name, else the only PNG in ``pred_dir`` whose name starts with the same clip and frame."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for d, what in ((gt_dir, "--gt"), (pred_dir, "--pred")):
        if not d.is_dir():
            raise DataError(f"{d}: {what} folder not found")
    gt_paths = sorted(gt_dir.glob("*.png"))
    if not gt_paths:
        raise DataError(f"{gt_dir}: no ground-truth PNGs")
    by_key = defaultdict(list)
    for p in sorted(pred_dir.glob("*.png")):
        try:
            by_key[frame_key(p)].append(p)
        except DataError:
            pass  # only reachable by exact name
    clips, seen = defaultdict(list), {}
    for g in gt_paths:
        key = frame_key(g)
        if key in seen:
            raise DataError(f"{g}: same clip and frame index as {seen[key]}")
        seen[key] = g
        pred = pred_dir / g.name
        if not pred.is_file():
            cands = by_key.get(key, [])
            if len(cands) != 1:
                why = "several candidates " + ", ".join(c.name for c in cands) if cands else "no prediction"
                raise DataError(f"{pred}: {why} for ground truth {g} "
                                f"(expected {g.name} or one '{key[0]}_{g.stem.split('_')[1]}_*.png')")
            pred = cands[0]
        clips[key[0]].append((key[1], g, pred))
    return {c: [(g, p) for _, g, p in sorted(v)] for c, v in sorted(clips.items())}


def load_pair(gt_path, pred_path, lut=None, num_classes=DEFAULT.num_classes):
    gt, pred = read_label_png(gt_path), read_label_png(pred_path)
    if gt.shape != pred.shape:
        raise DataError(f"{pred_path}: size {pred.shape[::-1]} does not match ground truth {gt_path} {gt.shape[::-1]}")
    if lut is not None:
        unknown = np.unique(gt[(gt > 255) | (lut[np.minimum(gt, 255)] < 0)])
        if unknown.size:
            raise DataError(f"{gt_path}: values {unknown.tolist()[:10]} are not Cityscapes train ids 0..18 or 255")
        gt = lut[gt].astype(np.uint8)
    bad = (gt >= num_classes) & (gt != IGNORE_ID)
    if bad.any():
        raise DataError(f"{gt_path}: ids {sorted(np.unique(gt[bad]).tolist())[:10]} are not train ids "
                        f"0..{num_classes - 1} or {IGNORE_ID} (use --gt-ids cityscapes for Cityscapes train ids)")
    if pred.max() >= num_classes:
        raise DataError(f"{pred_path}: predicted ids {sorted(np.unique(pred[pred >= num_classes]).tolist())[:10]} "
                        f"are not train ids 0..{num_classes - 1}")
    return pred, gt


def evaluate_folder(pred_dir, gt_dir, gt_ids="train", label_stride=5, classes=DEFAULT):
    """Score a folder of prediction PNGs against a folder of ground truth (``gt_ids``: "train" for the train ids of
    the class set ``classes``, "cityscapes" for Cityscapes train ids); returns the report dict written by
    ``videoda eval``: ``score_clips``'s report, the class set's name and how many frames and clips were scored."""
    lut = cityscapes_lut(classes) if gt_ids == "cityscapes" else None
    clips = match_frames(pred_dir, gt_dir)

    def loaded():
        for name, pairs in clips.items():
            steps = np.diff([frame_key(g)[1] for g, _ in pairs])
            if len(set(steps.tolist())) > 1:
                print(f"warning: clip {name} has irregular annotated frame steps {steps.tolist()}", file=sys.stderr)
            frames = [load_pair(g, p, lut, classes.num_classes) for g, p in pairs]
            if len({f[0].shape for f in frames}) > 1:
                raise DataError(f"{pairs[0][0]}: frames of clip {name} differ in size")
            yield np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])

    report, _ = score_clips(loaded(), label_stride, classes)
    extra = {} if classes == DEFAULT else {"classes": classes.name}    # the default's report is as it always was
    return {**report, **extra, "frames": sum(map(len, clips.values())), "clips": len(clips)}
