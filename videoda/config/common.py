"""Params that several stages read, declared once: ``seed``, the pair distance ``flow.tau`` and Eq. 10's occlusion
settings (``flow.alpha``, ``flow.occlusion_threshold``)."""

from dataclasses import dataclass

from videoda.config.fields import integer, number


def seed_param():
    """The top-level ``seed``: data generation, sampling and initialisation."""
    return integer(lo=0, key="seed")


def flow_tau_param():
    """``flow.tau``: the pair distance (t - tau, t) of VST and of the stored flows (Eq. 12)."""
    return integer(lo=1, key="flow.tau")


@dataclass(frozen=True)
class Occlusion:
    """Eq. 10's occlusion mask exp(-alpha ||x_i - W(x_j)||_2) and its threshold th."""
    alpha: float = number(lo=0.0, key="flow.alpha")
    occlusion_threshold: float = number(0.0, 1.0, key="flow.occlusion_threshold")
