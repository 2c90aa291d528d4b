"""Stage `report` (the visual report) on tiny inputs built here: layout, links, determinism, errors."""

import json
import re
import runpy
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from helpers import REPO, write_params
from videoda.config.stages import stage_config
from videoda.data.classes import CLASSES, IGNORE_ID, NUM_CLASSES, colorize
from videoda.data.clips import Clip, save_clip
from videoda.errors import DataError, ParamError
from videoda.flow.store import FlowWriter, stored_pairs
from videoda.model import save_checkpoint
from videoda.model.build import build_model
from videoda.report.charts import BarSeries, grouped_bars, iou_bars, ordered_models, row_normalize, save_png
from videoda.report.panels import GAP, upscale
from videoda.report.pseudo_figure import panel_origin, select_frames
from videoda.utils.images import write_ids

report_main = runpy.run_path(str(REPO / "stages/report.py"))["main"]      # stages/report.py's main, not run

torch.set_num_threads(1)
H, W, T_TRAIN, T_VAL = 16, 32, 5, 4
FIG_SCALE, VIDEO_SCALE = 2, 3


def make_clip(rng, name, t_len, labeled):
    # Static frames: with zero flow every pixel is non-occluded, so the refinements are known by hand.
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    labels = np.full((t_len, H, W), IGNORE_ID, np.uint8)
    for t in labeled:
        labels[t] = rng.integers(0, NUM_CLASSES, (H, W))
        labels[t, :2] = IGNORE_ID                                     # some void ground truth
    flags = np.zeros(t_len, bool)
    flags[list(labeled)] = True
    names = [f"{name}_{t:06d}" for t in range(t_len)]
    return Clip(name, np.repeat(image[None], t_len, 0), labels, flags, np.array(names))


def pseudo_of(clip, t, rng):
    """A pseudo label: the ground truth (or a random map) with a third of the pixels ignored, some wrong."""
    base = clip.labels[t] if clip.labeled[t] else rng.integers(0, NUM_CLASSES, (H, W)).astype(np.uint8)
    lab = np.where(base == IGNORE_ID, rng.integers(0, NUM_CLASSES, (H, W)), base).astype(np.uint8)
    lab[rng.random((H, W)) < 0.2] = rng.integers(0, NUM_CLASSES)
    lab[rng.random((H, W)) < 0.33] = IGNORE_ID
    return lab


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["report"] = {"pseudo_frames": 3, "video_clip": 1, "video_scale": VIDEO_SCALE, "figure_scale": FIG_SCALE,
                        "fps": 5, "threads": 1}
    write_params(root, params)
    train = [make_clip(rng, f"tr{i}", T_TRAIN, [0, 2, 4]) for i in range(2)]
    val = [make_clip(rng, f"va{i}", T_VAL, [0, 2]) for i in range(2)]
    for split, clips in (("target_train", train), ("target_val", val)):
        for c in clips:
            save_clip(root / "data/prepared" / split / c.name, c)
    flow_path = root / "data/flow/target_train.h5"
    flow_path.parent.mkdir(parents=True)
    with FlowWriter(flow_path, [1], H, W, "test") as writer:
        for c in train:
            writer.add_clip(c.name, T_TRAIN, {p: np.zeros((H, W, 2), np.float32) for p in stored_pairs(T_TRAIN, [1])})
    pseudo = {}
    for c in train:
        (root / "data/pseudo_labels" / c.name).mkdir(parents=True)
        for t in range(T_TRAIN):
            pseudo[c.name, t] = pseudo_of(c, t, rng)
            write_ids(root / "data/pseudo_labels" / c.name / f"{c.frame_names[t]}.png", pseudo[c.name, t])
    metrics = {}
    for k, m in enumerate(("source_only", "vst", "oracle")):
        iou = {c: round(float(v), 4) for c, v in zip(CLASSES, rng.uniform(0, 100, NUM_CLASSES))}
        iou["motorbike"] = None                                        # a class the model never met
        metrics[m] = {"miou": 12.3456 + 10 * k, "iou": iou,
                      "vpq": {"k0": 1.0, "k5": 2.0, "k10": 3.0, "k15": 4.0, "mean": 2.5 + k, "per_class": {}}}
    (root / "reports").mkdir()
    (root / "reports/metrics.json").write_text(json.dumps(metrics))
    np.savez(root / "reports/confusion.npz",
             **{m: rng.integers(0, 50, (NUM_CLASSES, NUM_CLASSES)) for m in metrics})
    (root / "reports/pseudo_labels.json").write_text(json.dumps({
        "generator": "clip_agg", "proportion": 80.2334, "p_miou": 48.6363,
        "equal_proportion": {"proportion": 80.694, "single_frame_p_miou": 45.9935, "aggregated_p_miou": 46.8245},
        "cutout_refinement": {"precision_before": 85.862, "pixels_before": 793254, "precision_after": 88.9818,
                              "pixels_after": 707078}}))
    (root / "models").mkdir()
    for seed, name in ((0, "source_only"), (1, "vst")):
        torch.manual_seed(seed)
        save_checkpoint(root / f"models/{name}.pt", build_model(stage_config("train_source", params).model))
    return {"root": root, "train": train, "val": val, "pseudo": pseudo, "metrics": metrics}


ARGS = ["--metrics", "reports/metrics.json", "--confusion", "reports/confusion.npz", "--pseudo-report",
        "reports/pseudo_labels.json", "--pseudo", "data/pseudo_labels", "--data", "data/prepared", "--flow",
        "data/flow/target_train.h5", "--baseline", "models/source_only.pt", "--model", "models/vst.pt"]


def run_report(root, out, monkeypatch, args=ARGS):
    monkeypatch.chdir(root)
    report_main([*args, "--out", out])
    return root / out


@pytest.fixture(scope="module")
def report(inputs):
    with pytest.MonkeyPatch.context() as mp:
        return run_report(inputs["root"], "reports/visual", mp)


def read(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def test_index_links_resolve_and_numbers_come_from_the_files(report, inputs):
    md = (report / "index.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert "predictions.mp4" in links and "pseudo_labels.png" in links and "iou_per_class.png" in links
    assert {f"confusion_{m}.png" for m in inputs["metrics"]} <= set(links)
    for link in links:
        assert not link.startswith("/") and (report / link).is_file(), link
        if link.endswith(".png"):
            read(report / link)
    assert "| source_only | 12.35 | 2.50 |" in md and "| oracle | 32.35 | 4.50 |" in md
    assert "85.86% / 88.98%" in md and "45.99 / 46.82" in md


def test_pseudo_label_figure_layout_and_refinements(report, inputs):
    fig = read(report / "pseudo_labels.png")
    # 5 columns of W * scale pixels with GAP pixels around each; 3 rows.
    assert fig.shape[1] == 5 * W * FIG_SCALE + 6 * GAP
    x, y = panel_origin(2, 4, H, W, FIG_SCALE)
    assert fig.shape[0] > y + H * FIG_SCALE
    # Frames chosen: annotated t >= tau = 1 are (clip 0: 2, 4), (clip 1: 2, 4); the middles of 3 runs of 4.
    picks = select_frames(inputs["train"], 3, 1)
    assert picks == [(0, 2), (1, 2), (1, 4)]
    for r, (ci, t) in enumerate(picks):
        clip = inputs["train"][ci]
        lab, ref = inputs["pseudo"][clip.name, t], inputs["pseudo"][clip.name, t - 1]
        # Zero flow on static frames: cut-out keeps the labels that agree with frame t - 1; fill-in takes frame
        # t - 1's label wherever frame t has none (every pixel is non-occluded).
        cut = np.where(lab == ref, lab, IGNORE_ID)
        fill = np.where(lab == IGNORE_ID, ref, lab)
        expected = [clip.images[t], colorize(lab), colorize(cut), colorize(fill), colorize(clip.labels[t])]
        for col, panel in enumerate(expected):
            x, y = panel_origin(r, col, H, W, FIG_SCALE)
            got = fig[y:y + H * FIG_SCALE, x:x + W * FIG_SCALE]
            np.testing.assert_array_equal(got, upscale(panel[..., ::-1], FIG_SCALE), err_msg=f"row {r} col {col}")


def test_video_has_every_frame_and_the_still_its_size(report, inputs):
    clip = inputs["val"][1]
    cap = cv2.VideoCapture(str(report / "predictions.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    still = read(report / "predictions_middle.png")
    assert len(frames) == len(clip) and frames[0].shape == still.shape
    assert still.shape[1] == 3 * W * VIDEO_SCALE + 4 * GAP
    # The input panel of the still is the middle frame, upscaled without interpolation.
    panel = still[-(H * VIDEO_SCALE + GAP):-GAP, GAP:GAP + W * VIDEO_SCALE]
    np.testing.assert_array_equal(panel, upscale(clip.images[len(clip) // 2][..., ::-1], VIDEO_SCALE))


def test_video_size_rule_fits_the_mp4v_writer(tmp_path):
    from videoda.report.video import MP4V_MAX_SIDE, fitting_video_scale, video_frame_size, write_video

    assert video_frame_size(512, 1024, 4, 3) == (2080, 12312)          # the paper's frames at the default scale
    assert fitting_video_scale(512, 1024, 4, 3) == 2 and max(video_frame_size(512, 1024, 2, 3)) <= MP4V_MAX_SIDE
    assert fitting_video_scale(H, W, 16, 3) == 16 and fitting_video_scale(64, 128, 4, 3) == 4
    with pytest.raises(ParamError, match="report.video_scale = 2: 64 x 4096 frames make 96 x 12312"):
        fitting_video_scale(64, 4096, 2, 3)
    # The limit is the writer's own: the largest even side it takes opens and plays back, the next does not.
    ok = np.zeros((64, MP4V_MAX_SIDE - 1, 3), np.uint8)
    write_video(tmp_path / "ok.mp4", iter([ok, ok]), 5)
    assert cv2.VideoCapture(str(tmp_path / "ok.mp4")).read()[1].shape == ok.shape
    with pytest.raises(DataError, match="cannot write an mp4v video of 64 x 8192"):
        write_video(tmp_path / "tall.mp4", [np.zeros((8192, 64, 3), np.uint8)], 5)


@pytest.mark.slow
def test_report_lowers_the_video_scale_to_what_the_writer_takes(inputs, monkeypatch, capsys):
    import videoda.report.video as video

    monkeypatch.setattr(video, "MP4V_MAX_SIDE", 250)       # frames 3 x 32 x s + 24 wide: scale 2 fits, 3 not
    out = run_report(inputs["root"], "reports/visual_small", monkeypatch)
    assert "report.video_scale = 3 makes 312x80 video frames" in capsys.readouterr().out
    still = read(out / "predictions_middle.png")
    assert still.shape[:2] == (26 + 2 * H + GAP, 3 * 2 * W + 4 * GAP)
    assert "fps, x2): input" in (out / "index.md").read_text()


@pytest.mark.slow
def test_other_figures_and_determinism(report, inputs, monkeypatch):
    assert read(report / "confusion_vst.png").shape[0] > 15 * 30
    assert read(report / "classes.png").shape[1] > 300
    again = run_report(inputs["root"], "reports/visual2", monkeypatch)
    for path in sorted(report.iterdir()):
        if path.suffix in (".png", ".md"):
            assert path.read_bytes() == (again / path.name).read_bytes(), path.name


def test_row_normalisation_by_hand():
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    norm = row_normalize(cm)
    np.testing.assert_allclose(norm[0], [0.75, 0.25, 0.0])
    assert np.isnan(norm[1]).all()                                       # class absent from the ground truth
    np.testing.assert_allclose(norm[2], [0.25, 0.25, 0.5])


def test_frame_selection_by_hand():
    def clip(flags):
        return Clip("c", np.zeros((len(flags), 1, 1, 3), np.uint8), np.zeros((len(flags), 1, 1), np.uint8),
                    np.array(flags, bool), np.array([str(i) for i in range(len(flags))]))
    clips = [clip([1, 0, 1, 0, 1]), clip([0, 1, 1])]                    # t >= 1: (0,2) (0,4) (1,1) (1,2)
    assert select_frames(clips, 1, 1) == [(1, 1)]                       # candidate 4 // 2 = 2
    assert select_frames(clips, 2, 1) == [(0, 4), (1, 2)]               # candidates 1, 3
    assert select_frames(clips, 9, 1) == [(0, 2), (0, 4), (1, 1), (1, 2)]
    assert select_frames(clips, 9, 2) == [(0, 2), (0, 4), (1, 2)]
    with pytest.raises(DataError, match="tau = 5"):
        select_frames(clips, 1, 5)


@pytest.mark.parametrize("flag, path", [("--metrics", "reports/nope.json"), ("--flow", "data/flow/nope.h5"),
                                        ("--pseudo", "data/no_pseudo"), ("--model", "models/nope.pt"),
                                        ("--confusion", "reports/nope.npz")])
def test_missing_input_names_it_and_writes_nothing(inputs, monkeypatch, flag, path):
    args = list(ARGS)
    args[args.index(flag) + 1] = path
    with pytest.raises(DataError, match=re.escape(path)):
        run_report(inputs["root"], "reports/visual_missing", monkeypatch, args)
    assert not (inputs["root"] / "reports/visual_missing").exists()


@pytest.mark.slow
def test_missing_input_exits_2_through_the_stage(inputs):
    args = list(ARGS)
    args[args.index("--metrics") + 1] = "reports/absent.json"
    out = inputs["root"] / "reports/visual_absent"
    r = subprocess.run([sys.executable, str(REPO / "stages/report.py"), *args, "--out", str(out)],
                       cwd=inputs["root"], capture_output=True, text=True)
    assert r.returncode == 2 and "reports/absent.json" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not list((inputs["root"] / "reports").glob(".visual_absent*"))


def test_missing_pseudo_png_and_bad_video_clip(inputs, monkeypatch, tmp_path):
    root = inputs["root"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["report"]["video_clip"] = 2                                  # only 2 val clips
    write_params(tmp_path, params)
    absolute = [a if a.startswith("--") else str(root / a) for a in ARGS]
    with pytest.raises(ParamError, match="report.video_clip"):
        run_report(tmp_path, "visual", monkeypatch, absolute)
    clip = inputs["train"][1]
    png = root / "data/pseudo_labels" / clip.name / f"{clip.frame_names[4]}.png"
    png.rename(tmp_path / "moved.png")
    try:
        write_params(tmp_path, yaml.safe_load((root / "params.yaml").read_text()))
        with pytest.raises(DataError, match=png.name):
            run_report(tmp_path, "visual", monkeypatch, absolute)
    finally:
        (tmp_path / "moved.png").rename(png)
    assert not (tmp_path / "visual").exists()


def test_ordered_models_skips_the_final_alias():
    assert ordered_models(["final", "vst", "extra", "source_only"]) == ["source_only", "vst", "extra"]


# --- the charts (matplotlib) ------------------------------------------------------------------------------------

def bars_by_colour(fig):
    """{facecolor (r, g, b): [bar lengths, top to bottom]} of a horizontal bar chart."""
    from matplotlib.colors import to_rgb

    bars = {}
    for container in fig.axes[0].containers:
        for patch in getattr(container, "patches", []):
            bars.setdefault(to_rgb(patch.get_facecolor()), []).append((patch.get_y(), patch.get_width()))
    return {c: [w for _, w in sorted(v)] for c, v in bars.items()}


def texts(fig):
    return [t.get_text() for t in fig.axes[0].texts]


def test_iou_bars_show_each_models_iou_and_miou():
    from matplotlib.colors import to_rgb

    from videoda.report.charts import MODEL_COLOURS
    low = {c: 0.0 for c in CLASSES} | {"sky": 37.25, "motorbike": None}
    high = {c: 100.0 for c in CLASSES}
    fig = iou_bars({"vst": {"miou": 80.0, "iou": high}, "source_only": {"miou": 2.5, "iou": low}})
    bars = bars_by_colour(fig)
    # source_only comes first (blue), vst second (orange); one bar per class that has a value.
    assert bars[to_rgb(MODEL_COLOURS[0])] == [37.25 if c == "sky" else 0.0 for c in CLASSES if c != "motorbike"]
    assert bars[to_rgb(MODEL_COLOURS[1])] == [100.0] * NUM_CLASSES
    assert texts(fig).count("100.0") == NUM_CLASSES and "37.2" in texts(fig) and "n/a" in texts(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["source_only  (mIoU 2.50)", "vst  (mIoU 80.00)"]


def test_chart_png_is_nonblank_sized_and_byte_identical(tmp_path):
    def render(name, iou):
        save_png(iou_bars({"vst": {"miou": 50.0, "iou": {c: iou for c in CLASSES}}}), tmp_path / name)
        return tmp_path / name

    first, again, empty = render("a.png", 100.0), render("b.png", 100.0), render("c.png", 0.0)
    assert first.read_bytes() == again.read_bytes()
    assert b"Matplotlib" not in first.read_bytes()                      # no version in the metadata
    img, img_empty = read(first), read(empty)
    assert img.shape[0] > 300 and img.shape[1] > 600 and img.std() > 0
    # Full bars paint many more pixels in the model's colour (tab10 blue, BGR) than empty ones.
    blue = lambda im: int((np.abs(im.astype(int) - (180, 119, 31)).sum(2) < 30).sum())  # noqa: E731
    assert blue(img) > 20 * blue(img_empty) > 0


def test_grouped_bars_whisker_mark_and_value_text():
    series = [BarSeries("mIoU", "#1f77b4", [40.0, None], errors=[5.0, None], marks=[60.0, 30.0]),
              BarSeries("VPQ^s", "#2ca02c", [20.0, 10.0], errors=[None, 2.0], marks=[10.0, 12.0])]
    fig = grouped_bars("t", ["a", "b"], series, xlabel="%", mark_label="the paper's value", missing="not run")
    ax = fig.axes[0]
    assert bars_by_colour(fig) == {(0.12156862745098039, 0.4666666666666667, 0.7058823529411765): [40.0],
                                   (0.17254901960784313, 0.6274509803921569, 0.17254901960784313): [20.0, 10.0]}
    # Each value is written right of its bar, whisker and mark, whichever ends last.
    at = {t.get_text(): t.get_position()[0] for t in ax.texts}
    assert at == {"40.0": 61.0, "not run": 1.0, "20.0": 21.0, "10.0": 13.0}
    whiskers = [c for c in ax.containers if not hasattr(c, "patches")]
    assert len(whiskers) == 2                                            # only where an error is given
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["mIoU", "VPQ^s", "the paper's value"]
    with pytest.raises(ValueError, match="differ in length"):
        BarSeries("x", "red", [1.0, 2.0], errors=[1.0])


def test_confusion_chart_writes_row_percentages():
    from videoda.report.charts import confusion_chart

    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4000]])
    fig = confusion_chart(cm, "title")
    assert sorted(texts(fig)) == sorted(["75", "25", "<1", "<1", "100"])   # no text where no pixel
    shown = fig.axes[0].images[0].get_array()
    assert shown.mask[1].all() and not shown.mask[[0, 2]].any()          # the empty row is drawn as "bad" (grey)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", "2"]
