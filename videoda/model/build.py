"""Build the segmentation model from the ``model`` section of params.yaml."""

from videoda.data.classes import NUM_CLASSES
from videoda.errors import ParamError
from videoda.model.deeplabv2 import BACKBONES, NORMS, DeepLabV2
from videoda.params import Section


def build_model(params):
    m = Section(params, "model")
    try:
        return DeepLabV2(
            NUM_CLASSES,
            backbone=m.choice("backbone", list(BACKBONES)),
            norm=m.choice("norm", list(NORMS)),
            num_layers=m.int("num_layers", lo=1, hi=4),
            aspp_rates=tuple(m.list("aspp_rates", int)),
            group_norm_groups=m.int("group_norm_groups", lo=1),
            pretrained=m.str("pretrained", optional=True),
        )
    except ValueError as e:
        if isinstance(e, ParamError):
            raise
        raise ParamError(f"params.yaml: {e}") from e
