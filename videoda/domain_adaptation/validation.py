"""A trainer's validation curve, and the checkpoint the peers would report from it.

DA-VSN, TPS, CMOM and QuadMix score every snapshot of a run on Cityscapes-Seq val, which is also their test set,
and report the best (DA-VSN's ``TEST.MODE: video_best``). The trainers here can score their model the same way
while they train: every ``validate_every`` steps (``videoda.config.training.Validation``; 0: never) and at the
last step, the model is scored on the target-val clips by ``videoda.evaluate.evaluate_clips`` with stage
``evaluate``'s protocol (its class set, annotated-frame stride and resolution), so the last row is the score
``evaluate`` gives the output checkpoint. Rows ``{"step", "mIoU", "VPQ"}`` (VPQ^s None where it is not defined)
are written as ``reports/validation/<model>.tsv`` (a DVC plot) and kept in the trainer's snapshot, so a resumed run
writes the curve of an uninterrupted one. Stage ``evaluate`` reports the last checkpoint as the headline and, beside
it, labelled, the best row (``best_on_val``) under ``selected_on_eval_set``: what the peers report.

Scoring draws no random number and changes no weight: a run's checkpoint is the same bytes with validation on or
off. Several processes: rank 0 scores the clips alone (in eval mode, on the bare model: no collective in it) and
sends the row to the others, which wait for it.
"""

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

from videoda.data.pairs import load_split
from videoda.errors import DataError
from videoda.evaluate import evaluate_clips
from videoda.utils.device import CPU
from videoda.utils.distributed import SINGLE, broadcast_object

VALIDATION_SPLIT = "target_val"
SELECTION = "selected_on_eval_set"     # scores.json's key for the best validation rows (the peers' choice)


def validation_path(curve_path):
    """Where a training stage writes its validation curve: ``validation/<name>`` beside its training curve's folder
    (``reports/curves/vat.tsv`` -> ``reports/validation/vat.tsv``; dvc.yaml declares both as plots)."""
    curve_path = Path(curve_path)
    return curve_path.parent.parent / "validation" / curve_path.name


def validation_folder(report):
    """The folder of the validation curves beside ``report``, a file of the reports folder
    (``reports/scores.json`` -> ``reports/validation``)."""
    return Path(report).parent / "validation"


@dataclass(frozen=True)
class Validator:
    """Scores a training run's model on ``clips`` with ``cfg`` (``videoda.config.training.Validation``) every
    ``cfg.validate_every`` steps and at the last (``due``); ``path``: where ``train`` writes the rows as TSV (None:
    returned only, e.g. one VST round's); ``inputs``: the data it reads (the clips' folder; none when it does not
    validate), which a stage adds to its snapshot's key."""
    clips: list
    cfg: object
    path: object = None
    inputs: tuple = ()

    @classmethod
    def for_stage(cls, cfg, data_root, curve_path):
        """A training stage's validator: the target-val clips of ``data_root`` (read only when ``cfg`` validates:
        a run that does not, reads nothing more than before), its TSV ``validation_path(curve_path)``."""
        if cfg.validate_every == 0:
            return cls([], cfg, validation_path(curve_path))
        return cls(load_split(data_root, VALIDATION_SPLIT), cfg, validation_path(curve_path),
                   (f"{data_root}/{VALIDATION_SPLIT}",))

    def for_round(self):
        """The same validation, rows returned only (a VST round's; ``self_train`` writes the run's)."""
        return replace(self, path=None)

    def due(self, steps_done, iterations):
        """Whether to score after ``steps_done`` of ``iterations`` steps: every ``validate_every``, and the last."""
        every = self.cfg.validate_every
        return every > 0 and (steps_done % every == 0 or steps_done == iterations)

    def score(self, model, steps_done, compute=CPU):
        """The row of ``model`` after ``steps_done`` steps, on every rank (rank 0 scores; the others wait): the
        model is scored in eval mode under ``compute``'s autocast, then put back in the mode it was in."""
        row = None
        if compute.world.is_main:
            training = model.training
            alone = replace(compute, world=SINGLE, show_progress=False)
            with compute.autocast():
                report, _ = evaluate_clips(model, self.clips, self.cfg, None, alone)
            model.train(training)
            row = {"step": int(steps_done), "mIoU": report["miou"], "VPQ": report["vpq"]["mean"]}
        return broadcast_object(row, compute.world)


def read_validation(path):
    """The rows of a validation TSV (``Validator``'s, written by ``train.write_curve``): ``[{"step": int, "mIoU":
    float or None, "VPQ": float or None, ...}]``, no rows for a run that did not validate. A file that is not such
    a TSV is a DataError naming it."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            table = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: unreadable validation curve ({type(e).__name__}: {e}); rerun its training stage")
    rows = []
    for i, raw in enumerate(table):
        try:
            row = {k: (None if v in ("", None) else float(v)) for k, v in raw.items() if k is not None}
            row["step"] = int(row["step"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: row {i + 1} is not a validation row (step, mIoU, VPQ): {raw}; rerun its "
                            f"training stage") from None
        if "mIoU" not in row:
            raise DataError(f"{path}: row {i + 1} has no mIoU column; rerun its training stage")
        rows.append(row)
    return rows


def best_on_val(rows):
    """The row of highest mIoU (the earliest on a tie, as DA-VSN's ``cur_best_miou < computed_miou``), or None
    without a scored row: ``{"step", "mIoU", "VPQ"}`` with the number of rows it was chosen from (``snapshots``)."""
    scored = [r for r in rows if r.get("mIoU") is not None and not math.isnan(r["mIoU"])]
    if not scored:
        return None
    best = max(scored, key=lambda r: r["mIoU"])    # max keeps the first of equal keys
    return {"step": best["step"], "mIoU": best["mIoU"], "VPQ": best.get("VPQ"), "snapshots": len(scored)}


def selected_on_val(curves):
    """``{model: best_on_val row}`` for the ``{model: validation TSV path}`` whose run validated (``best_on_val``
    not None). A path that does not exist is skipped (a model no validating stage trained)."""
    out = {}
    for name, path in curves.items():
        if Path(path).exists():
            best = best_on_val(read_validation(path))
            if best is not None:
                out[name] = best
    return out


def with_selection(scores, folder):
    """``scores`` (``videoda.evaluate.headline_scores``: every model's last checkpoint, the headline) with, under
    ``SELECTION``, the best validation snapshot of each model whose curve ``folder/<model>.tsv`` has rows (a copy;
    ``scores`` itself when none has, so a run without validation writes the bytes of before)."""
    selected = selected_on_val({name: Path(folder) / f"{name}.tsv" for name in scores})
    return {**scores, SELECTION: selected} if selected else scores
