"""Eq. 10's occlusion settings (``flow.alpha``, ``flow.occlusion_threshold``), read by several stages."""

from dataclasses import dataclass

from videoda.config.fields import number


@dataclass(frozen=True)
class Occlusion:
    """Eq. 10's occlusion mask exp(-alpha ||x_i - W(x_j)||_2) and its threshold th."""
    alpha: float = number(lo=0.0, key="flow.alpha")
    threshold: float = number(0.0, 1.0, key="flow.occlusion_threshold")
