"""Screen VST settings: for each setting, pseudo labels from a start model, self-training, and the score on the
target-val clips, in parallel processes; one JSON line per setting.

Each setting is the default ``params.yaml`` with some ``vst`` (or ``flow.alpha`` / ``flow.occlusion_threshold``)
keys overridden, written ``key=value`` and separated by spaces in one argument. It runs the same library code as
stages ``pseudo_labels`` and ``vst`` (``generate_pseudo_labels``, ``self_train``) on the pipeline's outputs
(``data/prepared``, ``data/flow/target_train.h5``, ``models/vat.pt``), without DVC: a quick way to compare
settings before committing one with ``dvc exp run -S ...``. ``seed=N`` overrides the top-level seed.

Usage (repo root, after ``dvc repro``):
    python benchmarks/vst_screen.py --workers 2 "" "refine=none" "alpha=0.8 beta=0 gamma=0" --out screen.jsonl
``""`` is the default setting; ``--device cuda`` trains on a GPU (numbers differ slightly from the CPU's).
"""

import argparse
import copy
import json
import multiprocessing as mp
import time

import torch
import yaml

from videoda.data.pairs import load_split
from videoda.domain_adaptation.pseudo_labels import generate_pseudo_labels, pseudo_label_config, pseudo_label_report
from videoda.domain_adaptation.self_training import self_train, unlabelled_clips, vst_config
from videoda.domain_adaptation.train import seed_everything
from videoda.evaluate import evaluate_clips
from videoda.flow.store import FlowStore
from videoda.model import load_checkpoint
from videoda.params import Section, load_params

FLOW_KEYS = ("alpha", "occlusion_threshold")


def parse_setting(text, params):
    """'key=value ...' -> (params with the overrides, {key: value}); values are read as YAML scalars."""
    params, changed = copy.deepcopy(params), {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"setting {text!r}: expected key=value, got {item!r}")
        value = yaml.safe_load(value)
        if key == "seed":
            params["seed"] = value
        elif key.startswith("flow.") and key[5:] in FLOW_KEYS:
            params["flow"][key[5:]] = value
        elif key in params["vst"]:
            params["vst"][key] = value
        else:
            raise SystemExit(f"setting {text!r}: unknown key {key!r} (a vst key, flow.alpha, "
                             f"flow.occlusion_threshold or seed)")
        changed[key] = value
    return params, changed


def screen(job):
    params, changed, args = job
    torch.set_num_threads(args.threads)
    seed = Section(params).int("seed", lo=0)
    seed_everything(seed)
    if args.device != "cpu":
        torch.use_deterministic_algorithms(False)   # some CUDA kernels have no deterministic version
    start = time.time()
    cfg, label_cfg = vst_config(params), pseudo_label_config(params)
    model, _ = load_checkpoint(args.init)
    model.to(args.device)
    full = load_split(args.data, "target_train")
    clips = unlabelled_clips(full)
    source = load_split(args.data, "source") if cfg.lambda_source > 0 else None
    with FlowStore(args.flow) as store:
        pseudo, _ = generate_pseudo_labels(model, clips, store, label_cfg)
        labels = pseudo_label_report(pseudo, full)
        self_train(model, clips, pseudo, store, cfg, label_cfg, seed, source)
    scores, _ = evaluate_clips(model, load_split(args.data, "target_val"), args.label_stride)
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
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap(screen, jobs):
            line = json.dumps(result)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
