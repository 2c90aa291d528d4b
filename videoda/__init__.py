"""videoda: unsupervised domain adaptation for video semantic segmentation (Shin et al., 2021)."""

__version__ = "0.1.0"
