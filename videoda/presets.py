"""The paper's rows (Tables 1-2) as one parameter: ``method`` in params.yaml selects a preset.

A preset fixes the keys that define a method (which adversarial phase, which pseudo-label generator, which
refinement and regulariser) on top of params.yaml; every other key (iterations, learning rates, ...) keeps its
value from params.yaml, so all methods share one budget. ``load_params`` applies the preset, so every stage
sees the same effective params. ``ours`` changes nothing: params.yaml's defaults are the paper's method.

Each method's model is ``models/vst.pt`` (the second phase), a copy of ``models/vat.pt`` when the method has no
self-training, which is a copy of ``models/source_only.pt`` when it has no adversarial phase; the oracle's is
``models/oracle.pt``. ``evaluate`` reports it as ``final`` in ``reports/metrics.json``.
"""

import copy
import sys

from videoda.errors import ParamError

# The first phase (stage `vat`): AdaptSegNet's single-level output-space discriminator, ADVENT's entropy maps.
ADAPTSEGNET = {"enabled": True, "discriminator": "image", "disc_input": "softmax", "dice": "none"}
ADVENT = {"enabled": True, "discriminator": "image", "disc_input": "entropy", "dice": "none", "lambda_v": 1.0e-3}
NO_ADVERSARIAL = {"enabled": False}
# The second phase (stages `pseudo_labels`, `vst`): CBST's class-balanced labels with the source loss kept,
# CRST adds its confidence regulariser (KLD), IAST's instance-adaptive labels with its entropy regulariser.
CBST = {"enabled": True, "pseudo_label": "cbst", "refine": "none", "regulariser": "none", "lambda_source": 1.0}
CRST = {**CBST, "regulariser": "kld"}
IAST = {"enabled": True, "pseudo_label": "iast", "alpha": 0.2, "beta": 0.9, "gamma": 8.0, "refine": "none",
        "regulariser": "entropy", "lambda_source": 0.0}
NO_SELF_TRAINING = {"enabled": False}

PRESETS = {
    "source_only": {"vat": NO_ADVERSARIAL, "vst": NO_SELF_TRAINING},
    "adaptsegnet": {"vat": ADAPTSEGNET, "vst": NO_SELF_TRAINING},
    "advent": {"vat": ADVENT, "vst": NO_SELF_TRAINING},
    "cbst": {"vat": NO_ADVERSARIAL, "vst": CBST},
    "crst": {"vat": NO_ADVERSARIAL, "vst": CRST},
    "cbst_star": {"vat": ADAPTSEGNET, "vst": CBST},     # CBST* : on top of the adversarial warm-up
    "crst_star": {"vat": ADAPTSEGNET, "vst": CRST},     # CRST*
    "iast": {"vat": ADAPTSEGNET, "vst": IAST},
    "ours": {},                                         # VAT + VST: params.yaml as it is
    "oracle": {"vat": NO_ADVERSARIAL, "vst": NO_SELF_TRAINING},
}
FINAL_MODEL = {"oracle": "oracle"}      # the evaluated model whose metrics are the method's; default "vst"


def apply_preset(params, verbose=True):
    """params with the ``method`` preset applied (a new dict). Without a ``method`` key, params as they are.
    With ``verbose``, the values it replaces are listed on stderr."""
    if "method" not in params:
        return params
    method = params["method"]
    if method not in PRESETS:
        raise ParamError(f"params.yaml: method = {method!r} is not one of {list(PRESETS)}")
    out, changed = copy.deepcopy(params), []
    for section, overrides in PRESETS[method].items():
        if not isinstance(out.get(section), dict):
            raise ParamError(f"params.yaml: section '{section}' is missing (method {method!r} sets keys in it)")
        for key, value in overrides.items():
            if key not in out[section]:
                raise ParamError(f"params.yaml: {section}.{key} is missing (method {method!r} sets it)")
            if out[section][key] != value:
                changed.append(f"{section}.{key} = {value!r} (params.yaml: {out[section][key]!r})")
            out[section][key] = value
    if changed and verbose:    # never a silent override: say what the preset replaced
        print(f"method {method}: " + ", ".join(changed), file=sys.stderr)
    return out


def final_model(params):
    """The name of the evaluated model that is the selected method's result."""
    return FINAL_MODEL.get(params.get("method", "ours"), "vst")
