"""Every stage's config by stage name, and the resolved params file of each (``data/params/<stage>.json``).

Stage ``resolve_params`` writes, for each stage, the keys its config reads (``stage_keys``) with the ``profile``
and the ``method`` preset applied, and the stage reads its config from that file alone. So DVC reruns a stage when
its *effective* values change, and methods that share a phase (e.g. AdaptSegNet's warm-up under CBST*, CRST* and
IAST) share its run in DVC's run cache.
"""

import json
from pathlib import Path

from videoda.config.data import Prepare, Synth
from videoda.config.evaluation import Evaluate, Report
from videoda.config.fields import config_keys, lookup, read_config
from videoda.config.flow import Flow, FlowGroundTruth
from videoda.config.self_training import VST, PseudoLabelStage
from videoda.config.training import Supervised
from videoda.config.vat import VAT
from videoda.errors import ParamError
from videoda.utils.io import atomic_path

# stage -> (its config class, the params section its fields default to)
STAGES = {
    "synth": (Synth, Synth.SECTION),
    "prepare": (Prepare, Prepare.SECTION),
    "train_source": (Supervised, "train_source"),
    "train_oracle": (Supervised, "train_oracle"),
    "vat": (VAT, VAT.SECTION),
    "flow_gt": (FlowGroundTruth, FlowGroundTruth.SECTION),
    "flow": (Flow, Flow.SECTION),
    "pseudo_labels": (PseudoLabelStage, PseudoLabelStage.SECTION),
    "vst": (VST, VST.SECTION),
    "evaluate": (Evaluate, Evaluate.SECTION),
    "report": (Report, Report.SECTION),
}


def stage_keys(stage):
    """The params keys stage ``stage`` reads (sorted, unique)."""
    cls, section = STAGES[stage]
    return sorted(set(config_keys(cls, section)))


def stage_config(stage, params):
    """Stage ``stage``'s config from (preset-applied or resolved) params, every value checked."""
    if stage not in STAGES:
        raise ParamError(f"unknown stage {stage!r}; stages with a config: {list(STAGES)}")
    cls, section = STAGES[stage]
    return read_config(cls, params, section)


def resolve(params, stage):
    """The nested params of ``stage`` alone (its ``stage_keys`` but those this run does not use: ``when`` in
    ``videoda.config.fields``), as ``resolve_params`` writes them."""
    cls, section = STAGES[stage]
    out = {}
    for key in sorted(set(config_keys(cls, section, params))):
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = lookup(params, key)
    return out


def resolved_json(params, stage):
    """The text of ``data/params/<stage>.json``: stable (sorted keys), so unchanged values keep its hash."""
    return json.dumps(resolve(params, stage), indent=2, sort_keys=True) + "\n"


def write_resolved(params, out_dir):
    """Every stage's ``<out_dir>/<stage>.json`` (``resolved_json``), each written atomically. ``params`` as
    ``check_params`` returns them: stage ``resolve_params`` checks every value first."""
    for stage in STAGES:
        with atomic_path(Path(out_dir) / f"{stage}.json") as tmp:
            tmp.write_text(resolved_json(params, stage))
