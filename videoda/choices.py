"""What each choice key of params.yaml accepts, in a module that loads neither torch nor OpenCV.

The config layer checks every param against these names, so the stages that compute nothing with torch
(``resolve_params``, run by every ``dvc exp run -S``; ``synth``, ``prepare``, ``flow_gt``) start without loading
torch and torchvision (3-6 s a process on a 2-core VM). The modules that implement a choice import its names
from here: one list of names per key.
"""

import re

from videoda.errors import ParamError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")                  # compute.device
PRECISIONS = ("fp32", "bf16")                                # compute.precision
BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}    # model.backbone: its depth
NORMS = ("batch", "frozen_batch", "group")                   # model.norm
OPTIMIZERS = ("sgd", "adam")                                 # <phase>.optimizer, vat.optimizer_d
DISCRIMINATORS = ("none", "image", "sequence")               # vat.discriminator
DISC_INPUTS = ("softmax", "entropy")                         # vat.disc_input
DICE_MODES = ("none", "single", "tube")                      # vat.dice
PSEUDO_LABELS = ("cbst", "iast", "clip", "clip_agg")         # vst.pseudo_label (pseudo_labels.GENERATORS)
REFINEMENTS = ("none", "cutout", "fillin")                   # vst.refine
REGULARISERS = ("none", "entropy", "kld")                    # vst.regulariser
DIS_PRESETS = ("ultrafast", "fast", "medium")                # flow.dis_preset: OpenCV's DIS presets
# Where predictions are scored (``evaluate.resolution``): at the prepared (training) resolution, the logits upsampled
# by the model's forward; or at the label files' own resolution (Cityscapes: 2048 x 1024), the logits upsampled
# once from the output stride with the corners aligned, as DA-VSN, TPS and CMOM score (``evaluate.predict_at``).
RESOLUTIONS = ("prepared", "labels")
PREDICT_BATCH_SIZE = 16      # frames per forward pass when predicting (memory, not a hyperparameter)

DEVICE_KEY = "params.yaml: compute.device"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device_name(name, key=DEVICE_KEY):
    """``name`` if it is one of auto, cpu, cuda, cuda:N (whether that device exists is
    ``videoda.utils.device.resolve_device``'s business: the name is checked where the params are resolved, the
    device where the stage runs)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ParamError(f"{key} = {name!r} is not one of {', '.join(DEVICES)}")
    return name
