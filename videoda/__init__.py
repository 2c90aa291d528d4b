"""videoda: unsupervised domain adaptation for video semantic segmentation (Shin et al., 2021)."""

from videoda import numerics as _numerics

_numerics.pin()    # before numpy, torch and OpenCV load (docs/engineering/reproducibility.md)

__version__ = "0.1.0"
