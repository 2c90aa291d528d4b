"""The statistics of the tables: mean, sample std and 95% CI over seeds, the paired per-seed differences behind
each ordering the paper states and its verdict, and the flow-quality experiment's numbers."""

import math
from dataclasses import dataclass

import numpy as np

from videoda.paper_tables.specs import (FLOW_METHODS, FLOW_ROWS, PAPER_TABLE7, TABLE7_EXPERIMENT, TABLE7_LABELS,
                                        TABLE7_PROPORTIONS, TABLES, Row, exp_name, flow_key)


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof 1) and the 95% confidence interval of the mean (Student's t, n - 1 degrees of
    freedom: mean ± t_{0.975, n-1} std / sqrt(n)) of n values; NaN where n is too small (std, CI: n < 2)."""
    n: int
    mean: float
    std: float
    lo: float
    hi: float

    @property
    def half_width(self):
        return (self.hi - self.lo) / 2


def t_quantile(df):
    """t_{0.975, df}, the two-sided 95% quantile of Student's t (scipy)."""
    from scipy.stats import t
    return float(t.ppf(0.975, df))


def summarize(values):
    """``Summary`` of the non-missing values (None and NaN are left out)."""
    v = np.array([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if v.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if v.size == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(v.std(ddof=1))
    h = t_quantile(v.size - 1) * std / math.sqrt(v.size)
    return Summary(int(v.size), mean, std, mean - h, mean + h)


AGREES, DISAGREES, UNDECIDED = "agrees", "disagrees", "undecided"


def verdict(diff):
    """The label of an ordering the paper states, from the Summary of our paired per-seed differences (the row
    the paper ranks higher minus the other): its 95% CI above 0 agrees, below 0 disagrees, spanning 0 (or fewer
    than two seeds) is undecided."""
    if diff.n < 2 or math.isnan(diff.lo):
        return UNDECIDED
    if diff.lo > 0:
        return AGREES
    if diff.hi < 0:
        return DISAGREES
    return UNDECIDED


@dataclass(frozen=True)
class Ordering:
    """One order the paper states, ``high`` > ``low`` on ``metric``, with our paired differences' Summary."""
    table: str
    metric: str
    high: str
    low: str
    paper_high: float
    paper_low: float
    diff: Summary

    @property
    def verdict(self):
        return verdict(self.diff)


def model_metrics(found, key, seed, model):
    """(mIoU, VPQ^s, per-class IoU, per-class VPQ) of one evaluated model of one run, or None if not run."""
    exp = found.get(exp_name(key, seed))
    if exp is None:
        return None
    entry = (exp["metrics"].get("reports/metrics.json") or {}).get(model)
    if entry is None:
        return None
    return entry["miou"], entry["vpq"]["mean"], entry["iou"], entry["vpq"]["per_class"]


def paired_differences(found, a, b, seeds, column):
    """Our per-seed (a - b) on ``column`` (0: mIoU, 1: VPQ^s), over the seeds that ran both rows. A seed is one
    benchmark (``seed`` generates the data too), so pairing by seed holds the data fixed within each difference."""
    diffs = []
    for s in seeds:
        ra, rb = model_metrics(found, a.exp, s, a.model), model_metrics(found, b.exp, s, b.model)
        if ra and rb and ra[column] is not None and rb[column] is not None:
            diffs.append(ra[column] - rb[column])
    return diffs


def stated_orderings(found, title, rows, seeds):
    """Every pair of ``rows`` whose order the paper reports (different paper values; rows reading the same model
    of the same experiment are one row) on mIoU and on VPQ^s, with our paired differences."""
    out = []
    for column, metric in ((0, "mIoU"), (1, "VPQ^s")):
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                if (a.exp, a.model) == (b.exp, b.model) or a.paper[column] == b.paper[column]:
                    continue
                hi, lo = (a, b) if a.paper[column] > b.paper[column] else (b, a)
                out.append(Ordering(title, metric, hi.label, lo.label, hi.paper[column], lo.paper[column],
                                    summarize(paired_differences(found, hi, lo, seeds, column))))
    return out


def table7_entries(found, seeds, key, gen):
    """Per seed, Table 7's entry ``{knob, proportion, p_miou}`` of generator ``gen`` at proportion ``key`` (None
    where not run)."""
    entries = []
    for s in seeds:
        exp = found.get(exp_name(TABLE7_EXPERIMENT, s))
        found_metrics = (exp or {}).get("metrics", {})      # Table 7 moved to p_miou.json; older runs
        t7 = (found_metrics.get("reports/p_miou.json") or found_metrics.get("reports/pseudo_labels.json")
              or {}).get("table7", {})
        entries.append(t7[key][gen] if key in t7 else None)
    return entries


def table7_values(found, seeds, key, gen):
    """Per seed, Table 7's P-mIoU of generator ``gen`` at proportion ``key`` (None where not run)."""
    return [e["p_miou"] if e else None for e in table7_entries(found, seeds, key, gen)]


def table7_orderings(found, seeds):
    """Table 7's orders (pairs of generators at each proportion the paper reports and we ran), paired by seed."""
    out, gens = [], list(TABLE7_LABELS)
    for key, paper in PAPER_TABLE7.items():
        if float(key) not in TABLE7_PROPORTIONS:
            continue
        for i, a in enumerate(gens):
            for b in gens[i + 1:]:
                if paper[a] == paper[b]:
                    continue
                hi, lo = (a, b) if paper[a] > paper[b] else (b, a)
                pairs = zip(table7_values(found, seeds, key, hi), table7_values(found, seeds, key, lo))
                diffs = [x - y for x, y in pairs if x is not None and y is not None]
                out.append(Ordering("Table 7", f"P-mIoU at {key}", TABLE7_LABELS[hi], TABLE7_LABELS[lo], paper[hi],
                                    paper[lo], summarize(diffs)))
    return out


def all_orderings(found, seeds):
    out = [o for title, rows in TABLES.items() for o in stated_orderings(found, title.split(":")[0], rows, seeds)]
    return out + table7_orderings(found, seeds)


def verdict_counts(orderings):
    counts = {AGREES: 0, DISAGREES: 0, UNDECIDED: 0}
    for o in orderings:
        counts[o.verdict] += 1
    return counts


def table_stats(found, rows, seeds):
    """{row: [Summary of mIoU, Summary of VPQ^s]} over ``seeds``."""
    stats = {}
    for row in rows:
        runs = [model_metrics(found, row.exp, s, row.model) for s in seeds]
        stats[row] = [summarize([r[c] if r else None for r in runs]) for c in (0, 1)]
    return stats


def ranks(values):
    """1 = highest; rows that share an experiment's number share its rank; "–" for a row not run."""
    order = sorted({v for v in values if not math.isnan(v)}, reverse=True)
    return [("–" if math.isnan(v) else order.index(v) + 1) for v in values]


# --- the flow-quality experiment (beyond the paper) --------------------------------------------------------------

def flow_epe(found, key, seed, method):
    """The end-point error (px) of ``method``'s flow in run ``key`` of ``seed`` (its reports/flow.json), or None."""
    exp = found.get(exp_name(key, seed)) or {}
    epe = (((exp.get("metrics") or {}).get("reports/flow.json") or {}).get("epe") or {}).get(method)
    return epe["epe"] if epe else None


def p_miou(found, key, seed):
    """P-mIoU of the pseudo labels of run ``key`` of ``seed`` (its reports/p_miou.json), or None."""
    exp = found.get(exp_name(key, seed)) or {}
    return ((exp.get("metrics") or {}).get("reports/p_miou.json") or {}).get("p_miou")


def flow_table(found, seeds, params):
    """{(row, method): [Summary of mIoU, Summary of VPQ^s]}, {method: Summary of EPE} and {method: Summary of the
    pseudo labels' P-mIoU} of the flow-quality experiment (every row's labels are the same clip-adaptive labels on
    aggregated predictions: ``ours``' are read)."""
    cells, epe, labels = {}, {}, {}
    for method in FLOW_METHODS:
        for row in FLOW_ROWS:
            key = flow_key(row.exp, method, params)
            runs = [model_metrics(found, key, s, row.model) for s in seeds]
            cells[row, method] = [summarize([r[c] if r else None for r in runs]) for c in (0, 1)]
        ours = flow_key(FLOW_ROWS[-1].exp, method, params)
        epe[method] = summarize([flow_epe(found, ours, s, method) for s in seeds])
        labels[method] = summarize([p_miou(found, ours, s) for s in seeds])
    return cells, epe, labels


def flow_differences(found, seeds, params, row, better, worse, column=0):
    """Paired per-seed difference of ``row`` with flow ``better`` minus with flow ``worse`` (mIoU by default)."""
    a, b = (Row(row.label, flow_key(row.exp, m, params), row.model, row.paper) for m in (better, worse))
    return summarize(paired_differences(found, a, b, seeds, column))
