"""Queueing, running and collecting the tables' ``dvc exp`` runs, and the runs file (reports/paper_tables.json)
that keeps every finished run's numbers in git."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from videoda.config.fields import read_params
from videoda.numerics import share_cores
from videoda.paper_tables.render import write_report
from videoda.paper_tables.specs import exp_name, experiments, is_table_run, missing_experiments, needed
from videoda.utils.machine import cpu_model


def format_value(value):
    """A params value as ``dvc exp run -S`` parses it (YAML: lists in brackets, booleans lower case)."""
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def queue_command(key, exp, seed):
    """The ``dvc exp run --queue`` argv of one (experiment, seed)."""
    argv = ["dvc", "exp", "run", "--queue", "-n", exp_name(key, seed), "-S", f"seed={seed}"]
    for k, v in exp.overrides:
        argv += ["-S", f"{k}={format_value(v)}"]
    return argv + [exp.target]


# --- reading `dvc exp show --json` ----------------------------------------------------------------------------

def read_experiments(show):
    """{experiment name: {"params": params.yaml, "metrics": {file: data}}} of the baseline's finished
    experiments (the first commit in ``dvc exp show --json`` output), plus the baseline under ``"@baseline"``.
    Queued and running experiments show the baseline's files, and failed ones none: both are left out."""
    out = {}
    for entry in _baseline(show):
        out["@baseline"] = _entry(entry)
        for group in entry.get("experiments") or []:
            if (group.get("executor") or {}).get("state") not in (None, "success"):
                continue
            for rev in group.get("revs", []):
                if rev.get("name") and not rev.get("error") and rev.get("data"):
                    out[rev["name"]] = _entry(rev)
    return out


def pending_experiments(show):
    """Names of the baseline's experiments that are queued or running."""
    return {rev.get("name") for entry in _baseline(show) for group in entry.get("experiments") or []
            if (group.get("executor") or {}).get("state") in ("queued", "running")
            for rev in group.get("revs", [])}


def _baseline(show):
    return [e for e in show if e.get("rev") != "workspace"][:1]


def _entry(rev):
    data = rev.get("data") or {}
    metrics = {f: (m or {}).get("data") for f, m in (data.get("metrics") or {}).items()}
    return {"metrics": metrics, "rev": rev.get("rev")}


def dvc_exp_show(rev=None):
    """``dvc exp show --json`` of HEAD, or of commit ``rev`` (experiments belong to the commit they ran on)."""
    r = subprocess.run(["dvc", "exp", "show", "--json"] + (["--rev", rev] if rev else []), capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def experiment_file(rev, path):
    """The text of ``path`` as experiment commit ``rev`` holds it (``git show``), or None. reports/flow.json is a
    git-tracked output (``cache: false``), not a DVC metric, so ``dvc exp show`` does not carry it."""
    r = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


# --- the runs file: the numbers of every finished run, kept in git --------------------------------------------
# A `dvc exp` lives in one clone's .git and DVC cache; the runs file is committed, so the seeds of a long run that
# spans sessions or machines add up, and the report renders from git alone.

def runs_path(out_md):
    """reports/paper_tables.json beside reports/paper_tables.md."""
    return Path(out_md).with_suffix(".json")


def finished_runs(show, read=experiment_file, cpu=None):
    """{name: {"commit": the commit it ran on, "cpu": the CPU model, "metrics": {file: data}}} of the finished
    experiments in ``show`` that the tables read, each with its reports/flow.json (a git-tracked output, not a
    DVC metric). ``cpu``: this machine's (default), which ran them: a ``dvc exp`` queue runs in its own clone.
    Torch's training bytes differ between CPU models even with the pinned numerics
    (docs/engineering/reproducibility.md), so the report names it."""
    found = read_experiments(show)
    commit = (found.pop("@baseline", None) or {}).get("rev")
    cpu = cpu or cpu_model()
    runs = {}
    for name, exp in found.items():
        if not is_table_run(name):
            continue
        metrics = dict(exp["metrics"])
        flow = read(exp["rev"], "reports/flow.json")
        if flow:
            metrics["reports/flow.json"] = json.loads(flow)
        runs[name] = {"commit": commit, "cpu": cpu, "metrics": metrics}
    return runs


def load_runs(path):
    """The runs file as {name: run}; {} when there is none. A malformed one is an error naming it."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        runs = json.loads(path.read_text())["runs"]
        bad = [n for n, r in runs.items() if not is_table_run(n) or not isinstance(r.get("metrics"), dict)
               or not all(isinstance(r.get(k), str) for k in ("commit", "cpu"))]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RuntimeError(f"{path}: not a paper-tables runs file ({type(e).__name__}: {e})") from None
    if bad:
        raise RuntimeError(f"{path}: not a paper-tables runs file (run {bad[0]!r} lacks its commit, cpu or "
                           f"metrics, or is not an experiment the tables read)")
    return runs


def save_runs(path, runs):
    """Write the runs file atomically, one run a line (sorted), so a commit's diff shows the runs it adds."""
    from videoda.utils.io import atomic_path
    lines = [f"{json.dumps(n)}: {json.dumps(runs[n], sort_keys=True, separators=(',', ':'))}" for n in sorted(runs)]
    with atomic_path(Path(path)) as tmp:
        tmp.write_text('{"runs": {\n' + ",\n".join(lines) + "\n}}\n")


# --- the command ----------------------------------------------------------------------------------------------

def run(seeds, out_md, jobs=1, dry_run=False, rerun=False, params_path="params.yaml"):
    """Queue every missing (experiment, seed), run the queue, collect. Returns the exit status."""
    params = read_params(params_path)
    exps = experiments(params)
    show = dvc_exp_show()
    in_dvc, pending = read_experiments(show), pending_experiments(show)
    found = {**load_runs(runs_path(out_md)), **in_dvc}
    todo = [(k, s) for k, s in needed(seeds)
            if exp_name(k, s) not in pending and (rerun or exp_name(k, s) not in found)]
    if todo and not dry_run:
        # Each experiment starts from the workspace's dvc.lock. A stage it does not change is checked out from
        # the cache by the hashes in that lock, and retrained if they are missing (a fresh clone: the committed
        # lock's checkpoints are not in its cache), for every experiment. So reproduce the workspace first:
        # a no-op when it is up to date, the default pipeline (about 7 min) in a fresh clone.
        print("dvc repro (the baseline every experiment starts from)", flush=True)
        subprocess.run(["dvc", "repro"], check=True)
    print(f"{len(needed(seeds)) - len(todo)} of {len(needed(seeds))} experiments already run or queued; "
          f"queueing {len(todo)}", flush=True)
    for key, seed in todo:
        argv = queue_command(key, exps[key], seed)
        print(" ".join(argv), flush=True)
        if dry_run:
            continue
        if rerun and exp_name(key, seed) in in_dvc:
            subprocess.run(["dvc", "exp", "remove", exp_name(key, seed)], check=True)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    if dry_run:
        return 0
    if todo:
        if jobs > 1:
            share_cores()     # the experiments run side by side: their idle OpenMP threads sleep (videoda/numerics.py)
        r = subprocess.run(["dvc", "exp", "run", "--run-all", "-j", str(jobs)])
        if r.returncode != 0:
            print("some experiments failed (dvc queue status; dvc queue logs <name>); collecting the rest",
                  file=sys.stderr)
    return collect(seeds, out_md)


def collect(seeds, out_md, rev=None):
    """Add the finished experiments of HEAD (or commit ``rev``) to the runs file, a run of the same name replacing
    the one there, and render the report from it."""
    path = runs_path(out_md)
    found = {**load_runs(path), **finished_runs(dvc_exp_show(rev))}
    save_runs(path, found)
    write_report(found, seeds, out_md)
    missing = missing_experiments(found, seeds)
    print(f"wrote {out_md} ({len(needed(seeds)) - len(missing)} of {len(needed(seeds))} experiments)")
    return 1 if missing else 0
