"""Command line: ``python -m videoda <command>``.

``eval`` scores label-PNG predictions of any method against Cityscapes-VPS style ground truth with
mIoU and VPQ^s (see ``videoda.eval_folder``, ``videoda.metrics``). ``segment`` runs a trained model on any video file, writes a
colourised overlay video and prints a temporal-consistency score (see ``videoda.segment``). ``paper-tables``
queues, runs and collects the ``dvc exp`` runs of the paper's Tables 1-7 (see ``videoda.paper_tables``).
``vps-img-all`` builds Cityscapes-VPS ``train/img_all/`` from Cityscapes' ``leftImg8bit_sequence`` (see
``videoda.data.vps_img_all``). ``params`` composes params.yaml from conf/ with ``-S key=value`` overrides, as
``dvc exp run -S`` does, for ``dvc repro`` (see ``videoda.config.compose``). ``stage-command`` prints a DVC
stage's command, for the nodes of a multi-node run other than the one DVC runs on (``examples/slurm_stage.sh``).
``deps`` writes each dvc.yaml stage's code deps, its script's import closure (see ``videoda.dvc_deps``). ``docs``
writes the docs' reference pages from the code (see ``videoda.docs_reference``). Bad input exits with status 2 and
writes nothing.
"""

import argparse
import subprocess
import sys

from videoda.data.classes import DEFAULT_CLASS_SET, load_class_set
from videoda.errors import DataError, ParamError
from videoda.eval_folder import evaluate_folder
from videoda.utils.io import write_json


def print_report(report):
    from rich.console import Console
    from rich.table import Table

    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    table = Table(title=f"{report['clips']} clips, {report['frames']} annotated frames")
    for col in ("class", "IoU (%)", "VPQ^s (%)"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in report["iou"]:
        table.add_row(c, fmt(report["iou"][c]), fmt(report["vpq"]["per_class"][c]))
    table.add_section()
    table.add_row("mean", fmt(report["miou"]), fmt(report["vpq"]["mean"]), style="bold")
    Console().print(table)
    ks = [k for k in report["vpq"] if k.startswith("k")]
    print("VPQ^s per window: " + ", ".join(f"{k}={fmt(report['vpq'][k])}" for k in ks))
    if "not_defined" in report["vpq"]:
        print(f"VPQ^s not defined: {report['vpq']['not_defined']}")


def cmd_eval(args):
    classes = load_class_set(args.classes, key="--classes", source="videoda eval")
    report = evaluate_folder(args.pred, args.gt, args.gt_ids, args.label_stride, classes)
    write_json(args.out, report)
    print_report(report)
    return 0


def cmd_segment(args):
    import torch

    from videoda.segment import SegmentOptions, segment_video
    from videoda.utils.device import resolve_runtime

    torch.set_num_threads(args.threads)
    # a device that is not here, or bf16 where it is not supported: an error naming the option, before anything
    # is read
    compute = resolve_runtime(args.device, args.precision, device_key="--device", precision_key="--precision",
                              show_progress=True)
    options = SegmentOptions(args.height, args.width, args.alpha, args.batch_size, args.max_frames, args.dis_preset,
                             load_class_set(args.classes, key="--classes", source="videoda segment"))
    report = segment_video(args.input, args.model, args.out, options, args.json, compute)
    tc = report["temporal_consistency"]
    h, w = report["frame_size"]
    mh, mw = report["model_size"]
    print(f"{report['frames']} frames ({w}x{h}, segmented at {mw}x{mh}) -> {args.out}")
    print("temporal consistency: " + ("n/a (one frame)" if tc is None else
                                      f"{tc:.2f} % of {report['counted_pixels']} pixels agree with the previous "
                                      f"frame's label carried along the optical flow"))
    fps = report["frames_per_second"]
    print(f"{report['seconds']:.1f} s, {fps if fps is not None else '-'} frames/s on {report['device']} "
          f"({report['precision']})")
    return 0


def cmd_paper_tables(args):
    from videoda import paper_tables

    if any(s < 0 for s in args.seeds):
        print(f"error: --seeds must be non-negative integers, got {args.seeds}", file=sys.stderr)
        return 2
    try:
        if args.collect_only:
            return paper_tables.collect(args.seeds, args.out, rev=args.rev)
        return paper_tables.run(args.seeds, args.out, jobs=args.jobs, dry_run=args.dry_run, rerun=args.rerun)
    except subprocess.CalledProcessError as e:
        print(f"error: `{' '.join(e.cmd)}` failed with exit status {e.returncode}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_params(args):
    from videoda.config.compose import write_params

    text = write_params(args.set, out=args.out, conf_dir=args.conf)
    print(f"{args.out}: {len(text.splitlines())} lines composed from {args.conf}/"
          + (f" with -S {' -S '.join(args.set)}" if args.set else ""))
    return 0


def cmd_vps_img_all(args):
    from videoda.data.vps_img_all import build_img_all

    clips, frames = build_img_all(args.vps, args.cityscapes, split=args.split, link=args.link,
                                  overwrite=args.overwrite)
    print(f"{clips} clips, {frames} frames -> {args.vps}/{args.split}/img_all")
    return 0


def stage_command(stage, dvc_yaml="dvc.yaml"):
    """The shell command of ``stage`` in ``dvc_yaml``, on one line; a missing file or stage is a DataError."""
    import yaml

    try:
        stages = yaml.safe_load(open(dvc_yaml))["stages"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as e:
        raise DataError(f"{dvc_yaml}: no readable DVC stages ({type(e).__name__})") from None
    if stage not in stages or not isinstance(stages[stage].get("cmd"), str):
        raise DataError(f"{dvc_yaml}: no stage {stage!r} with a command (stages: {', '.join(stages)})")
    return " ".join(stages[stage]["cmd"].split())


def cmd_stage_command(args):
    print(stage_command(args.stage, args.dvc_yaml))
    return 0


def cmd_deps(args):
    from videoda.dvc_deps import write

    stale = write(args.dvc_yaml, check=args.check)
    if args.check:
        print(f"{args.dvc_yaml}: code deps are " + ("stale: run python -m videoda deps" if stale else "current"))
        return int(stale)
    print(f"{args.dvc_yaml}: code deps " + ("rewritten" if stale else "already current"))
    return 0


def cmd_docs(args):
    from videoda.docs_reference import write

    stale = write(args.out, build_parser(), conf_dir=args.conf, stages_dir=args.stages, check=args.check)
    if args.check:
        print(f"{args.out}: " + (f"stale: {', '.join(stale)}; run python -m videoda docs" if stale else "current"))
        return int(bool(stale))
    print(f"{args.out}: " + (f"rewritten: {', '.join(stale)}" if stale else "already current"))
    return 0


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


# videoda.flow.backends.DIS_PRESETS' names, spelled out so that the parser does not import torch
DIS_PRESET_NAMES = ("ultrafast", "fast", "medium")
PRECISION_NAMES = ("fp32", "bf16")     # videoda.utils.device.PRECISIONS, likewise


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m videoda", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eval", help="score label-PNG predictions with mIoU and VPQ^s")
    p.add_argument("--pred", required=True, help="folder of predicted train-id PNGs, one per gt frame")
    p.add_argument("--gt", required=True, help="folder of gt PNGs named <clip>_<frame>_*.png")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--gt-ids", choices=("train", "cityscapes"), default="train",
                   help="gt PNGs hold our train ids, or Cityscapes train ids 0..18 as in "
                        "Cityscapes-VPS labelmap PNGs (255 = void in both)")
    p.add_argument("--label-stride", type=int, default=5, help="frames between annotated frames")
    p.add_argument("--classes", default=DEFAULT_CLASS_SET,
                   help=f"the class set the ids belong to: a set's name (videoda/data/class_sets/) or a YAML file "
                        f"(default {DEFAULT_CLASS_SET}, the seed paper's 15)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("segment", help="segment any video with a trained model: overlay video and "
                                       "temporal-consistency score")
    p.add_argument("input", help="input video file (anything OpenCV reads)")
    p.add_argument("--model", required=True, help="segmentation checkpoint, e.g. models/vat.pt")
    p.add_argument("--out", required=True,
                   help="output overlay video (.mp4, mp4v codec, the input's frame rate or 25 if it reports none)")
    p.add_argument("--height", type=positive_int, default=None,
                   help="height frames are segmented at (default: the checkpoint's 'height' entry if it has "
                        "one, which the pipeline's checkpoints do not, else 64, the pipeline's training "
                        "resolution prepare.target.height)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="width frames are segmented at (default: the checkpoint's 'width' entry, else 128)")
    p.add_argument("--alpha", type=fraction, default=0.5, help="opacity of the colourised labels (default 0.5)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="frames per forward pass (default 8)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA device 0 if there is one, else the CPU) | cpu | cuda "
                                                     "| cuda:N (default auto)")
    p.add_argument("--precision", choices=PRECISION_NAMES, default="fp32",
                   help="fp32 | bf16 (autocast; needs an Ampere or later GPU, or the CPU) (default fp32)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="segment only the first N frames")
    p.add_argument("--dis-preset", choices=DIS_PRESET_NAMES, default="medium",
                   help="OpenCV DIS optical flow preset for the consistency score (default medium)")
    p.add_argument("--json", default=None, help="also write the report (frames, temporal_consistency, "
                                                "seconds, ...) to this JSON file")
    p.add_argument("--classes", default=DEFAULT_CLASS_SET,
                   help=f"the class set the model was trained on (default {DEFAULT_CLASS_SET})")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("paper-tables", help="regenerate the paper's Tables 1-7 with dvc exp runs: "
                                            "reports/paper_tables.md and its plots")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="values of `seed` (default 0 1 2 3 4)")
    p.add_argument("--out", default="reports/paper_tables.md", help="markdown report (plots go in a folder "
                                                                    "named after it)")
    p.add_argument("--jobs", type=positive_int, default=1, help="experiments run at a time (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the dvc exp commands, run nothing")
    p.add_argument("--collect-only", action="store_true",
                   help="run nothing: add the finished experiments to the runs file (<out>.json) and render the "
                        "report from it")
    p.add_argument("--rev", default=None, help="with --collect-only: read the experiments of this commit "
                                               "(default HEAD; experiments belong to the commit they ran on)")
    p.add_argument("--rerun", action="store_true", help="remove and rerun experiments that already exist")
    p.set_defaults(func=cmd_paper_tables)

    p = sub.add_parser("params", help="compose params.yaml from conf/ (defaults < profile < method < -S "
                                      "overrides), check every value, write it: `dvc exp run -S` without running")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override, as dvc exp run -S takes it: profile=paper, method=iast, vst.alpha=0.2 "
                        "(repeatable)")
    p.add_argument("--out", default="params.yaml", help="the file written (default params.yaml)")
    p.add_argument("--conf", default="conf", help="the config folder (default conf)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("vps-img-all", help="build Cityscapes-VPS <split>/img_all/ (all 30 frames of each clip) "
                                           "from Cityscapes' leftImg8bit_sequence")
    p.add_argument("--vps", required=True, help="Cityscapes-VPS root (holding <split>/img/)")
    p.add_argument("--cityscapes", required=True, help="Cityscapes root holding leftImg8bit_sequence/, or that "
                                                       "folder itself")
    p.add_argument("--split", default="train", help="Cityscapes-VPS split to complete (default train)")
    p.add_argument("--link", action="store_true", help="hard-link the frames instead of copying them "
                                                       "(copies across file systems)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing img_all/")
    p.set_defaults(func=cmd_vps_img_all)

    p = sub.add_parser("stage-command", help="print a DVC stage's command (what the nodes other than DVC's run "
                                             "in a multi-node stage, examples/slurm_stage.sh)")
    p.add_argument("stage", help="the stage's name in dvc.yaml")
    p.add_argument("--dvc-yaml", default="dvc.yaml", help="the pipeline file (default dvc.yaml)")
    p.set_defaults(func=cmd_stage_command)

    p = sub.add_parser("deps", help="write each dvc.yaml stage's code deps: its script's import closure (a "
                                    "marked block at the end of its deps; every other line stays)")
    p.add_argument("--dvc-yaml", default="dvc.yaml", help="the pipeline file (default dvc.yaml)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the code deps are stale")
    p.set_defaults(func=cmd_deps)

    p = sub.add_parser("docs", help="write the docs' reference pages (params, profiles, methods, class sets, "
                                    "command line) from the code")
    p.add_argument("--out", default="docs/reference", help="the folder of the pages (default docs/reference)")
    p.add_argument("--conf", default="conf", help="the config folder (default conf)")
    p.add_argument("--stages", default="stages", help="the folder of the stage scripts (default stages)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming the stale pages")
    p.set_defaults(func=cmd_docs)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ParamError) as e:     # ParamError: a bad --device or --precision of `segment`
        print(f"error: {e}", file=sys.stderr)
        return 2
