"""The visual report (stage `report`): ``build_report`` writes one folder (atomically) holding ``index.md``,
which embeds every figure by a relative link, so it renders offline in any markdown viewer and on GitHub:

- ``iou_per_class.png``: grouped horizontal bars of each model's per-class IoU, mIoU in the legend;
- ``confusion_<model>.png``: each model's row-normalised confusion matrix (recall, % of ground-truth pixels);
- ``pseudo_labels.png``: annotated target-train frames t: frame | pseudo label as generated | after cut-out
  refinement (Eq. 12) | after fill-in refinement (Eq. 14) | ground truth, each label map with its precision
  against the ground truth and the share of pixels it labels (the paper's Figures 3, 5, 7);
- ``predictions.mp4`` and ``predictions_middle.png`` (its middle frame): a target-val clip, input | baseline
  prediction | model prediction, every frame, upscaled (nearest) by ``report.video_scale``;
- ``classes.png``: the colour of each class.

The charts are drawn by ``charts.py`` (matplotlib), the pseudo-label figure by ``pseudo_figure.py``, the video
by ``video.py`` (OpenCV). Every number in the figures and in ``index.md`` is read from the pipeline's outputs.
The PNGs are a pure function of the inputs (byte-identical on a rerun); the mp4 container may differ in its
metadata.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from videoda.data.classes import NUM_CLASSES
from videoda.data.clips import DataError
from videoda.data.pairs import load_split
from videoda.evaluate import predict
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint
from videoda.params import ParamError, Section
from videoda.report.charts import class_legend, confusion_chart, fmt, iou_bars, ordered_models, save_png
from videoda.report.pseudo_figure import pseudo_figure, refined_labels, select_frames
from videoda.report.video import video_frame, write_video
from videoda.utils.io import atomic_path

PREDICT_BATCH = 16


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
        charts = {files["iou"]: iou_bars(metrics), files["legend"]: class_legend()}
        for m in models:
            charts[files["confusion"][m]] = confusion_chart(
                confusion[m], f"{m}: confusion matrix, row-normalised (% of the ground-truth pixels)")
        for name, fig in charts.items():
            save_png(fig, tmp / name)
        save_png(pseudo_figure(rows, cfg.figure_scale, cfg.tau), tmp / files["pseudo"], tight=False)
        if not cv2.imwrite(str(tmp / files["still"]), frames[middle]):
            raise DataError(f"{tmp / files['still']}: could not write image")
        write_video(tmp / files["video"], frames, cfg.fps)
        (tmp / "index.md").write_text(markdown)
    return files
