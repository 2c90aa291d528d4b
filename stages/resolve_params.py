"""Stage `resolve_params`: the effective params of the stages a `method` preset can change.

Writes ``<out>/<stage>.json`` for each stage of ``videoda.presets.STAGE_PARAMS`` (vat, pseudo_labels, vst):
params.yaml with the preset applied, restricted to the keys that stage reads. Those stages depend on their
file, not on params.yaml, so DVC reruns them only when their effective values change, and a phase shared by
several methods (e.g. AdaptSegNet's warm-up under CBST*, CRST* and IAST) is trained once and then restored
from DVC's run cache.
"""

import argparse
import json
from pathlib import Path

from videoda.errors import run_stage
from videoda.params import load_params
from videoda.presets import STAGE_PARAMS, stage_params
from videoda.utils.io import atomic_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/params")
    args = ap.parse_args()
    params = load_params()
    resolved = {stage: stage_params(params, stage) for stage in STAGE_PARAMS}   # all checked before writing
    for stage, values in resolved.items():
        with atomic_path(Path(args.out) / f"{stage}.json") as tmp:
            tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    run_stage(main)
