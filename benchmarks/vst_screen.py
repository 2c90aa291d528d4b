"""Screen VST settings: for each setting, pseudo labels from a start model, self-training, and the score on the
target-val clips, in parallel processes; one JSON line per setting.

Each setting is the default ``params.yaml`` with some ``vst`` (or ``flow.alpha`` / ``flow.occlusion_threshold``)
keys overridden, written ``key=value`` and separated by spaces in one argument. It runs the same library code as
stages ``pseudo_labels`` and ``vst`` (``make_pseudo_labels``, ``self_train``) on the pipeline's outputs
(``data/prepared``, ``data/flow/target_train.h5``, ``models/vat.pt``), without DVC: a quick way to compare
settings before committing one with ``dvc exp run -S ...``. ``seed=N`` overrides the top-level seed.

Usage (repo root, after ``dvc repro``):
    python benchmarks/vst_screen.py --workers 2 "" "refine=none" "alpha=0.8 beta=0 gamma=0" --out screen.jsonl
``""`` is the default setting; ``--device cuda`` trains on a GPU (numbers differ slightly from the CPU's).
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from videoda.config.fields import load_params, with_overrides
from videoda.data.classes import DEFAULT
from videoda.numerics import share_cores
from videoda.config.stages import stage_config
from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_label_analysis import PseudoLabelAnalysis
from videoda.domain_adaptation.pseudo_labels import PseudoLabelFiles, make_pseudo_labels
from videoda.domain_adaptation.self_training import VSTData, self_train, unlabelled_clips
from videoda.domain_adaptation.train import seed_everything
from videoda.errors import ParamError
from videoda.evaluate import PREDICT_BATCH_SIZE, evaluate_clips
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint
from videoda.utils.device import resolve_runtime

FLOW_KEYS = ("flow.alpha", "flow.occlusion_threshold")


def parse_setting(text, params):
    """'key=value ...' -> (the VST stage's config with the overrides, {key: value}); values are read as YAML
    scalars, a bare key is a ``vst`` key."""
    overrides = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"setting {text!r}: expected key=value, got {item!r}")
        full = key if key == "seed" or key in FLOW_KEYS else f"vst.{key}"
        if "." in key and key not in FLOW_KEYS:
            raise SystemExit(f"setting {text!r}: unknown key {key!r} (a vst key, {', '.join(FLOW_KEYS)} or seed)")
        overrides[full] = yaml.safe_load(value)
    try:
        cfg = stage_config("vst", with_overrides(params, overrides))
    except ParamError as e:
        raise SystemExit(f"setting {text!r}: {e}") from None
    return cfg, {k.removeprefix("vst."): v for k, v in overrides.items()}


def screen(job):
    cfg, changed, args = job
    torch.set_num_threads(args.threads)
    seed_everything(cfg.seed)
    if args.device != "cpu":
        torch.use_deterministic_algorithms(False)   # some CUDA kernels have no deterministic version
    start = time.time()
    compute = resolve_runtime(args.device)
    model = compute.module(load_checkpoint(args.init)[0])
    full = load_split(args.data, "target_train")
    clips = unlabelled_clips(full)
    source = load_split(args.data, "source") if cfg.lambda_source > 0 else None
    with FlowStore(args.flow) as store, tempfile.TemporaryDirectory(prefix="vst-screen-") as tmp:
        # as stage pseudo_labels: the labels as PNGs, their report from the ground truth; VST never sees it
        analysis = PseudoLabelAnalysis(cfg.labels, cfg.tau, store)
        make_pseudo_labels(model, full, store, cfg.labels, Path(tmp) / "labels", compute, analysis)
        labels = analysis.report
        self_train(model, VSTData(clips, PseudoLabelFiles(Path(tmp) / "labels", clips), store, source), cfg, compute)
    scoring = SimpleNamespace(label_stride=args.label_stride, batch_size=PREDICT_BATCH_SIZE, classes=DEFAULT,
                              resolution="prepared")
    scores, _ = evaluate_clips(model, load_split(args.data, "target_val"), scoring)
    return {"setting": changed, "miou": scores["miou"], "vpq": scores["vpq"]["mean"],
            "pseudo_label_proportion": labels["proportion"], "p_miou": labels["p_miou"],
            "seconds": round(time.time() - start, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="+", help='e.g. "" (the defaults) or "alpha=0.5 refine=none"')
    ap.add_argument("--init", default="models/vat.pt")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--flow", default="data/flow/target_train.h5")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--label-stride", type=int, default=5)
    ap.add_argument("--out", help="also append the JSON lines here")
    args = ap.parse_args()
    params = load_params()
    jobs = [(*parse_setting(s, params), args) for s in args.settings]
    if args.workers > 1:
        share_cores()      # the workers run side by side: their idle OpenMP threads sleep (videoda/numerics.py)
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap(screen, jobs):
            line = json.dumps(result)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
