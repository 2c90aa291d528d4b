"""Charts of the reports, drawn with matplotlib: grouped bar charts with whiskers (the per-class IoU of the
visual report, the paper tables' mIoU and VPQ^s), row-normalised confusion matrices and the class colours.

Every chart is a ``matplotlib.figure.Figure`` made here, not through pyplot, so no figure or style is shared
between charts; ``save_png`` writes one as a PNG whose bytes depend on the chart only.
"""

import math

import matplotlib

matplotlib.use("Agg")       # draw off-screen whatever the environment's default backend (no display on servers)

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from videoda.data.classes import DEFAULT  # noqa: E402

DPI = 100                   # pixels per inch of every saved chart
# PNG text chunks: matplotlib writes its version under "Software" unless told not to; without it the bytes are
# a function of the chart alone (PNGs carry no date unless asked).
PNG_METADATA = {"Software": None}
# Model colours: matplotlib's tab10 without its grey.
MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                 "#17becf")
MODEL_ORDER = ("source_only", "vat", "vst", "oracle")   # the pipeline's order; other models follow, as in the file
GREY = "#6e6e6e"
BAND = "#f4f4f4"            # background of every other category of a bar chart
X_MAX = 100                 # a bar chart's axis ends at 100 %


def save_png(fig, path, tight=True):
    """Write ``fig`` as a PNG at ``DPI``, without matplotlib's version in it. ``tight``: crop to what is drawn
    (plus a small margin), so no label is cut off; a figure laid out to the pixel is saved as it is."""
    fig.savefig(path, format="png", dpi=DPI, metadata=PNG_METADATA, bbox_inches="tight" if tight else None,
                pad_inches=0.1)


def fmt(v, digits=2):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _number(v):
    """``v`` as a float, NaN for None (a value that is not there)."""
    return math.nan if v is None else float(v)


def ordered_models(names):
    """The evaluated models in display order; ``final`` (evaluate's alias of the selected method's model,
    ``conf/method/``) is left out, since its model is shown under its own name."""
    names = [n for n in names if n != "final"]
    return [n for n in MODEL_ORDER if n in names] + [n for n in names if n not in MODEL_ORDER]


# --- grouped bar chart ----------------------------------------------------------------------------------------

class BarSeries:
    """One bar per category of a grouped bar chart, all in one colour.

    values: per category, the bar's length; None or NaN draws no bar but the chart's ``missing`` text.
    errors: per category, the half-length of a black whisker about the bar's end (e.g. one std); None or NaN
    draws none. marks: per category, a reference value drawn as a black tick across the bar (e.g. the paper's).
    """

    def __init__(self, name, colour, values, errors=None, marks=None):
        n = len(values)
        self.name, self.colour = name, colour
        self.values = [_number(v) for v in values]
        self.errors = [_number(v) for v in errors] if errors is not None else [math.nan] * n
        self.marks = [_number(v) for v in marks] if marks is not None else [math.nan] * n
        if not len(self.errors) == len(self.marks) == n:
            raise ValueError(f"series '{name}': values, errors and marks differ in length")


def grouped_bars(title, categories, series, *, xlabel, mark_label=None, missing="n/a", bar_inches=0.13):
    """Horizontal bars of percentages (0 to ``X_MAX``), one group per category (top to bottom, in order), one bar per
    series in each group, each bar's value written right of its end (and of its whisker and mark). The legend
    names the series, and the marks when ``mark_label`` is given. ``bar_inches``: the height of one bar."""
    n_series = len(series)
    bar_h = 0.8 / n_series                                   # the group fills 0.8 of one unit on the y axis
    height = 1.5 + bar_inches * n_series * len(categories) / 0.8
    fig = Figure(figsize=(8, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for c in range(0, len(categories), 2):                  # light bands tell the groups apart
        ax.axhspan(c - 0.5, c + 0.5, color=BAND, zorder=0, linewidth=0)
    for j, s in enumerate(series):
        for c in range(len(categories)):
            y = c - 0.4 + (j + 0.5) * bar_h
            value, error, mark = s.values[c], s.errors[c], s.marks[c]
            if not math.isnan(mark):
                ax.vlines(mark, y - 0.5 * bar_h, y + 0.5 * bar_h, colors="black", linewidth=2, zorder=4)
            if math.isnan(value):
                ax.text(1, y, missing, va="center", fontsize=7, color=GREY)
                continue
            ax.barh(y, value, height=0.9 * bar_h, color=s.colour, zorder=2)
            if not math.isnan(error):
                ax.errorbar(value, y, xerr=error, fmt="none", ecolor="black", elinewidth=0.8, capsize=2, zorder=3)
            right = max(x for x in (value, value + error, mark) if not math.isnan(x))
            ax.text(right + 1, y, f"{value:.1f}", va="center", fontsize=7, color="#3c3c3c")
    ax.set_yticks(range(len(categories)), categories, fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(categories) - 0.5, -0.5)                # first category at the top
    ax.set_xlim(0, 1.12 * X_MAX)                            # room for the value right of a full bar
    ax.set_xticks(range(0, X_MAX + 1, 20))
    ax.tick_params(axis="x", top=True, labeltop=True, labelsize=8, colors=GREY)
    ax.xaxis.grid(True, color="#d0d0d0", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_xlabel(xlabel, fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Patch(facecolor=s.colour, label=s.name) for s in series]
    if mark_label:
        handles.append(Line2D([], [], color="black", marker="|", markersize=10, markeredgewidth=2, linestyle="none",
                              label=mark_label))
    # The title heads the legend: one block above the axes, which constrained layout keeps clear of both (a
    # suptitle and an outside legend would share the figure's top edge and overlap).
    rows = math.ceil(len(handles) / 3)                      # at most 3 columns, filled evenly (4 entries: 2 x 2)
    fig.legend(handles=handles, loc="outside upper left", ncols=math.ceil(len(handles) / rows), frameon=False,
               fontsize=9,
               title=title, title_fontsize=11, alignment="left")
    return fig


def iou_bars(metrics, classes=DEFAULT):
    """Per evaluated class of ``classes``, one bar per model of ``metrics`` (its per-class IoU, %); each model's
    mIoU in the legend."""
    series = [BarSeries(f"{m}  (mIoU {fmt(metrics[m].get('miou'))})", MODEL_COLOURS[i % len(MODEL_COLOURS)],
                        [metrics[m].get("iou", {}).get(c) for c in classes.evaluated])
              for i, m in enumerate(ordered_models(metrics))]
    return grouped_bars("Per-class IoU (%) on the target-val clips", classes.evaluated, series, xlabel="IoU (%)")


# --- confusion matrix -----------------------------------------------------------------------------------------

def row_normalize(cm):
    """Row-normalised confusion matrix (rows: ground truth): each row divided by its sum (the recall of the
    class on the diagonal); a row with no ground-truth pixel is NaN."""
    cm = np.asarray(cm, np.float64)
    sums = cm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, cm / np.where(sums > 0, sums, 1), np.nan)


def confusion_chart(cm, title, classes=DEFAULT):
    """A row-normalised confusion matrix as a heat map with the % in every cell that has a pixel ('<1' under
    0.5%), class names on both axes, the diagonal outlined; a row with no ground-truth pixel is grey."""
    norm = row_normalize(cm)
    k = norm.shape[0]
    names = classes.names if k == classes.num_classes else tuple(str(i) for i in range(k))
    fig = Figure(figsize=(8, 7.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="#d7d7d7")    # NaN: a class absent from the gt
    image = ax.imshow(100 * norm, cmap=colours, vmin=0, vmax=100, interpolation="nearest")
    for i in range(k):
        for j in range(k):
            if cm[i, j] > 0:
                pct = 100 * norm[i, j]
                ax.text(j, i, f"{pct:.0f}" if pct >= 0.5 else "<1", ha="center", va="center", fontsize=8,
                        color="black" if norm[i, j] > 0.55 else "white")   # dark text on viridis' light end
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.2))
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("ground-truth class", fontsize=9)
    ax.set_title(title, fontsize=10, loc="left")
    bar = fig.colorbar(image, ax=ax, shrink=0.8, ticks=[0, 50, 100])
    bar.ax.set_yticklabels(["0%", "50%", "100%"], fontsize=8)
    return fig


# --- class colours --------------------------------------------------------------------------------------------

def class_legend(columns=4, classes=DEFAULT):
    """The colour of each class of ``classes`` (as its ``colorize`` draws it) and of void / unlabelled pixels."""
    palette = classes.palette
    handles = [Patch(facecolor=palette[i] / 255, edgecolor=GREY, label=name) for i, name in enumerate(classes.names)]
    handles.append(Patch(facecolor="black", edgecolor=GREY, label="void / no label"))
    fig = Figure(figsize=(8, 1.6), dpi=DPI)
    fig.legend(handles=handles, loc="center", ncols=columns, frameon=False, fontsize=9, title="Class colours",
               title_fontsize=11, alignment="left", handlelength=2.5, handleheight=1.3)
    return fig
