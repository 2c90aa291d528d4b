"""The pseudo-label figure (as the paper's Figures 3, 5, 7): annotated target-train frames t, each as
frame | pseudo label as generated | after cut-out refinement (Eq. 12) | after fill-in refinement (Eq. 14) |
ground truth, each label map annotated with its precision against the ground truth and the share of pixels
it labels.

The panels are composed with numpy, pixel for pixel (nearest-neighbour upscaling, no resampling), and placed
unscaled in a matplotlib figure, which writes the titles and numbers around them.
"""

import numpy as np
import torch
from matplotlib.figure import Figure

from videoda.data.classes import IGNORE_ID, colorize
from videoda.errors import DataError
from videoda.domain_adaptation.pseudo_label_analysis import label_precision
from videoda.domain_adaptation.pseudo_labels import cutout_refine, fillin_refine, read_pseudo_label
from videoda.flow.warp import flow_to_tensor
from videoda.report.charts import DPI, GREY, fmt
from videoda.report.panels import GAP, canvas, paste, upscale

PSEUDO_COLUMNS = ("frame t", "pseudo label (generated)", "cut-out (Eq. 12)", "fill-in (Eq. 14)", "ground truth")
HEADER, CAPTION, FOOTER = 56, 20, 40      # pixels: the title and column names, a row's caption, its numbers


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
    fill = fillin_refine(lab, ref_lab, flow, images, ref_images, cfg.occlusion.alpha, cfg.occlusion.occlusion_threshold)
    return labels, cut, fill[0].numpy().astype(np.uint8)


def label_stats(labels, gt):
    """(precision vs the ground truth, or NaN; share of all pixels labelled), both in %."""
    precision, _ = label_precision(labels, gt)
    return 100 * precision, 100 * float((labels != IGNORE_ID).mean())


def panel_origin(row, col, h, w, scale):
    """Top-left pixel of panel (row, col) of the pseudo-label figure (panels are h*scale x w*scale; ``HEADER``
    pixels above the rows, each row's ``CAPTION`` above its panels and ``FOOTER`` below)."""
    row_h = CAPTION + h * scale + FOOTER
    return GAP + col * (w * scale + GAP), HEADER + row * row_h + CAPTION


def pseudo_figure(rows, scale, tau, colorize=colorize):
    """rows: dicts with ``image`` (H, W, 3) RGB, ``labels`` (three (H, W) maps: generated, cut-out, fill-in),
    ``gt`` (H, W) and ``caption``. One figure row per frame, five columns. Saved unscaled (``save_png(fig,
    path, tight=False)``), the PNG holds every panel at ``panel_origin``, pixel for pixel. ``colorize``: the class
    set's."""
    h, w = rows[0]["gt"].shape
    pw, ph = w * scale, h * scale
    last_x, last_y = panel_origin(len(rows) - 1, len(PSEUDO_COLUMNS) - 1, h, w, scale)
    width, height = last_x + pw + GAP, last_y + ph + FOOTER
    panels = canvas(height, width)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)

    def text(x, y, s, size=9, colour="black", ha="left"):
        """``s`` with its baseline at pixel (x, y) from the top-left corner, as the panels are placed."""
        fig.text(x / width, 1 - y / height, s, fontsize=size, color=colour, ha=ha, va="baseline")

    text(GAP, 20, f"Pseudo labels of annotated target-train frames t; refinements use frame t - {tau} "
                  f"(tau = {tau})", size=11)
    for col, name in enumerate(PSEUDO_COLUMNS):
        x, _ = panel_origin(0, col, h, w, scale)
        text(x + pw // 2, 48, name, size=10, ha="center")
    for r, row in enumerate(rows):
        x0, y0 = panel_origin(r, 0, h, w, scale)
        text(x0, y0 - 6, row["caption"], colour=GREY)
        maps = [row["image"]] + [colorize(m) for m in row["labels"]] + [colorize(row["gt"])]
        for col, panel in enumerate(maps):
            x, y = panel_origin(r, col, h, w, scale)
            paste(panels, upscale(panel, scale), x, y)
            if 1 <= col <= 3:
                precision, labelled = label_stats(row["labels"][col - 1], row["gt"])
                text(x, y + ph + 15, f"precision {fmt(precision, 1)}%")
                text(x, y + ph + 32, f"labelled {labelled:.1f}%", colour=GREY)
            elif col == 4:
                text(x, y + ph + 15, f"annotated {100 * float((row['gt'] != IGNORE_ID).mean()):.1f}%", colour=GREY)
    fig.figimage(panels, xo=0, yo=0, origin="upper")        # one pixel per pixel: no resampling of the panels
    return fig
