"""Build the segmentation model from its config (``videoda.config.Model``: the ``model`` section of params.yaml)."""

from videoda.errors import ParamError
from videoda.model.deeplabv2 import DeepLabV2


def build_model(cfg):
    """DeepLabv2 predicting ``cfg.classes`` (the class set) with ``cfg``'s backbone, norm, ASPP rates and initial weights; an inconsistent combination (e.g.
    ImageNet weights with GroupNorm) is a ParamError naming the key."""
    try:
        return DeepLabV2(cfg.classes.num_classes, backbone=cfg.backbone, norm=cfg.norm, num_layers=cfg.num_layers,
                         aspp_rates=tuple(cfg.aspp_rates), group_norm_groups=cfg.group_norm_groups,
                         pretrained=cfg.pretrained)
    except ValueError as e:
        if isinstance(e, ParamError):
            raise
        raise ParamError(f"params.yaml: {e}") from e
