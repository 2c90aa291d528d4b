"""The paper's rows (Tables 1-2) as one parameter, ``method``, and the scale of a run as another, ``profile``.

A preset fixes the keys that define a method (which adversarial phase, which pseudo-label generator, which
refinement and regulariser) on top of params.yaml; every other key (iterations, learning rates, ...) keeps its
value from params.yaml, so all methods share one budget. ``load_params`` applies the preset, so every stage
sees the same effective params. ``ours`` changes nothing: params.yaml's defaults are the paper's method.

Each method's model is ``models/vst.pt`` (the second phase), a copy of ``models/vat.pt`` when the method has no
self-training, which is a copy of ``models/source_only.pt`` when it has no adversarial phase; the oracle's is
``models/oracle.pt``. ``evaluate`` reports it as ``final`` in ``reports/metrics.json``.

A profile (``profile`` in params.yaml) sets the scale and the optimisation of a run: ``embedded`` (params.yaml as
it is: the tiny model on the embedded benchmark), ``paper`` (VIPER -> Cityscapes-VPS as the paper trains it), or
the paper's training on the field's other benchmarks with their class sets: ``viper_cityscapes_seq`` and
``synthia_seq_cityscapes_seq``.
It is data, dotted keys -> values, applied *before* the method preset: a preset fixes what defines a method, so
e.g. ``method: advent`` keeps ADVENT's ``vat.lambda_v`` under any profile.
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

# --- profiles ------------------------------------------------------------------------------------------------
# The paper is Shin et al. 2021 (/work/shared/paper: "Sec. 5.1" is Experimental settings, p. 5-6; the page of a
# passage is read from the back-references of the works it cites). What the paper does not state is taken from
# the peers it builds on, each named beside its value: DA-VSN (Guan et al. 2021, the same VIPER -> Cityscapes-Seq
# task; github.com/Dayan-Guan/DA-VSN, davsn/domain_adaptation/config.py and
# davsn/scripts/configs/davsn_viper2city.yml), ADVENT (github.com/valeoai/ADVENT,
# advent/domain_adaptation/config.py and train_UDA.py; DA-VSN inherits its values) and IAST (the paper's
# pseudo-label baseline, github.com/Raykoooo/IAST, code/config/syn2cityscapes_t4/run_task/*.yaml).
SGD_PAPER = {   # not stated: ADVENT's / DA-VSN's segmentation optimiser (the 10x head is model.param_groups')
    "optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "weight_decay": 5.0e-4, "poly_power": 0.9,
}
PAPER = {
    # The datasets (Sec. 5.1 Datasets, p. 5-6): VIPER's "day" sequences (42,455 frames), Cityscapes-VPS's 400
    # train and 50 val clips. Real VIPER frames show the ego car: void (README "VIPER as downloaded").
    "prepare.source.conditions": ["day"],
    "prepare.source.ignore_ego_vehicle": True,
    # Resolution, not stated: DA-VSN's INPUT_SIZE_SOURCE (1280, 720) for VIPER (16:9 kept) and
    # INPUT_SIZE_TARGET (1024, 512) for Cityscapes (ADVENT's too). Keys of the per-dataset resolution.
    "prepare.source.height": 720, "prepare.source.width": 1280,
    "prepare.target.height": 512, "prepare.target.width": 1024,
    # Sec. 5.1 Implementation details (p. 6): "a pre-trained ResNet-50 [9] as backbone network and ... DeepLabv2
    # [2] as semantic segmentation head": the whole ResNet-50 (output stride 8 by dilation), ImageNet weights
    # (read offline, model.pretrained), DeepLabv2's ASPP rates 6, 12, 18, 24.
    "model.backbone": "resnet50", "model.num_layers": 4, "model.pretrained": "imagenet",
    "model.aspp_rates": [6, 12, 18, 24],
    # Not stated: BatchNorm frozen at its ImageNet statistics, as IAST's backbone (R-DL-101-C1-C5-FREEZEBN) and
    # DeepLabv2 in ADVENT (BN parameters not trained) at batch size 1.
    "model.norm": "frozen_batch",
    # Sec. 5.1 (p. 6): "we randomly select 2 consecutive frames during training": pairs (t - 1, t), one a step
    # (DA-VSN: BATCH_SIZE_SOURCE = BATCH_SIZE_TARGET = 1). Iterations, not stated: ADVENT's and DA-VSN's
    # EARLY_STOP, 120,000 (their poly schedule runs over MAX_ITERS 250,000 and stops there; ours reaches 0 at
    # the last iteration).
    **{f"{stage}.{key}": value for stage in ("train_source", "train_oracle", "vat")
       for key, value in {"iterations": 120000, "batch_size": 1, "tau": 1, **SGD_PAPER}.items()},
    # VAT (Sec. 4.3, Eq. 9, p. 4): the tube loss enters with weight 1; lambda_V is not stated: ADVENT's
    # LAMBDA_ADV_MAIN 1e-3 (DA-VSN's lamda_u too; AdaptSegNet: 1e-3 single-level, 2e-4 on its auxiliary
    # output). D (AdaptSegNet's/ADVENT's, 64 base channels, 3D first conv: Sec. 5.1): Adam lr 1e-4, betas
    # (0.9, 0.99) (ADVENT: LEARNING_RATE_D, train_UDA.py), its own poly schedule.
    "vat.lambda_dice": 1.0, "vat.lambda_v": 1.0e-3, "vat.disc_channels": 64, "vat.optimizer_d": "adam",
    "vat.lr_d": 1.0e-4,
    # Flow (Sec. 4.4.1, p. 5): FlowNet2.0 [10], ptlflow's FlowNet2 'things' weights (FlyingChairs + FlyingThings,
    # as NVIDIA's flownet2-pytorch checkpoint DA-VSN uses), read offline (flow.ckpt). Real datasets ship no
    # ground-truth flow: no EPE report (flow.epe), nothing compared, so stage `flow` reads no ground truth.
    # th = 0.7 (Sec. 5.1, p. 6); VST's pairs are consecutive frames (flow.tau 1). Eq. 10's alpha is not stated:
    # params.yaml's value stays.
    "flow.method": "flownet2", "flow.ckpt": "things", "flow.epe": False, "flow.compare": [],
    "flow.occlusion_threshold": 0.7, "flow.tau": 1,
    # Pseudo labels (Algorithm 1, p. 5): theta_0 = 0.9; alpha, beta, gamma not stated: IAST's (sl_1.yaml
    # PSEUDO_PL_ALPHA 0.2, PSEUDO_PL_GAMMA 8.0; its default PSEUDO_PL_BETA 0.9).
    "vst.init_theta": 0.9, "vst.alpha": 0.2, "vst.beta": 0.9, "vst.gamma": 8.0,
    # VST training (Eq. 13), not stated: IAST's entropy weight on unlabelled pixels (sl_1.yaml
    # LAMBDA_ENTROPY_WEIGHT 3.0; its normalisation was not checked against ours, a mean over those pixels), one
    # round (the paper generates labels once, Sec. 4.4; IAST runs three), 12,000 iterations of 1 pair: two
    # passes over the 12,000 target-train frames, as one IAST round (EPOCHES 2); ADVENT's optimiser (IAST's
    # Adam 3e-5 with cosine restarts has no counterpart here).
    "vst.lambda_reg": 3.0, "vst.rounds": 1, "vst.iterations": 12000, "vst.batch_size": 1,
    **{f"vst.{key}": value for key, value in SGD_PAPER.items()},
    # Snapshots of a killed run, not the paper's: every 2,000 steps (ADVENT's SAVE_PRED_EVERY), not every 100: a
    # ResNet-50 snapshot (weights, optimiser, D) is about 0.2 GB.
    **{f"{stage}.snapshot_every": 2000 for stage in ("train_source", "train_oracle", "vat", "vst")},
}
# The field's other two benchmarks, each the paper configuration with the peers' datasets, class sets and
# resolutions (README "The field's benchmarks"; DA-VSN, Guan et al. 2021: davsn/scripts/configs/
# davsn_viper2city.yml and davsn_syn2city.yml, davsn/dataset/*.py). Cityscapes-Seq: leftImg8bit_sequence/ and
# gtFine/ under prepare.target.root, trained and evaluated at 1024 x 512 (DA-VSN's INPUT_SIZE_TARGET; it scores
# its logits upsampled to 2048 x 1024, we score at the prepared 1024 x 512).
VIPER_CITYSCAPES_SEQ = {**PAPER, "classes": "davsn_viper", "prepare.target.dataset": "cityscapes_seq"}
SYNTHIA_SEQ_CITYSCAPES_SEQ = {
    **VIPER_CITYSCAPES_SEQ, "classes": "davsn_synthia",
    # SYNTHIA-SEQS-04-DAWN's left front camera (DA-VSN issue #3: Stereo_Left, Omni_F), its bottom 120 of 760 rows
    # dropped (SynthiaSeq.py: image[:-120]), then not resized: 1280 x 640 (INPUT_SIZE_SOURCE [1280, 640]).
    "prepare.source.dataset": "synthia_seq", "prepare.source.sequences": ["SYNTHIA-SEQS-04-DAWN"],
    "prepare.source.layout": "official", "prepare.source.crop_bottom": 120, "prepare.source.ignore_ego_vehicle": False,
    "prepare.source.height": 640, "prepare.source.width": 1280,
}
PROFILES = {
    "embedded": {},       # params.yaml as it is: the tiny from-scratch model on the embedded benchmark
    "paper": PAPER,       # VIPER -> Cityscapes-VPS, the seed paper's benchmark and classes
    "viper_cityscapes_seq": VIPER_CITYSCAPES_SEQ,
    "synthia_seq_cityscapes_seq": SYNTHIA_SEQ_CITYSCAPES_SEQ,
}


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


def apply_profile(params, verbose=True):
    """params with the ``profile`` applied (a new dict): each of its dotted keys set. Without a ``profile`` key,
    params as they are. With ``verbose``, the values it replaces are listed on stderr."""
    if "profile" not in params:
        return params
    profile = params["profile"]
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ParamError(f"params.yaml: profile = {profile!r} is not one of {list(PROFILES)}")
    out, changed = copy.deepcopy(params), []
    for key, value in PROFILES[profile].items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ParamError(f"params.yaml: {key} is missing (profile {profile!r} sets it)")
        if node[last] != value:
            changed.append(f"{key} = {value!r} (params.yaml: {node[last]!r})")
        node[last] = copy.deepcopy(value)
    if changed and verbose:
        print(f"profile {profile}: " + ", ".join(changed), file=sys.stderr)
    return out


def final_model(params):
    """The name of the evaluated model that is the selected method's result."""
    return FINAL_MODEL.get(params.get("method", "ours"), "vst")
