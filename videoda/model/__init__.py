"""Segmentation model (DeepLabv2) and its checkpoint helpers."""

from videoda.model.deeplabv2 import DeepLabV2, load_checkpoint, normalize, save_checkpoint

__all__ = ["DeepLabV2", "load_checkpoint", "normalize", "save_checkpoint"]
