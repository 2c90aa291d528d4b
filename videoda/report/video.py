"""The prediction video: a target-val clip, input | one colourised prediction per model, drawn with OpenCV."""

import cv2
import numpy as np

from videoda.data.classes import colorize
from videoda.errors import DataError
from videoda.report.panels import GAP, canvas, paste, upscale


def bgr(rgb):
    return np.ascontiguousarray(rgb[..., ::-1])


def video_frame(image, preds, titles, scale, header=26):
    """input | colourised prediction per model, upscaled by ``scale``, titles above; BGR, even sizes."""
    panels = [upscale(bgr(image), scale)] + [upscale(bgr(colorize(p)), scale) for p in preds]
    ph, pw = panels[0].shape[:2]
    width = len(panels) * pw + (len(panels) + 1) * GAP
    height = header + ph + GAP
    img = canvas(height + height % 2, width + width % 2)   # mp4 encoders want even sizes
    for i, (panel, title) in enumerate(zip(panels, titles)):
        x = GAP + i * (pw + GAP)
        paste(img, panel, x, header)
        (w, _), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.putText(img, title, (x + pw // 2 - w // 2, header - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return img


def write_video(path, frames, fps):
    """Write BGR frames (all of one size) as an mp4 (codec mp4v)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write an mp4v video here")
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()
