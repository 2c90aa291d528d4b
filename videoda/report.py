"""The visual report (stage `report`): figures of the pipeline's results, drawn with numpy and OpenCV only.

``build_report`` writes one folder (atomically) holding ``index.md``, which embeds every figure by a relative
link, so it renders offline in any markdown viewer and on GitHub:

- ``iou_per_class.png``: grouped horizontal bars of each model's per-class IoU, mIoU in the legend;
- ``confusion_<model>.png``: each model's row-normalised confusion matrix (recall, % of ground-truth pixels);
- ``pseudo_labels.png``: annotated target-train frames t: frame | pseudo label as generated | after cut-out
  refinement (Eq. 12) | after fill-in refinement (Eq. 14) | ground truth, each label map with its precision
  against the ground truth and the share of pixels it labels (the paper's Figures 3, 5, 7);
- ``predictions.mp4`` and ``predictions_middle.png`` (its middle frame): a target-val clip, input | baseline
  prediction | model prediction, every frame, upscaled (nearest) by ``report.video_scale``;
- ``classes.png``: the colour of each class.

Every number in the figures and in ``index.md`` is read from the pipeline's outputs. The PNGs are a pure
function of the inputs (byte-identical on a rerun); the mp4 container may differ in its metadata.
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from videoda.data.classes import CLASSES, IGNORE_ID, NUM_CLASSES, PALETTE, colorize
from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_labels import (cutout_refine, fillin_refine, label_precision,
                                                     read_pseudo_label)
from videoda.errors import DataError, ParamError
from videoda.evaluate import predict
from videoda.flow.store import FlowStore
from videoda.flow.warp import flow_to_tensor
from videoda.model import load_checkpoint
from videoda.params import Section
from videoda.utils.io import atomic_path

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, WHITE, GREY, LIGHT = (0, 0, 0), (255, 255, 255), (110, 110, 110), (235, 235, 235)
# Model colours (BGR), tab10's blue, orange, green, red, purple, brown, pink, olive, cyan.
MODEL_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
                 (194, 119, 227), (34, 189, 188), (207, 190, 23)]
MODEL_ORDER = ("source_only", "vat", "vst", "oracle")   # the pipeline's order; other models follow, as in the file
PREDICT_BATCH = 16
GAP = 6                                                   # pixels between the panels of a figure

PSEUDO_COLUMNS = ("frame t", "pseudo label (generated)", "cut-out (Eq. 12)", "fill-in (Eq. 14)", "ground truth")


@dataclass
class ReportConfig:
    pseudo_frames: int = 3          # annotated target-train frames in the pseudo-label figure
    video_clip: int = 0             # index of the target-val clip of the video
    video_scale: int = 4            # nearest-neighbour upscaling of the video
    figure_scale: int = 2           # nearest-neighbour upscaling of the pseudo-label figure
    fps: int = 10
    threads: int = 1
    tau: int = 1                    # flow.tau: the reference frame of the refinements is t - tau
    occ_alpha: float = 2.0          # flow.alpha (Eq. 10's occlusion mask, used by fill-in)
    occ_threshold: float = 0.7      # flow.occlusion_threshold


def report_config(params):
    """The ``report`` section of params.yaml, with the ``flow`` keys the refinements read."""
    r, f = Section(params, "report"), Section(params, "flow")
    return ReportConfig(
        pseudo_frames=r.int("pseudo_frames", lo=1, hi=50), video_clip=r.int("video_clip", lo=0),
        video_scale=r.int("video_scale", lo=1, hi=16), figure_scale=r.int("figure_scale", lo=1, hi=16),
        fps=r.int("fps", lo=1, hi=120), threads=r.int("threads", lo=1),
        tau=f.int("tau", lo=1), occ_alpha=f.float("alpha", lo=0.0),
        occ_threshold=f.float("occlusion_threshold", lo=0.0, hi=1.0))


# --- drawing primitives ---------------------------------------------------------------------------------------

def text_size(s, scale=0.45, thickness=1):
    """(width, height above the baseline, depth below it) of ``s`` in pixels."""
    (w, h), base = cv2.getTextSize(s, FONT, scale, thickness)
    return w, h, base


def put_text(img, s, x, y, scale=0.45, colour=BLACK, thickness=1, align="left"):
    """Draw ``s`` with its baseline at ``y``; ``align`` left / center / right about ``x``."""
    w = text_size(s, scale, thickness)[0]
    x = x - w // 2 if align == "center" else x - w if align == "right" else x
    cv2.putText(img, s, (int(x), int(y)), FONT, scale, colour, thickness, cv2.LINE_AA)


def canvas(h, w):
    return np.full((h, w, 3), 255, np.uint8)


def upscale(img, scale):
    """Nearest-neighbour upscaling by an integer factor (exact pixel replication)."""
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def bgr(rgb):
    return np.ascontiguousarray(rgb[..., ::-1])


def vertical_text(s, height, scale=0.4):
    """A white strip ``height`` pixels wide holding ``s``, rotated to read bottom-up, starting at its bottom."""
    w, h, base = text_size(s, scale)
    strip = canvas(height, w + 4)
    put_text(strip, s, 2, (height + h) // 2, scale)
    return cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)


def paste(dst, src, x, y):
    dst[y:y + src.shape[0], x:x + src.shape[1]] = src


def fmt(v, digits=2):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


# --- figures --------------------------------------------------------------------------------------------------

def ordered_models(names):
    """The evaluated models in display order; ``final`` (evaluate's alias of the selected method's model,
    ``videoda/presets.py``) is left out, since its model is shown under its own name."""
    names = [n for n in names if n != "final"]
    return [n for n in MODEL_ORDER if n in names] + [n for n in names if n not in MODEL_ORDER]


def iou_bars(metrics):
    """Grouped horizontal bars: per class, one bar per model of ``metrics`` (its per-class IoU, %); BGR."""
    models = ordered_models(metrics)
    bar, group_gap, px = 10, 10, 4                          # bar height, space between groups, pixels per point
    label_w = max(text_size(c, 0.45)[0] for c in CLASSES) + 14
    left, plot_w, right = label_w, 100 * px, 44
    legend = [f"{m}  (mIoU {fmt(metrics[m].get('miou'))})" for m in models]
    title_h, legend_h = 34, 20 * len(models) + 8
    top = title_h + legend_h + 22                           # axis ticks above the plot
    group_h = bar * len(models) + group_gap
    height = top + NUM_CLASSES * group_h + 24
    width = max(left + plot_w + right, max(text_size(s, 0.45)[0] for s in legend) + left + 40)
    img = canvas(height, width)
    put_text(img, "Per-class IoU (%) on the target-val clips", 10, 22, 0.55, thickness=1)
    for i, (m, s) in enumerate(zip(models, legend)):
        y = title_h + 20 * i
        cv2.rectangle(img, (left, y + 3), (left + 22, y + 15), MODEL_COLOURS[i % len(MODEL_COLOURS)], -1)
        put_text(img, s, left + 30, y + 14, 0.45)
    bottom = top + NUM_CLASSES * group_h
    for c in range(NUM_CLASSES):                              # alternate light bands behind the groups
        if c % 2 == 0:
            cv2.rectangle(img, (0, top + c * group_h), (left + plot_w + right - 1, top + (c + 1) * group_h - 1),
                          (246, 246, 246), -1)
    for tick in range(0, 101, 20):
        x = left + tick * px
        cv2.line(img, (x, top - 4), (x, bottom), (205, 205, 205), 1)
        put_text(img, str(tick), x, top - 8, 0.4, GREY, align="center")
        put_text(img, str(tick), x, bottom + 16, 0.4, GREY, align="center")
    for c, name in enumerate(CLASSES):
        y0 = top + c * group_h + group_gap // 2
        put_text(img, name, left - 8, y0 + bar * len(models) // 2 + 5, 0.45, align="right")
        for i, m in enumerate(models):
            v = metrics[m].get("iou", {}).get(name)
            y = y0 + i * bar
            if v is None:
                put_text(img, "n/a", left + 3, y + bar - 1, 0.33, GREY)
                continue
            x1 = left + int(round(v * px))
            if x1 > left:
                cv2.rectangle(img, (left, y), (x1 - 1, y + bar - 2), MODEL_COLOURS[i % len(MODEL_COLOURS)], -1)
            put_text(img, f"{v:.1f}", x1 + 3, y + bar - 2, 0.33, (60, 60, 60))
    cv2.line(img, (left, top - 4), (left, bottom), BLACK, 1)
    return img


def row_normalize(cm):
    """Row-normalised confusion matrix (rows: ground truth): each row divided by its sum (the recall of the
    class on the diagonal); a row with no ground-truth pixel is NaN."""
    cm = np.asarray(cm, np.float64)
    sums = cm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, cm / np.where(sums > 0, sums, 1), np.nan)


def _viridis():
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)[:, 0]


def confusion_image(cm, title, cell=34):
    """A row-normalised confusion matrix as a heat map (values in %), class names on both axes; BGR."""
    norm = row_normalize(cm)
    k = norm.shape[0]
    names = CLASSES if k == NUM_CLASSES else tuple(str(i) for i in range(k))
    lut = _viridis()
    name_w = max(text_size(n, 0.42)[0] for n in names) + 10
    left = 28 + name_w                                        # axis title strip + class names
    top = 36 + 20 + name_w                                    # title, axis title, rotated class names
    grid = cell * k
    bar_x = left + grid + 18
    width = max(bar_x + 16 + 40, text_size(title, 0.5)[0] + 20)
    img = canvas(top + grid + 12, width)
    put_text(img, title, 10, 22, 0.5)
    put_text(img, "predicted class", left + grid // 2, 50, 0.45, align="center")
    axis = vertical_text("ground-truth class", 22, 0.45)
    paste(img, axis, 4, top + (grid - axis.shape[0]) // 2)
    for i, n in enumerate(names):
        put_text(img, n, left - 6, top + i * cell + cell // 2 + 5, 0.42, align="right")
        strip = vertical_text(n, cell, 0.42)
        paste(img, strip, left + i * cell, top - 4 - strip.shape[0])
    for i in range(k):
        for j in range(k):
            v = norm[i, j]
            x, y = left + j * cell, top + i * cell
            if np.isnan(v):
                cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), (215, 215, 215), -1)
                continue
            colour = tuple(int(c) for c in lut[int(round(v * 255))])
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), colour, -1)
            if cm[i, j] > 0:
                s = f"{100 * v:.0f}" if 100 * v >= 0.5 else "<1"
                put_text(img, s, x + cell // 2, y + cell // 2 + 4, 0.36, BLACK if v > 0.55 else WHITE,
                         align="center")
    for i in range(k):                                        # outline the diagonal (the recall of each class)
        cv2.rectangle(img, (left + i * cell, top + i * cell), (left + (i + 1) * cell - 1, top + (i + 1) * cell - 1),
                      WHITE, 1)
    cv2.rectangle(img, (left - 1, top - 1), (left + grid, top + grid), BLACK, 1)
    for y in range(grid):                                     # colour bar, 100% at the top
        colour = tuple(int(c) for c in lut[int(round(255 * (1 - y / max(grid - 1, 1))))])
        cv2.line(img, (bar_x, top + y), (bar_x + 12, top + y), colour, 1)
    for pct in (0, 50, 100):
        y = top + int(round((1 - pct / 100) * (grid - 1)))
        put_text(img, f"{pct}%", bar_x + 16, y + 4, 0.38, GREY)
    return img


def class_legend(columns=4):
    """The colour of each class (as ``colorize`` draws it) and of void / unlabelled pixels; BGR."""
    entries = [(n, tuple(int(c) for c in PALETTE[i][::-1])) for i, n in enumerate(CLASSES)]
    entries.append(("void / no label", BLACK))
    col_w = max(text_size(n, 0.45)[0] for n, _ in entries) + 48
    rows = -(-len(entries) // columns)
    img = canvas(34 + rows * 26 + 6, 10 + columns * col_w)
    put_text(img, "Class colours", 10, 22, 0.55)
    for i, (name, colour) in enumerate(entries):
        x, y = 10 + (i // rows) * col_w, 34 + (i % rows) * 26
        cv2.rectangle(img, (x, y), (x + 30, y + 18), colour, -1)
        cv2.rectangle(img, (x, y), (x + 30, y + 18), GREY, 1)
        put_text(img, name, x + 38, y + 14, 0.45)
    return img


# --- pseudo labels --------------------------------------------------------------------------------------------

def select_frames(clips, n, tau):
    """``n`` annotated frames t >= tau, evenly spread over the clips' candidates in order: (clip index, t).

    Of the N candidates (clips in order, frames in order), candidate floor((2i + 1) N / 2n) for i < n, the middle
    of n equal runs; all of them when n >= N.
    """
    cands = [(ci, int(t)) for ci, clip in enumerate(clips) for t in np.flatnonzero(clip.labeled) if t >= tau]
    if not cands:
        raise DataError(f"no annotated target-train frame t >= tau = {tau}: nothing to show")
    n = min(n, len(cands))
    return [cands[(2 * i + 1) * len(cands) // (2 * n)] for i in range(n)]


def refined_labels(clip, pseudo_root, store, t, cfg):
    """The label maps of frame t: generated, cut-out refined (Eq. 12), fill-in refined (Eq. 14), each (H, W)
    uint8, with frame t - tau as the reference (flow F_{t -> t - tau}), as stage `vst` refines them."""
    ref = t - cfg.tau
    labels, ref_labels = (read_pseudo_label(pseudo_root, clip, i).astype(np.uint8) for i in (t, ref))
    flow = flow_to_tensor(store.flow(clip.name, t, ref))
    lab = torch.from_numpy(labels[None]).long()
    ref_lab = torch.from_numpy(ref_labels[None]).long()
    images = torch.from_numpy(clip.images[[t]]).permute(0, 3, 1, 2)
    ref_images = torch.from_numpy(clip.images[[ref]]).permute(0, 3, 1, 2)
    cut = cutout_refine(lab, ref_lab, flow)[0].numpy().astype(np.uint8)
    fill = fillin_refine(lab, ref_lab, flow, images, ref_images, cfg.occ_alpha, cfg.occ_threshold)
    return labels, cut, fill[0].numpy().astype(np.uint8)


def label_stats(labels, gt):
    """(precision vs the ground truth, or NaN; share of all pixels labelled), both in %."""
    precision, _ = label_precision(labels, gt)
    return 100 * precision, 100 * float((labels != IGNORE_ID).mean())


def panel_origin(row, col, h, w, scale, header=56, caption=20, footer=40):
    """Top-left pixel of panel (row, col) of the pseudo-label figure (panels are h*scale x w*scale)."""
    row_h = caption + h * scale + footer
    return GAP + col * (w * scale + GAP), header + row * row_h + caption


def pseudo_figure(rows, scale, tau):
    """rows: dicts with ``image`` (H, W, 3) RGB, ``labels`` (three (H, W) maps: generated, cut-out, fill-in),
    ``gt`` (H, W) and ``caption``. One figure row per frame, five columns; BGR."""
    h, w = rows[0]["gt"].shape
    pw, ph = w * scale, h * scale
    last_x, last_y = panel_origin(len(rows) - 1, len(PSEUDO_COLUMNS) - 1, h, w, scale)
    img = canvas(last_y + ph + 40, last_x + pw + GAP)
    put_text(img, f"Pseudo labels of annotated target-train frames t; refinements use frame t - {tau} "
                  f"(tau = {tau})", GAP, 20, 0.5)
    for col, name in enumerate(PSEUDO_COLUMNS):
        x, _ = panel_origin(0, col, h, w, scale)
        put_text(img, name, x + pw // 2, 48, 0.45, align="center")
    for r, row in enumerate(rows):
        x0, y0 = panel_origin(r, 0, h, w, scale)
        put_text(img, row["caption"], x0, y0 - 6, 0.42, GREY)
        panels = [bgr(row["image"])] + [bgr(colorize(m)) for m in row["labels"]] + [bgr(colorize(row["gt"]))]
        for col, panel in enumerate(panels):
            x, y = panel_origin(r, col, h, w, scale)
            paste(img, upscale(panel, scale), x, y)
            if 1 <= col <= 3:
                precision, labelled = label_stats(row["labels"][col - 1], row["gt"])
                put_text(img, f"precision {fmt(precision, 1)}%", x, y + ph + 15, 0.4)
                put_text(img, f"labelled {labelled:.1f}%", x, y + ph + 32, 0.4, GREY)
            elif col == 4:
                put_text(img, f"annotated {100 * float((row['gt'] != IGNORE_ID).mean()):.1f}%", x, y + ph + 15,
                         0.4, GREY)
    return img


# --- video ----------------------------------------------------------------------------------------------------

def video_frame(image, preds, titles, scale, header=26):
    """input | colourised prediction per model, upscaled by ``scale``, titles above; BGR, even sizes."""
    panels = [upscale(bgr(image), scale)] + [upscale(bgr(colorize(p)), scale) for p in preds]
    ph, pw = panels[0].shape[:2]
    width = len(panels) * pw + (len(panels) + 1) * GAP
    height = header + ph + GAP
    img = canvas(height + height % 2, width + width % 2)
    for i, (panel, title) in enumerate(zip(panels, titles)):
        x = GAP + i * (pw + GAP)
        paste(img, panel, x, header)
        put_text(img, title, x + pw // 2, header - 8, 0.5, align="center")
    return img


def write_video(path, frames, fps):
    """Write BGR frames (all of one size) as an mp4 (codec mp4v)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write an mp4v video here")
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()


# --- inputs and the markdown ----------------------------------------------------------------------------------

def _require(path, what, stage):
    path = Path(path)
    ok = path.is_dir() if what == "folder" else path.is_file()
    if not ok:
        raise DataError(f"{path}: {what} not found (run the {stage} stage)")
    return path


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable JSON file ({e})") from e


def read_metrics(path):
    metrics = read_json(path)
    if not isinstance(metrics, dict) or not metrics or not all(
            isinstance(v, dict) and isinstance(v.get("iou"), dict) and "miou" in v for v in metrics.values()):
        raise DataError(f"{path}: expected {{model: {{miou, iou, vpq}}}} as stage evaluate writes it")
    return metrics


def read_confusion(path, models):
    try:
        with np.load(path, allow_pickle=False) as z:
            mats = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable npz file ({e})") from e
    for m in models:
        if m not in mats:
            raise DataError(f"{path}: no confusion matrix for model '{m}' of the metrics (rerun stage evaluate)")
        if mats[m].shape != (NUM_CLASSES, NUM_CLASSES):
            raise DataError(f"{path}: the matrix of '{m}' is {mats[m].shape}, expected "
                            f"{(NUM_CLASSES, NUM_CLASSES)}")
    return {m: mats[m] for m in models}


def _pick(d, path, *keys):
    node = d
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise DataError(f"{path}: '{'.'.join(keys)}' is missing (rerun stage pseudo_labels)")
        node = node[k]
    return node


def safe_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def index_markdown(metrics, pseudo, pseudo_path, files, sources, cfg, video):
    """The report's index.md: tables of numbers from the inputs, and every figure by a relative link."""
    models = ordered_models(metrics)
    lines = ["# Visual report", "",
             "Generated by stage `report` (`stages/report.py`) from " + ", ".join(f"`{s}`" for s in sources) + ".",
             "", "## Results on the target-val clips", "",
             "| model | mIoU | VPQ^s mean | VPQ^s k=0 | k=5 | k=10 | k=15 |", "|---|---|---|---|---|---|---|"]
    for m in models:
        vpq = metrics[m].get("vpq") or {}
        lines.append(f"| {m} | {fmt(metrics[m].get('miou'))} | {fmt(vpq.get('mean'))} | "
                     + " | ".join(fmt(vpq.get(k)) for k in ("k0", "k5", "k10", "k15")) + " |")
    lines += ["", "### Per-class IoU", "", f"![Per-class IoU of every model]({files['iou']})", "",
              "### Confusion matrices", "",
              "Row-normalised: each row is one ground-truth class and sums to 100%, so the diagonal is the "
              "class's recall; an empty cell had no pixel, '<1' means under 0.5%, a grey row is a class absent "
              "from the ground truth.", ""]
    for m in models:
        lines += [f"**{m}**", "", f"![Confusion matrix of {m}]({files['confusion'][m]})", ""]
    eq = _pick(pseudo, pseudo_path, "equal_proportion")
    cut = _pick(pseudo, pseudo_path, "cutout_refinement")
    lines += ["## Pseudo labels (target-train)", "",
              f"Generator `{_pick(pseudo, pseudo_path, 'generator')}`, from `{pseudo_path}`:", "",
              "| measure | value |", "|---|---|",
              f"| pixels labelled (proportion) | {fmt(_pick(pseudo, pseudo_path, 'proportion'))}% |",
              f"| P-mIoU (labelled pixels vs ground truth, Table 7) | {fmt(_pick(pseudo, pseudo_path, 'p_miou'))} |",
              f"| equal proportion ({fmt(_pick(eq, pseudo_path, 'proportion'))}% of the annotated pixels): "
              f"P-mIoU single-frame / aggregated (Eq. 10) | {fmt(_pick(eq, pseudo_path, 'single_frame_p_miou'))}"
              f" / {fmt(_pick(eq, pseudo_path, 'aggregated_p_miou'))} |",
              f"| cut-out refinement (Eq. 12): precision before / after | "
              f"{fmt(_pick(cut, pseudo_path, 'precision_before'))}% / {fmt(_pick(cut, pseudo_path, 'precision_after'))}% |",
              f"| cut-out refinement: labelled pixels before / after | {_pick(cut, pseudo_path, 'pixels_before')} / "
              f"{_pick(cut, pseudo_path, 'pixels_after')} |", "",
              f"{len(files['pseudo_rows'])} annotated frames t, evenly spread over the clips; the refinements use "
              f"frame t - {cfg.tau} and the flow F(t -> t - {cfg.tau}) (fill-in: occlusion alpha {cfg.occ_alpha:g}, "
              f"threshold {cfg.occ_threshold:g}). Under each label map: *precision*, the share of its labelled pixels "
              "that agree with the ground truth (where both exist), and *labelled*, the share of all pixels it "
              "labels. Black: void / no label.", "",
              f"![Pseudo labels: frame, generated, cut-out, fill-in, ground truth]({files['pseudo']})", "",
              "## Predictions on a target-val clip", "",
              f"Clip `{video['clip']}` ({video['frames']} frames at {cfg.fps} fps, x{cfg.video_scale}): input | "
              f"`{video['baseline']}` | `{video['model']}`. Video: [{files['video']}]({files['video']}); "
              f"below, its middle frame ({video['middle']}).", "",
              f"[![Middle frame of the prediction video]({files['still']})]({files['video']})", "",
              "## Class colours", "", f"![Class colours]({files['legend']})", ""]
    return "\n".join(lines)


def model_name(path):
    return Path(path).stem


def build_report(out, *, metrics_path, confusion_path, pseudo_report_path, pseudo_root, data_root, flow_path,
                 baseline_path, model_path, cfg, progress=lambda xs, **_: xs):
    """Write the report folder ``out`` (atomically: on any error nothing is left there)."""
    _require(metrics_path, "metrics file", "evaluate")
    _require(confusion_path, "confusion-matrix file", "evaluate")
    _require(pseudo_report_path, "pseudo-label report", "pseudo_labels")
    _require(pseudo_root, "folder", "pseudo_labels")
    _require(flow_path, "flow file", "flow")
    for p in (baseline_path, model_path):
        if not Path(p).is_file():
            raise DataError(f"{p}: checkpoint file not found (run the stage that trains it)")
    metrics = read_metrics(metrics_path)
    models = ordered_models(metrics)
    confusion = read_confusion(confusion_path, models)
    pseudo = read_json(pseudo_report_path)
    train = load_split(data_root, "target_train")
    val = load_split(data_root, "target_val")
    if cfg.video_clip >= len(val):
        raise ParamError(f"params.yaml: report.video_clip = {cfg.video_clip} is out of range [0, {len(val) - 1}] "
                         f"({len(val)} target-val clips)")
    baseline, _ = load_checkpoint(baseline_path)
    model, _ = load_checkpoint(model_path)
    names = (model_name(baseline_path), model_name(model_path))

    picks = select_frames(train, cfg.pseudo_frames, cfg.tau)
    rows = []
    with FlowStore(flow_path) as store:
        for ci, t in progress(picks, description="report: pseudo labels"):
            clip = train[ci]
            store.check_clip(clip.name, len(clip), *clip.images.shape[1:3])
            rows.append({"image": clip.images[t], "labels": refined_labels(clip, pseudo_root, store, t, cfg),
                         "gt": clip.labels[t], "caption": f"clip {clip.name}, frame t = {t} ({clip.frame_names[t]})"})

    clip = val[cfg.video_clip]
    preds = [predict(m, clip.images, PREDICT_BATCH) for m in (baseline, model)]
    titles = lambda i: [f"input {i + 1}/{len(clip)}", names[0], names[1]]   # noqa: E731
    frames = [video_frame(clip.images[i], [p[i] for p in preds], titles(i), cfg.video_scale)
              for i in progress(range(len(clip)), description="report: video")]
    middle = len(clip) // 2

    files = {"iou": "iou_per_class.png", "confusion": {m: f"confusion_{safe_name(m)}.png" for m in models},
             "pseudo": "pseudo_labels.png", "pseudo_rows": rows, "video": "predictions.mp4",
             "still": "predictions_middle.png", "legend": "classes.png"}
    sources = [str(p) for p in (metrics_path, confusion_path, pseudo_report_path, pseudo_root, data_root, flow_path,
                                baseline_path, model_path)]
    video = {"clip": clip.name, "frames": len(clip), "baseline": names[0], "model": names[1],
             "middle": f"frame {middle + 1} of {len(clip)}"}
    markdown = index_markdown(metrics, pseudo, pseudo_report_path, files, sources, cfg, video)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        images = {files["iou"]: iou_bars(metrics), files["pseudo"]: pseudo_figure(rows, cfg.figure_scale, cfg.tau),
                  files["still"]: frames[middle], files["legend"]: class_legend()}
        for m in models:
            images[files["confusion"][m]] = confusion_image(
                confusion[m], f"{m}: confusion matrix, row-normalised (% of the ground-truth pixels)")
        for name, img in images.items():
            if not cv2.imwrite(str(tmp / name), img):
                raise DataError(f"{tmp / name}: could not write image")
        write_video(tmp / files["video"], frames, cfg.fps)
        (tmp / "index.md").write_text(markdown)
    return files
