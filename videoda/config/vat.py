"""The config of stage ``vat``."""

from dataclasses import dataclass
from typing import ClassVar

from videoda.choices import DICE_MODES, DISC_INPUTS, DISCRIMINATORS, OPTIMIZERS
from videoda.config.common import seed_param
from videoda.config.compute import Compute
from videoda.config.fields import choice, flag, integer, number, part
from videoda.config.training import Training


@dataclass(frozen=True)
class VAT:
    """Stage ``vat`` (Sec. 4.3, Eq. 6-9): Table 3's variants and the image-level baselines by three switches."""
    SECTION: ClassVar[str] = "vat"
    seed: int = seed_param()
    enabled: bool = flag()
    discriminator: str = choice(DISCRIMINATORS)
    disc_input: str = choice(DISC_INPUTS)
    dice: str = choice(DICE_MODES)
    lambda_v: float = number(lo=0.0)
    lambda_dice: float = number(lo=0.0)
    disc_channels: int = integer(lo=1)
    optimizer_d: str = choice(OPTIMIZERS)
    lr_d: float = number(lo=0.0)
    tau: int = integer(lo=1)
    train: Training = part()
    compute: Compute = part("compute")
