"""Stage `resolve_params`: check params.yaml (composed from conf/), then write every stage's params as
``<out>/<stage>.json``.

Each file holds the keys that stage reads (``videoda.config.stages``), and the stage reads its config from that
file alone. So DVC reruns a stage only when its own values change, and a phase shared by several methods (e.g.
AdaptSegNet's warm-up under CBST*, CRST* and IAST) is trained once and then restored from DVC's run cache. Every
value is checked before any file is written (``videoda.config.compose.check_params``): an unknown key, a bad
value, an override of a key the method fixes.
"""

import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)

import argparse
from pathlib import Path

from videoda.config.compose import CONF_DIR, check_params
from videoda.config.fields import PARAMS_FILE, read_params
from videoda.config.stages import write_resolved
from videoda.errors import run_stage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default=PARAMS_FILE)
    ap.add_argument("--conf", default=str(Path(__file__).resolve().parents[1] / CONF_DIR),
                    help="the config folder: its profile and method names, the keys each method fixes "
                         "(default: the repository's)")
    ap.add_argument("--out", default="data/params")
    args = ap.parse_args()
    write_resolved(check_params(read_params(args.params), source=args.params, conf_dir=args.conf), args.out)


if __name__ == "__main__":
    run_stage(main)
