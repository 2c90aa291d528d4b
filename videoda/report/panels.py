"""Image panels, composed with numpy: the pseudo-label figure's frames and label maps, the video's frames."""

import numpy as np

GAP = 6                                                   # pixels between the panels of a figure


def canvas(h, w):
    """A white (h, w, 3) uint8 image."""
    return np.full((h, w, 3), 255, np.uint8)


def upscale(img, scale):
    """Nearest-neighbour upscaling by an integer factor (exact pixel replication)."""
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def paste(dst, src, x, y):
    dst[y:y + src.shape[0], x:x + src.shape[1]] = src
