"""Stage `resolve_params`: every stage's params, with the `method` preset applied, as ``<out>/<stage>.json``.

Each file holds the keys that stage reads (``videoda.config.stages``), and the stage reads
its config from that file alone. So DVC reruns a stage only when its *effective* values change, and a phase shared
by several methods (e.g. AdaptSegNet's warm-up under CBST*, CRST* and IAST) is trained once and then restored from
DVC's run cache. Every stage's values are checked before any file is written.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
from pathlib import Path

from videoda.config.fields import load_params
from videoda.config.stages import STAGES, resolved_json, stage_config
from videoda.errors import run_stage
from videoda.utils.io import atomic_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/params")
    args = ap.parse_args()
    params = load_params()
    for stage in STAGES:
        stage_config(stage, params)          # a bad value of any stage: nothing is written
    for stage in STAGES:
        with atomic_path(Path(args.out) / f"{stage}.json") as tmp:
            tmp.write_text(resolved_json(params, stage))


if __name__ == "__main__":
    run_stage(main)
