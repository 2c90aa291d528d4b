"""DeepLabv2 segmentation model: a torchvision ResNet backbone plus the ASPP classifier.

This is the segmentation network used by ADVENT and by Shin et al. (2021). The backbone can be
truncated (``num_layers``) so the same code runs a tiny ResNet-18 on a 2-core CPU and a full
dilated ResNet-50/101 (output stride 8) on a GPU.
"""

import io
import os
import re
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import FrozenBatchNorm2d

from videoda.choices import BACKBONES, NORMS
from videoda.errors import DataError
from videoda.utils.io import sha256_file, write_bytes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ResNet stem modules, then the residual stages; checkpoint keys of a torchvision ResNet start with these.
_STEM = ("conv1", "bn1", "relu", "maxpool")


def normalize(images):
    """uint8 images (B, H, W, 3), tensor or numpy array -> float32 (B, 3, H, W) with ImageNet mean/std.

    The backbone expects ImageNet statistics whether or not it starts from ImageNet weights, so one
    convention serves every configuration. The result stays on the input's device.
    """
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"normalize: expected uint8 images of shape (B, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ASPPClassifier(nn.Module):
    """DeepLabv2 classifier: parallel dilated 3x3 convs straight to class scores, outputs summed.

    Unlike DeepLabv3's ASPP there is no concatenation, no BN and no 1x1 fusion: each branch already
    predicts logits and the branches vote by addition.
    """

    def __init__(self, in_channels, num_classes, rates):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.branches:
            # DeepLabv2's init: small logits at the start keep early training (and the 10x lr) stable.
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


def _norm_layer(norm, groups):
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "frozen_batch":
        return FrozenBatchNorm2d
    return lambda channels: nn.GroupNorm(groups, channels)


class DeepLabV2(nn.Module):
    def __init__(
        self,
        num_classes,
        backbone="resnet50",
        norm="batch",
        num_layers=4,
        aspp_rates=(6, 12, 18, 24),
        group_norm_groups=16,
        pretrained=None,
    ):
        super().__init__()
        _validate(num_classes, backbone, norm, num_layers, aspp_rates, group_norm_groups, pretrained)
        depth = BACKBONES[backbone]
        bottleneck = depth >= 50
        resnet = getattr(tv_resnet, backbone)(
            weights=None,
            norm_layer=_norm_layer(norm, group_norm_groups),
            # Output stride 8 as in DeepLabv2. BasicBlock ResNets refuse dilation in torchvision, so
            # those reach stride 8 by truncation instead (num_layers=2).
            replace_stride_with_dilation=[False, True, True] if bottleneck else None,
        )
        kept = _STEM + tuple(f"layer{i}" for i in range(1, num_layers + 1))
        self.backbone = nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in kept))
        channels = (256 if bottleneck else 64) * 2 ** (num_layers - 1)
        self.head = ASPPClassifier(channels, num_classes, aspp_rates)
        self.config = {
            "num_classes": int(num_classes),
            "backbone": backbone,
            "norm": norm,
            "num_layers": int(num_layers),
            "aspp_rates": [int(r) for r in aspp_rates],
            "group_norm_groups": int(group_norm_groups),
        }
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def forward(self, x):
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def coarse_logits(self, x):
        """The head's logits at the output stride, before ``forward`` upsamples them to the input size: what
        ``videoda.evaluate.predict_at`` upsamples once to the label files' resolution, as DA-VSN's evaluation does."""
        return self.head(self.backbone(x))

    def param_groups(self, lr):
        """Optimizer groups: backbone at ``lr``, freshly initialised head at ``10 * lr`` (DeepLab/ADVENT)."""
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr},
            {"params": [p for p in self.head.parameters() if p.requires_grad], "lr": 10 * lr},
        ]

    def load_pretrained(self, pretrained):
        """Load ``"imagenet"`` backbone weights or a local checkpoint (full model or bare ResNet)."""
        if pretrained == "imagenet":
            path = imagenet_weights_file(self.config["backbone"])
            self._load_backbone(_read_checkpoint(path, "model.pretrained"), f"model.pretrained='imagenet': {path}")
            return
        path = Path(pretrained)
        state = _read_checkpoint(path, "model.pretrained")
        if isinstance(state, dict) and ("model" in state or "state_dict" in state):
            state = state.get("model", state.get("state_dict"))
        if not isinstance(state, dict) or not state:
            raise ValueError(f"model.pretrained: {path} holds no state_dict")
        if any(k.startswith(("backbone.", "head.")) for k in state):
            _load_strict(self, state, f"model.pretrained: {path}")
        else:
            self._load_backbone(state, f"model.pretrained: {path}")

    def _load_backbone(self, state, where):
        # A full torchvision ResNet checkpoint also holds the ImageNet fc layer and, for a truncated
        # backbone, the stages we dropped; both are meant to be left out, everything else must match.
        dropped = ("fc.",) + tuple(f"layer{i}." for i in range(self.config["num_layers"] + 1, 5))
        state = {k: v for k, v in state.items() if not k.startswith(dropped)}
        _load_strict(self.backbone, state, where)


def imagenet_weights_file(backbone):
    """torchvision's ImageNet weights of ``backbone`` (IMAGENET1K_V1), read offline from where torch.hub keeps
    downloads, ``$TORCH_HOME/hub/checkpoints/<file of the weights' url>``. Nothing is downloaded: a missing file is
    an error that says where to put which file; a file whose sha256 does not start with the prefix in its name
    (torch.hub's convention, e.g. resnet50-0676ba61.pth) is a partial or corrupt download."""
    weights = torchvision.models.get_weight(f"ResNet{BACKBONES[backbone]}_Weights.IMAGENET1K_V1")
    name = Path(urlparse(weights.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"model.pretrained: 'imagenet' reads torchvision's {backbone} ImageNet weights offline from {path}, "
            f"not found: download {weights.url} into {path.parent} ($TORCH_HOME/hub/checkpoints/; $TORCH_HOME "
            f"defaults to ~/.cache/torch), or set model.pretrained to the file's path")
    prefix = re.search(r"-([0-9a-f]{8,})\.", name)
    digest = sha256_file(path)
    if prefix and not digest.startswith(prefix.group(1)):
        raise ValueError(f"model.pretrained: {path}: its sha256 starts {digest[:len(prefix.group(1))]}, "
                         f"its name says {prefix.group(1)}: a partial or corrupt download of {weights.url}")
    return path


def _validate(num_classes, backbone, norm, num_layers, aspp_rates, groups, pretrained):
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"model.num_classes: expected a positive integer, got {num_classes!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone: unknown {backbone!r} (choose from {', '.join(BACKBONES)})")
    if norm not in NORMS:
        raise ValueError(f"model.norm: unknown {norm!r} (choose from {', '.join(NORMS)})")
    if not isinstance(num_layers, int) or not 1 <= num_layers <= 4:
        raise ValueError(f"model.num_layers: expected an integer in 1..4, got {num_layers!r}")
    rates = list(aspp_rates) if isinstance(aspp_rates, (list, tuple)) else []
    if not rates or not all(isinstance(r, int) and r >= 1 for r in rates):
        raise ValueError(f"model.aspp_rates: expected a non-empty list of positive integers, got {aspp_rates!r}")
    # Every ResNet width is a multiple of 64, so dividing 64 is exactly what GroupNorm needs.
    if norm == "group" and (not isinstance(groups, int) or groups < 1 or 64 % groups):
        raise ValueError(f"model.group_norm_groups: must be a positive divisor of 64, got {groups!r}")
    if pretrained == "imagenet" and norm == "group":
        raise ValueError(
            "model.pretrained: 'imagenet' weights are BatchNorm statistics and cannot initialise "
            "GroupNorm layers; use norm 'batch' or 'frozen_batch', or pretrained null"
        )
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"model.pretrained: expected null, 'imagenet' or a file path, got {pretrained!r}")


def _read_checkpoint(path, param):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{param}: checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch.load fails in many ways on a non-checkpoint (e.g. KeyError on a text file)
        raise ValueError(f"{param}: {path} is not a readable torch checkpoint ({err})") from err


def _load_strict(module, state, where):
    """load_state_dict, but every mismatch becomes one ValueError naming a few offending keys."""
    own = module.state_dict()
    # BatchNorm's step counter is absent from old checkpoints (torchvision's ImageNet ones) and unused.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and getattr(state[k], "shape", None) != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes))
            if keys
        ]
        raise ValueError(f"{where}: checkpoint does not fit the model; " + "; ".join(parts))
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def save_checkpoint(path, model, extra=None):
    """Write {"model": state_dict, "config": model.config, **extra} atomically; the bytes depend only on these, not
    on the model's device or memory layout (the weights are saved as contiguous CPU tensors).

    ``extra`` must hold only what ``torch.load(weights_only=True)`` accepts (tensors, numbers,
    strings, lists, dicts), e.g. the iteration, optimizer state or metrics.
    """
    extra = dict(extra or {})
    clash = {"model", "config"} & set(extra)
    if clash:
        raise ValueError(f"save_checkpoint: extra may not use reserved keys {sorted(clash)}")
    # Serialised in memory, torch names the archive inside the zip "archive" (from a file path it would take the
    # file's name, so a random temp name would change the bytes): identical weights, identical file, same md5.
    buffer = io.BytesIO()
    torch.save({"model": cpu_state_dict(model), "config": dict(model.config), **extra}, buffer)
    write_bytes(path, buffer.getvalue())


def cpu_state_dict(module):
    """``module.state_dict()`` with every tensor a contiguous CPU tensor (a tensor that already is one is kept as it
    is, so a CPU model's checkpoint has the bytes it had before devices existed): a checkpoint saved from a GPU
    or from channels-last weights then loads anywhere, and equal weights give an equal file. Replaced in place:
    the state dict's type and ``_metadata`` (which torch.save writes too) stay those of ``state_dict()``."""
    state = module.state_dict()
    for k, v in state.items():
        # strides, not is_contiguous(): a channels-last 1 x 1 kernel counts as contiguous but has other strides,
        # which torch.save writes
        if v.device.type != "cpu" or v.stride() != _row_major_strides(v.shape):
            state[k] = v.detach().cpu().clone(memory_format=torch.contiguous_format)
    return state


def _row_major_strides(shape):
    """The strides torch gives a new tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def load_checkpoint(path, map_location=None):
    """Rebuild a DeepLabV2 from a save_checkpoint file; returns (model, checkpoint dict). The file is read onto the
    CPU whatever device saved it; the model is then moved to ``map_location`` (a device or its name; None: it stays
    on the CPU)."""
    ckpt = _read_checkpoint(path, "checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"checkpoint: {path} is not a DeepLabV2 checkpoint (needs 'model' and 'config' entries)")
    try:
        model = DeepLabV2(**ckpt["config"])
    except TypeError as err:
        raise ValueError(f"checkpoint: {path} has an invalid model config {ckpt['config']!r} ({err})") from err
    _load_strict(model, ckpt["model"], f"checkpoint: {path}")
    if map_location is not None:
        model = model.to(map_location)
    check_first_output(model, path)
    return model, ckpt


def check_first_output(model, path):
    """Make the first forward pass of ``model`` (loaded from ``path``) a DataError naming the checkpoint if any
    logit is NaN or inf: a diverged run can save finite weights whose activations overflow, and every stage that
    predicts with a checkpoint (pseudo_labels, vst, evaluate, report, segment) would otherwise fail later,
    deep in a computation on its predictions. Checked once (a one-shot forward hook), so it costs one sync."""
    def hook(module, inputs, output):
        handle.remove()
        if not bool(torch.isfinite(output).all()):
            raise DataError(f"checkpoint {path}: its first predictions are not finite (NaN or inf logits): the run "
                            f"that wrote it diverged, or the file is damaged; retrain it")
    handle = model.register_forward_hook(hook)
