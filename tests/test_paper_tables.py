"""`python -m videoda paper-tables` (videoda/paper_tables/): the experiment specs, the `dvc exp` commands,
reading `dvc exp show --json`, mean +- std, disagreements with the paper, and the written report."""

import json
import math
import re
from pathlib import Path

import cv2
import pytest
import yaml

from videoda.paper_tables import render, runner, specs, statistics
from videoda.cli import main
from videoda.data.classes import CLASSES
from videoda.config.compose import group_options

REPO = Path(__file__).resolve().parents[1]


def repo_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_every_row_has_an_experiment_whose_keys_exist_in_params():
    params = repo_params()
    exps = specs.experiments(params)
    rows = [r for rows in specs.TABLES.values() for r in rows]
    flow_exps = {specs.flow_key(r.exp, m, params) for r in specs.FLOW_ROWS for m in specs.FLOW_METHODS}
    assert {r.exp for r in rows} | {specs.TABLE7_EXPERIMENT} | flow_exps == set(exps) == set(specs.EXPERIMENT_ORDER)
    assert len(specs.EXPERIMENT_ORDER) == len(set(specs.EXPERIMENT_ORDER))
    # neighbours run together under --jobs 2: none needs a stage its neighbour is still computing
    order = specs.EXPERIMENT_ORDER
    assert order.index("p_miou") - order.index("ours") >= 3            # ours' VAT is in the run cache by then
    flows = [k for k in order if "_flow_" in k]
    assert all(a.split("_flow_")[1] != b.split("_flow_")[1] for a, b in zip(flows, flows[1:]))
    # The flow-quality rows differ from their table rows in flow.method only (params.yaml's: the row itself).
    assert params["flow"]["method"] in specs.FLOW_METHODS and set(specs.FLOW_METHODS) == {"gt", "dis", "zero"}
    for row in specs.FLOW_ROWS:
        for m in specs.FLOW_METHODS:
            diff = set(exps[specs.flow_key(row.exp, m, params)].overrides) ^ set(exps[row.exp].overrides)
            assert diff == (set() if m == params["flow"]["method"] else {("flow.method", m)})
    assert {r.model for r in rows} <= {"final", "vat", "vst"}
    for key, exp in exps.items():
        assert exp.target in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
        for k, _ in exp.overrides:
            node = params
            for part in k.split("."):
                assert part in node, (key, k)
                node = node[part]
    methods = group_options("method", REPO / "conf")
    assert set(specs.METHOD_LABELS) == set(methods) == set(specs.PAPER_MAIN)
    # Table 4's class-balanced row uses our proportion knob; every ablation is on our method.
    assert dict(exps["vst_cb"].overrides)["vst.cbst_portion"] == params["vst"]["alpha"]
    assert all(dict(e.overrides)["method"] == ("ours" if k not in methods else k) for k, e in exps.items())
    # Table 4's generators and Table 7's columns are entries of the pseudo-label generators' registry.
    from videoda.domain_adaptation.pseudo_label_analysis import TABLE7_GENERATORS
    from videoda.domain_adaptation.pseudo_labels import GENERATORS
    assert {dict(e.overrides)["vst.pseudo_label"] for e in exps.values()
            if "vst.pseudo_label" in dict(e.overrides)} == set(GENERATORS)
    assert list(specs.TABLE7_LABELS) == list(TABLE7_GENERATORS) and set(TABLE7_GENERATORS.values()) <= set(GENERATORS)


def test_queue_commands_and_names():
    exps = specs.experiments(repo_params())
    argv = runner.queue_command("p_miou", exps["p_miou"], 3)
    assert argv == ["dvc", "exp", "run", "--queue", "-n", "p-miou-s3", "-S", "seed=3", "-S", "method=ours",
                    "-S", "vst.equal_proportions=[0.4,0.5]", "pseudo_labels"]
    assert runner.format_value(False) == "false" and runner.format_value(0.8) == "0.8"
    assert runner.format_value("x") == "x"
    pairs = specs.needed([0, 1])
    assert len(pairs) == 2 * len(exps) and pairs[0] == ("source_only", 0) and pairs[-1][1] == 1
    assert len({specs.exp_name(k, s) for k, s in pairs}) == len(pairs)


def metrics_entry(miou, vpq):
    return {"miou": miou, "iou": {c: miou for c in CLASSES},
            "vpq": {"mean": vpq, "per_class": {c: vpq for c in CLASSES}}}


def fake_show(values):
    """`dvc exp show --json` output: workspace, then the baseline commit with experiments named as given.
    values: {name: {model: (miou, vpq)}}; a name mapped to None is a failed experiment."""
    revs = []
    for name, models in values.items():
        if models is None:
            revs.append({"rev": "f" * 40, "name": name, "data": None, "error": {"msg": "failed"}})
            continue
        if models in ("queued", "running"):         # these show the baseline's files
            revs.append({"rev": "d" * 40, "name": name, "state": models, "data": {
                "params": {}, "metrics": {"reports/metrics.json": {"data": {"vst": metrics_entry(1.0, 1.0)}}}}})
            continue
        metrics = {"reports/metrics.json": {"data": {m: metrics_entry(*v) for m, v in models.items()}}}
        revs.append({"rev": "e" * 40, "name": name, "data": {"params": {"params.yaml": {"data": {"seed": 0}}},
                                                              "metrics": metrics}})
    return [{"rev": "workspace", "data": {}, "experiments": None},
            {"rev": "a" * 40, "name": "main", "data": {"params": {}, "metrics": {}},
             "experiments": [{"revs": [r], "executor": {"state": r.pop("state", "success")}} for r in revs]},
            {"rev": "b" * 40, "name": "old", "data": {}, "experiments": [{"revs": [{"name": "ours-s0"}]}]}]


def test_read_experiments_keeps_the_baselines_finished_runs():
    show = fake_show({"ours-s0": {"vst": (40.0, 25.0)}, "ours-s1": None, "iast-s0": "running",
                      "iast-s1": "queued"})
    found = runner.read_experiments(show)
    assert set(found) == {"@baseline", "ours-s0"} and runner.pending_experiments(show) == {"iast-s0", "iast-s1"}
    assert statistics.model_metrics(found, "ours", 0, "vst")[:2] == (40.0, 25.0)
    assert statistics.model_metrics(found, "ours", 1, "vst") is None
    assert statistics.model_metrics(found, "ours", 0, "vat") is None


def show_on(commit, values):
    """fake_show with the baseline commit ``commit`` (one hex digit, repeated)."""
    show = fake_show(values)
    show[1]["rev"] = commit * 40
    return show


def test_the_runs_file_adds_up_runs_of_several_commits_and_the_report_renders_from_it(tmp_path, monkeypatch):
    out = tmp_path / "reports/paper_tables.md"
    runs_file = tmp_path / "reports/paper_tables.json"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)                     # (not a git repository: no experiment has a reports/flow.json)
    monkeypatch.setattr(runner, "cpu_model", lambda: "Some CPU")
    monkeypatch.setattr(runner, "dvc_exp_show", lambda rev=None: show_on("a", {
        "ours-s0": {"final": (40.0, 25.0)}, "my-own-s0": {"final": (1.0, 1.0)}, "ours-s1": None}))
    assert runner.collect([0, 1], out) == 1             # runs missing
    runs = runner.load_runs(runs_file)
    assert set(runs) == {"ours-s0"} and runs["ours-s0"]["commit"] == "a" * 40      # not a table's run: not kept
    assert runs["ours-s0"]["cpu"] == "Some CPU"
    # Another session, another clone: its experiments of commit c are added; a run of the same name replaces.
    monkeypatch.setattr(runner, "cpu_model", lambda: "Other CPU")
    monkeypatch.setattr(runner, "dvc_exp_show", lambda rev=None: show_on("c", {
        "ours-s1": {"final": (44.0, 27.0)}, "iast-s0": {"final": (39.0, 24.0)}}))
    runner.collect([0, 1], out)
    runs = runner.load_runs(runs_file)
    assert {n: r["commit"][0] for n, r in runs.items()} == {"ours-s0": "a", "ours-s1": "c", "iast-s0": "c"}
    assert statistics.model_metrics(runs, "ours", 0, "final")[:2] == (40.0, 25.0)
    assert statistics.model_metrics(runs, "ours", 1, "final")[:2] == (44.0, 27.0)
    text = out.read_text()
    assert ("runs on commit ccccccc (seeds 0, 1; 2 runs), aaaaaaa (seed 0; 1 run), on the CPU Other CPU (seeds 0, "
            "1; 2 runs), Some CPU (seed 0; 1 run);") in text
    assert "| Ours | `ours-s<seed>` final | 42.00 ± 2.83 [16.59, 67.41] | 26.00 ± 1.41 [13.29, 38.71] |" in text
    lines = runs_file.read_text().splitlines()       # one run a line, sorted
    assert len(lines) == 5 and lines[1].startswith('"iast-s0": {') and lines[3].startswith('"ours-s1": {')
    # The report renders from the runs file alone (git), to the byte.
    again = tmp_path / "again/reports/paper_tables.md"
    render.write_report(runner.load_runs(runs_file), [0, 1], again)
    assert again.read_text() == text
    monkeypatch.setattr(runner, "dvc_exp_show", lambda rev=None: show_on("d", {"ours-s0": {"final": (41.0, 26.0)}}))
    runner.collect([0, 1], out)
    assert runner.load_runs(runs_file)["ours-s0"]["commit"] == "d" * 40


def test_run_does_not_queue_what_the_runs_file_has(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pt.md"
    runner.save_runs(runner.runs_path(out), {"ours-s0": {"commit": "a" * 40, "cpu": "c", "metrics": {}},
                                     "iast-s3": {"commit": "a" * 40, "cpu": "c", "metrics": {}}})
    monkeypatch.setattr(runner, "dvc_exp_show", lambda rev=None: fake_show({"cbst-s0": {"final": (1.0, 1.0)}}))
    monkeypatch.chdir(REPO)
    assert main(["paper-tables", "--seeds", "0", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("dvc exp run --queue") == len(specs.experiments(repo_params())) - 2
    assert "-n ours-s0 " not in printed and "-n cbst-s0 " not in printed and "-n iast-s0 " in printed


@pytest.mark.parametrize("text", ["{", '{"runs": []}', '{"runs": {"my-own-s0": {"commit": "a", "cpu": "c", "metrics": {}}}}',
                                  '{"runs": {"ours-s0": {"cpu": "c", "metrics": {}}}}'])
def test_a_malformed_runs_file_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys, text):
    out = tmp_path / "reports/paper_tables.md"
    out.parent.mkdir()
    runner.runs_path(out).write_text(text)
    monkeypatch.setattr(runner, "dvc_exp_show", lambda rev=None: fake_show({"ours-s0": {"vst": (40.0, 25.0)}}))
    assert main(["paper-tables", "--seeds", "0", "--collect-only", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {runner.runs_path(out)}: not a paper-tables runs file")
    assert sorted(p.name for p in out.parent.iterdir()) == ["paper_tables.json"]
    assert runner.runs_path(out).read_text() == text


def test_mean_std_and_format_by_hand():
    r = statistics.summarize([40.0, 44.0, None])
    m, s, n = r.mean, r.std, r.n
    assert (m, n) == (42.0, 2) and s == pytest.approx(math.sqrt(8.0))        # sample std: ((2^2 + 2^2) / 1)^.5
    assert render.pm(m, s, n) == "42.00 ± 2.83" and render.pm(41.0, math.nan, 1) == "41.00"
    empty = statistics.summarize([])
    assert render.pm(empty.mean, empty.std, empty.n) == "not run"
    assert statistics.ranks([3.0, math.nan, 5.0, 3.0]) == [2, "–", 1, 2]


def test_confidence_interval_by_hand():
    """95% CI of the mean: mean ± t_{0.975, n-1} s / sqrt(n). [40, 44]: s = sqrt(8), t_{0.975,1} = 12.7062 ->
    42 ± 25.4124. [1..5]: s = sqrt(2.5), t_{0.975,4} = 2.7764 -> 3 ± 1.9632."""
    assert statistics.t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert statistics.t_quantile(4) == pytest.approx(2.7764, abs=1e-4)
    s = statistics.summarize([40.0, 44.0, None, math.nan])
    assert (s.n, s.mean, s.std) == (2, 42.0, pytest.approx(math.sqrt(8)))
    assert (s.lo, s.hi) == (pytest.approx(42 - 25.4124, abs=1e-4), pytest.approx(42 + 25.4124, abs=1e-4))
    s = statistics.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.lo, s.hi) == (pytest.approx(1.0368, abs=1e-4), pytest.approx(4.9632, abs=1e-4))
    assert render.with_ci(s) == "3.00 ± 1.58 [1.04, 4.96]" and render.with_ci(statistics.summarize([7.0])) == "7.00"
    assert statistics.summarize([]).n == 0 and render.with_ci(statistics.summarize([])) == "not run"


def test_verdicts_by_hand():
    """The paper's order a > b: our paired differences a - b agree if their 95% CI lies above 0, disagree below,
    and are undecided if it spans 0 ([-1, 1, 2]: 0.67 ± 4.30 x 1.53 / sqrt 3 = [-3.13, 4.46]) or one seed ran."""
    assert statistics.verdict(statistics.summarize([1.0, 2.0, 3.0, 4.0, 5.0])) == "agrees"
    assert statistics.verdict(statistics.summarize([-1.0, -2.0, -3.0, -4.0, -5.0])) == "disagrees"
    s = statistics.summarize([-1.0, 1.0, 2.0])
    assert (s.lo, s.hi) == (pytest.approx(-3.1279, abs=1e-4), pytest.approx(4.4612, abs=1e-4))
    assert statistics.verdict(s) == "undecided" and statistics.verdict(statistics.summarize([9.0])) == "undecided"
    assert statistics.verdict(statistics.summarize([])) == "undecided"


def test_orderings_pair_the_seeds_and_skip_rows_of_one_model():
    """Rows a (paper 50) > b (45) > c (40), and c2 reading c's model (no order between them). Ours per seed:
    a 41, 43, 45; b 42, 44, 46 (a - b = -1 every seed: CI [-1, -1], disagrees); c 30, 20, 40 (a - c = 11, 23, 5:
    mean 13, CI 13 ± 4.3027 x 9.165 / sqrt 3 = [-9.77, 35.77], undecided)."""
    a, b, c = (specs.Row(x, x, "vst", p) for x, p in (("a", (50.0, 30.0)), ("b", (45.0, 30.0)), ("c", (40.0, 20.0))))
    c2 = specs.Row("c2", "c", "vst", (41.0, 21.0))
    ours = {"a": (41.0, 43.0, 45.0), "b": (42.0, 44.0, 46.0), "c": (30.0, 20.0, 40.0)}
    found = {specs.exp_name(k, s): {"metrics": {"reports/metrics.json": {"vst": {
        "miou": v[s], "iou": {}, "vpq": {"mean": v[s] / 2, "per_class": {}}}}}} for k, v in ours.items() for s in range(3)}
    orders = statistics.stated_orderings(found, "T", [a, b, c, c2], [0, 1, 2])
    by_pair = {(o.metric, o.high, o.low): o for o in orders}
    assert ("mIoU", "c2", "c") not in by_pair and ("VPQ^s", "a", "b") not in by_pair     # equal paper VPQ^s
    ab = by_pair["mIoU", "a", "b"]
    assert (ab.diff.mean, ab.diff.lo, ab.diff.hi, ab.verdict) == (-1.0, -1.0, -1.0, "disagrees")
    ac = by_pair["mIoU", "a", "c"]
    assert ac.diff.mean == 13.0 and ac.diff.lo == pytest.approx(-9.7675, abs=1e-3) and ac.verdict == "undecided"
    assert len(orders) == 5 + 4                # mIoU: ab ac ac2 bc bc2; VPQ^s: ac ac2 bc bc2
    assert statistics.verdict_counts(orders) == {"agrees": 0, "disagrees": 1, "undecided": 8}


def test_report_has_every_row_mean_std_and_plots(tmp_path):
    values = {}
    for seed, bump in ((0, 0.0), (1, 2.0)):
        for key in specs.experiments(repo_params()):
            values[specs.exp_name(key, seed)] = {m: (30.0 + bump, 20.0 + bump) for m in ("final", "vat", "vst")}
        t7 = {f"{p:g}": {g: {"knob": 0.1, "proportion": 100 * p, "p_miou": 50.0 + bump} for g in ("cb", "ia", "ours")}
              for p in specs.TABLE7_PROPORTIONS}
        values[specs.exp_name("p_miou", seed)] = {}
    show = fake_show(values)
    for group in show[1]["experiments"]:
        rev = group["revs"][0]
        if rev["name"].startswith("p-miou"):
            seed = int(rev["name"][-1])
            rev["data"]["metrics"]["reports/pseudo_labels.json"] = {"data": {"table7": {
                k: {g: {**r, "p_miou": 50.0 + 2 * seed} for g, r in row.items()} for k, row in t7.items()}}}
    epe = {"gt": 0.0, "dis": 3.0, "zero": 4.4}
    flow_json = lambda rev, path: json.dumps({"epe": {m: {"epe": v} for m, v in epe.items()}})   # noqa: E731
    found = runner.finished_runs(show, read=flow_json, cpu="Some CPU")
    for seed in (0, 1):                 # the pseudo labels' P-mIoU of ours with each flow: 50 / 49 / 47 + 2 seed
        for method, value in (("gt", 50.0), ("dis", 49.0), ("zero", 47.0)):
            key = specs.flow_key("ours", method, repo_params())
            found[specs.exp_name(key, seed)]["metrics"]["reports/p_miou.json"] = {"p_miou": value + 2 * seed}
    out = tmp_path / "reports/paper_tables.md"
    render.write_report(found, [0, 1], out, params=repo_params())
    text = out.read_text()
    assert (f"runs on commit aaaaaaa (seeds 0, 1; {len(found)} runs), on the CPU Some CPU (seeds 0, 1; "
            f"{len(found)} runs); their numbers are in `paper_tables.json`") in text
    for rows in specs.TABLES.values():
        for row in rows:
            assert f"| {row.label} |" in text
    # two seeds, 30 and 32: 31 ± 1.41, CI 31 ± 12.7062 x 1.41 / sqrt 2
    assert "31.00 ± 1.41 [18.29, 43.71]" in text and "21.00 ± 1.41 [8.29, 33.71]" in text
    assert "51.00 ± 1.41 [38.29, 63.71]" in text
    assert "Not run" not in text
    # every row moves with the seed alike: every paired difference is 0, 0 (CI [0, 0]), so every order undecided
    n = len(statistics.all_orderings(found, [0, 1]))
    assert f"**0 agree** (CI above 0), **0 disagree** (CI below 0), **{n} undecided**" in text
    assert n == 2 * (45 + 10 + 21 + 6 + 3) + 3      # Tables 1-6 on two metrics (all paper values differ), Table 7
    assert "| mIoU | Ours > IAST | 51.91 > 49.36 | +0.00 [+0.00, +0.00] | 2 | undecided |" in text
    assert "| P-mIoU at 0.4 | Ours (clip adaptive + agg.) > IA (instance adaptive) | 67.10 > 66.40 |" in text
    assert "P-mIoU at 0.3" not in text                    # a proportion not run has no verdict
    flow = text.split("## The flow-quality experiment")[1]
    assert "| EPE of the flow (px) | 0.00 ± 0.00 [0.00, 0.00] | 3.00 ± 0.00 [3.00, 3.00] | 4.40 ± 0.00" in flow
    assert "| Base + cut-out (ours, Table 4 and 6, Eq. 12) | 31.00 ± 1.41 [18.29, 43.71] |" in flow
    assert "| P-mIoU of the pseudo labels (Eq. 10-11) | 51.00 ± 1.41 [38.29, 63.71] | 50.00 ± 1.41" in flow
    assert "| P-mIoU of the pseudo labels | +1.00 [+1.00, +1.00] | +2.00 [+2.00, +2.00] | +3.00 [+3.00, +3.00] |" in flow
    assert cv2.imread(str(tmp_path / "reports/paper_tables/flow_quality.png")) is not None
    for name in ("table1-2.png", "table3.png", "table4.png", "table5.png", "table6.png"):
        img = cv2.imread(str(tmp_path / f"reports/paper_tables/{name}"))
        assert img is not None and img.shape[0] > 100 and f"paper_tables/{name}" in text
    # A seed that has not run is named as missing and the std falls back to one value.
    del found[specs.exp_name("ours", 1)]
    text = render.render(found, [0, 1], params=repo_params())
    assert "`ours-s1`" in text.split("Not run (yet):")[1]


def test_the_committed_report_is_what_the_committed_runs_file_renders(tmp_path):
    # README: the report is written from the runs file alone, nothing hand-edited; so the committed files must
    # agree to the byte: the markdown, its charts, and the runs file as save_runs writes what load_runs read.
    committed = (REPO / "reports/paper_tables.md").read_text()
    seeds = [int(s) for s in re.search(r"paper-tables --seeds ([0-9 ]+)`", committed).group(1).split()]
    out = tmp_path / "reports/paper_tables.md"
    runs = runner.load_runs(REPO / "reports/paper_tables.json")
    runner.save_runs(runner.runs_path(out), runs)
    render.write_report(runs, seeds, out, params=repo_params())
    assert out.read_bytes() == (REPO / "reports/paper_tables.md").read_bytes()
    assert runner.runs_path(out).read_bytes() == (REPO / "reports/paper_tables.json").read_bytes()
    charts = sorted(p.name for p in (tmp_path / "reports/paper_tables").iterdir())
    assert charts == sorted(p.name for p in (REPO / "reports/paper_tables").iterdir()) and charts
    for name in charts:
        assert (tmp_path / "reports/paper_tables" / name).read_bytes() == \
            (REPO / "reports/paper_tables" / name).read_bytes(), name


def test_bar_chart_shows_mean_std_and_the_papers_value():
    from matplotlib.colors import to_rgb

    rows = specs.TABLES["Table 5: our VST on different adversarial models"]
    a, b = rows[0], rows[1]
    stats = {r: [statistics.summarize([])] * 2 for r in rows}
    stats[a] = [statistics.summarize([38.0, 42.0]), statistics.summarize([19.0, 21.0])]    # two seeds: 95% CI whiskers
    stats[b] = [statistics.summarize([0.0]), statistics.summarize([100.0])]                # one seed: no whisker
    fig = render.bar_chart("title", rows, stats)
    ax = fig.axes[0]
    bars = {}
    for container in ax.containers:
        for patch in getattr(container, "patches", []):
            bars.setdefault(to_rgb(patch.get_facecolor()), []).append(patch.get_width())
    assert bars == {to_rgb("#1f77b4"): [40.0, 0.0], to_rgb("#2ca02c"): [20.0, 100.0]}
    assert len([c for c in ax.containers if not hasattr(c, "patches")]) == 2
    vertical = [seg for coll in ax.collections for seg in coll.get_segments() if seg[0][0] == seg[1][0]]
    ticks = sorted(float(seg[0][0]) for seg in vertical)              # (the whiskers are horizontal)
    assert ticks == sorted(v for r in rows for v in r.paper)          # one tick per bar at the paper's value
    shown = [t.get_text() for t in ax.texts]
    assert {"40.0", "20.0", "0.0", "100.0"} <= set(shown)
    assert shown.count("not run") == 2 * (len(rows) - 2)


def test_cli_rejects_negative_seeds(capsys):
    assert main(["paper-tables", "--seeds", "-1", "--dry-run"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_run_reproduces_the_baseline_first_and_reports_a_failing_dvc(tmp_path, monkeypatch, capsys):
    import subprocess

    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        raise subprocess.CalledProcessError(1, argv)

    monkeypatch.setattr(runner, "dvc_exp_show", lambda rev=None: fake_show({}))
    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.chdir(REPO)
    out = str(tmp_path / "pt.md")                   # (not the committed report: its runs file has seeds already)
    assert main(["paper-tables", "--seeds", "0", "--out", out]) == 2
    assert calls == [["dvc", "repro"]] and "`dvc repro` failed with exit status 1" in capsys.readouterr().err
    # --dry-run only prints the queue commands.
    calls.clear()
    assert main(["paper-tables", "--seeds", "0", "--dry-run", "--out", out]) == 0
    out = capsys.readouterr().out
    assert calls == [] and out.count("dvc exp run --queue") == len(specs.experiments(repo_params()))
