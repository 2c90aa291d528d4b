"""The prediction video: a target-val clip, input | one colourised prediction per model, drawn with OpenCV."""

import cv2
import numpy as np

from videoda.data.classes import colorize
from videoda.errors import DataError, ParamError
from videoda.report.panels import GAP, canvas, paste, upscale


def bgr(rgb):
    return np.ascontiguousarray(rgb[..., ::-1])


# OpenCV's mp4v writer is FFmpeg's MPEG-4 Part 2 encoder ("mpeg4"), whose headers hold a frame's width and
# height in 13 bits: it refuses a side over 8191 pixels ("dimensions too large for MPEG-4"; the writer does not
# open). Measured with opencv-python 4.13.0: 8191 x 64, 64 x 8190 and 8190 x 8190 open and play back;
# 8192 x 64, 64 x 8192 and 12312 x 2080 (the default scale 4 at 512 x 1024) do not. No limit on the area.
MP4V_MAX_SIDE = 8191
HEADER = 26                                                # pixels above the panels, for their titles


def video_frame_size(height, width, scale, panels):
    """(height, width) of ``video_frame``'s output for ``panels`` panels of ``height`` x ``width`` frames."""
    frame_h, frame_w = HEADER + height * scale + GAP, panels * width * scale + (panels + 1) * GAP
    return frame_h + frame_h % 2, frame_w + frame_w % 2    # mp4 encoders want even sizes


def fitting_video_scale(height, width, scale, panels, key="report.video_scale"):
    """The largest upscaling <= ``scale`` whose video frames the mp4v writer takes (sides <= MP4V_MAX_SIDE);
    a ParamError naming ``key`` when even 1 is too large."""
    for fit in range(scale, 0, -1):
        if max(video_frame_size(height, width, fit, panels)) <= MP4V_MAX_SIDE:
            return fit
    h, w = video_frame_size(height, width, 1, panels)
    raise ParamError(f"params.yaml: {key} = {scale}: {height} x {width} frames make {h} x {w} video frames even "
                     f"at scale 1, over the {MP4V_MAX_SIDE}-pixel side OpenCV's mp4v writer takes")


def video_frame(image, preds, titles, scale, colorize=colorize):
    """input | colourised prediction per model (``colorize``: the class set's), upscaled by ``scale``, titles
    above; BGR, even sizes."""
    panels = [upscale(bgr(image), scale)] + [upscale(bgr(colorize(p)), scale) for p in preds]
    pw = panels[0].shape[1]
    img = canvas(*video_frame_size(*image.shape[:2], scale, len(panels)))
    for i, (panel, title) in enumerate(zip(panels, titles)):
        x = GAP + i * (pw + GAP)
        paste(img, panel, x, HEADER)
        (w, _), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.putText(img, title, (x + pw // 2 - w // 2, HEADER - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return img


def write_video(path, frames, fps):
    """Write BGR frames (an iterable, all of one size) as an mp4 (codec mp4v), one frame in memory at a time."""
    writer = None
    try:
        for f in frames:
            if writer is None:
                h, w = f.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise DataError(f"{path}: OpenCV cannot write an mp4v video of {w} x {h} here")
            writer.write(f)
    finally:
        if writer is not None:
            writer.release()
