"""Segment any video with a trained model: a colourised overlay video and a temporal-consistency score.

Used by ``videoda segment`` (see ``videoda.cli``). Every frame is resized to the model's resolution, segmented
(on the chosen device, in the chosen precision: ``videoda.utils.device``), and the prediction is resized back
(nearest) and blended over the frame. The **temporal consistency** is the
share of pixels whose label agrees with the previous frame's label carried along the optical flow: for each
pair (t - 1, t), at the model's resolution, OpenCV's DIS flow ``F_{t->t-1}`` (on frame t's grid, the
``dis`` backend of ``videoda.flow.backends``) backward-warps the prediction of frame t - 1 onto frame t
(``videoda.flow.warp.warp_labels``, nearest); pixels whose flow leaves the frame are not counted. The score is
agreeing pixels / counted pixels over the whole video, in percent (100: labels move exactly with the flow).
"""

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import cv2
import numpy as np
import torch

from videoda.data.classes import DEFAULT, IGNORE_ID
from videoda.errors import DataError
from videoda.evaluate import check_num_classes, predict
from videoda.flow.backends import DisFlow
from videoda.flow.warp import flow_to_tensor, warp_labels
from videoda.model import load_checkpoint
from videoda.utils.device import CPU
from videoda.utils.io import atomic_path, write_json

# The training resolution of the pipeline (params.yaml: prepare.target.height / width), used when neither the
# options nor the checkpoint give one (save_checkpoint stores no resolution; a checkpoint may hold "height" and
# "width" entries).
DEFAULT_SIZE = (64, 128)
DEFAULT_FPS = 25.0      # written when the input reports no frame rate
FOURCC = "mp4v"


@dataclass
class Video:
    """An opened input video: the capture, its first frame (BGR), frame rate, size and reported frame count."""

    path: Path
    cap: cv2.VideoCapture
    first: np.ndarray
    fps: float
    frame_count: int   # as the container reports it (0 if unknown); only for the progress bar

    @property
    def size(self):
        """(height, width) of the frames."""
        return self.first.shape[:2]


@contextlib.contextmanager
def quiet_opencv():
    """Within this block OpenCV logs errors only: a file it cannot open is reported by our own DataError, not
    by its warnings (FFmpeg's own messages still go to stderr)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(min(level, cv2.utils.logging.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_video(path) -> Video:
    """Open ``path`` with OpenCV and decode its first frame; a missing, unreadable or empty video is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    with quiet_opencv():
        cap = cv2.VideoCapture(str(path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None or first.ndim != 3 or first.shape[2] != 3:
        cap.release()
        raise DataError(f"{path}: not a readable video (OpenCV decodes no frame from it)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if np.isfinite(fps) and fps > 0 else DEFAULT_FPS
    return Video(path, cap, first, fps, max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0))


def iter_frames(video: Video, max_frames=None):
    """Yield the video's BGR frames, the first one included, at most ``max_frames`` of them; stops at the first
    frame that does not decode or whose size differs from the first frame's."""
    n = 0
    frame = video.first
    while frame is not None and (max_frames is None or n < max_frames):
        if frame.shape != video.first.shape:
            raise DataError(f"{video.path}: frame {n} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                            f"{video.first.shape[1]}x{video.first.shape[0]}")
        yield frame
        n += 1
        ok, frame = video.cap.read()
        if not ok:
            frame = None


def load_segmentation_model(path, map_location=None, classes=DEFAULT):
    """``load_checkpoint`` for a videoda segmentation model: returns (model in eval mode on ``map_location``, None:
    the CPU, and the checkpoint dict).

    A missing file, a file that is not a checkpoint, a checkpoint of another network, or a model whose number of
    output classes is not that of the class set ``classes`` is a DataError naming the file.
    """
    path = Path(path)
    try:
        model, meta = load_checkpoint(path, map_location=map_location)
    except FileNotFoundError:
        raise DataError(f"{path}: model checkpoint not found") from None
    except ValueError as e:   # not a checkpoint, or one of another network
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{path}: does not match a videoda segmentation model checkpoint ({why})") from e
    check_num_classes(model, classes, path, key="--classes")
    return model.eval(), meta


def model_size(meta, height=None, width=None):
    """The (height, width) frames are segmented at: the options, else the checkpoint's "height"/"width" entries,
    else ``DEFAULT_SIZE``."""
    stored = [meta.get(k) if isinstance(meta.get(k), int) and meta.get(k) > 0 else None for k in ("height", "width")]
    return tuple(opt or st or default for opt, st, default in zip((height, width), stored, DEFAULT_SIZE))


def to_model_input(frame_bgr, size):
    """A BGR frame -> RGB uint8 at ``size`` (height, width): INTER_AREA to shrink, INTER_LINEAR to enlarge."""
    h, w = size
    if frame_bgr.shape[:2] != (h, w):
        shrink = h <= frame_bgr.shape[0] and w <= frame_bgr.shape[1]
        frame_bgr = cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def overlay(frame_bgr, pred, alpha=0.5, classes=DEFAULT):
    """``alpha * colorize(pred) + (1 - alpha) * frame``, BGR uint8 at the frame's size; ``pred`` (h, w) train
    ids at any size is resized to the frame with nearest neighbour."""
    h, w = frame_bgr.shape[:2]
    if pred.shape != (h, w):
        pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST)
    colour = np.ascontiguousarray(classes.colorize(pred)[..., ::-1])   # RGB -> BGR
    return cv2.addWeighted(colour, float(alpha), frame_bgr, 1.0 - float(alpha), 0.0)


def consistency_counts(prev_labels, labels, flow):
    """Agreement of ``labels`` (frame t) with ``prev_labels`` (frame t - 1) warped along ``flow`` = F_{t->t-1}.

    ``prev_labels``, ``labels``: (H, W) or (B, H, W) train ids; ``flow``: (H, W, 2) or (B, H, W, 2) on frame t's
    grid (``videoda.flow`` layout). Returns ``(agreeing, counted)`` pixel counts; a pixel is counted where the
    warped label is not ``IGNORE_ID`` (its flow stays in frame).
    """
    prev = torch.as_tensor(np.asarray(prev_labels, dtype=np.int64))
    cur = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if prev.ndim == 2:
        prev, cur = prev[None], cur[None]
    if prev.shape != cur.shape:
        raise ValueError(f"label maps {tuple(prev.shape)} and {tuple(cur.shape)} differ in shape")
    warped = warp_labels(prev, flow_to_tensor(flow))
    counted = warped != IGNORE_ID
    return int((counted & (warped == cur)).sum()), int(counted.sum())


def consecutive_flows(dis, images):
    """DIS flows F_{t->t-1} on frame t's grid for t = 1..N-1 of RGB uint8 ``images`` (N, H, W, 3):
    (N - 1, H, W, 2), ``dis`` a ``videoda.flow.backends.DisFlow``."""
    return dis.flows(SimpleNamespace(images=images), [(t, t - 1) for t in range(1, len(images))])


def consistency_percent(agreeing, counted):
    """agreeing / counted in percent, None when no pixel was counted (a one-frame video)."""
    return 100.0 * agreeing / counted if counted else None


def _batches(frames, size):
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(compute):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not compute.shows_progress)


@dataclass(frozen=True)
class SegmentOptions:
    """How ``segment_video`` segments (``videoda segment``'s options): the model's input size ``height`` x
    ``width`` (None: ``model_size``'s choice), the overlay's opacity ``alpha``, frames per forward pass
    ``batch_size``, the first ``max_frames`` frames only (None: all), the DIS preset of the consistency score's
    flow, and the class set of the model (its colours are the overlay's)."""
    height: Optional[int] = None
    width: Optional[int] = None
    alpha: float = 0.5
    batch_size: int = 8
    max_frames: Optional[int] = None
    dis_preset: str = "medium"
    classes: object = DEFAULT


def segment_video(input_path, model_path, out_path, options=SegmentOptions(), json_path=None, compute=CPU):
    """Segment every frame of ``input_path`` with the checkpoint ``model_path`` as ``options`` (a
    ``SegmentOptions``) say, on ``compute``'s device in its precision (a ``videoda.utils.device.Runtime``); write
    the overlay video to ``out_path`` (atomically: nothing is left behind on failure) and, if given, the report to
    ``json_path``.

    Returns the report: frames, frame and model sizes, input fps, the temporal consistency (percent, None for a
    single frame) with its pixel counts, seconds and frames per second of processing.
    """
    start = time.time()
    classes, batch_size, max_frames = options.classes, options.batch_size, options.max_frames
    video = open_video(input_path)
    try:
        model, meta = load_segmentation_model(model_path, map_location=compute.device, classes=classes)
        model = compute.module(model)
        size = model_size(meta, options.height, options.width)
        dis = DisFlow(options.dis_preset)
        frame_h, frame_w = video.size
        total = min(video.frame_count, max_frames) if max_frames else video.frame_count
        out_path = Path(out_path)
        n = agreeing = counted = 0
        prev_image = prev_pred = None
        with atomic_path(out_path) as tmp:   # the temp name keeps out_path's name, so its extension
            with quiet_opencv():
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC), video.fps, (frame_w, frame_h))
            try:
                if not writer.isOpened():
                    raise DataError(f"{out_path}: OpenCV cannot write a {FOURCC} video under this name "
                                    f"(use a .mp4 file name)")
                with _progress(compute) as progress:
                    task = progress.add_task("segment", total=total or None)
                    for batch in _batches(iter_frames(video, max_frames), batch_size):
                        images = np.stack([to_model_input(f, size) for f in batch])
                        with compute.autocast():
                            preds = predict(model, images, batch_size)
                        preds_all = preds
                        if prev_pred is not None:   # the last frame of the previous batch pairs with the first
                            images = np.concatenate([prev_image[None], images])
                            preds_all = np.concatenate([prev_pred[None], preds])
                        if len(images) > 1:   # F_{t->t-1} for each consecutive pair of this batch
                            flows = consecutive_flows(dis, images)
                            a, c = consistency_counts(preds_all[:-1], preds_all[1:], flows)
                            agreeing, counted = agreeing + a, counted + c
                        for frame, pred in zip(batch, preds):
                            writer.write(overlay(frame, pred, options.alpha, classes))
                        prev_image, prev_pred = images[-1], preds[-1]
                        n += len(batch)
                        progress.advance(task, len(batch))
            finally:
                writer.release()
    finally:
        video.cap.release()
    seconds = time.time() - start
    report = {
        "input": str(input_path), "model": str(model_path), "out": str(out_path),
        "frames": n, "frame_size": [frame_h, frame_w], "model_size": list(size), "input_fps": video.fps,
        "device": str(compute.device), "precision": compute.precision,
        "temporal_consistency": consistency_percent(agreeing, counted),
        "consistent_pixels": agreeing, "counted_pixels": counted,
        "seconds": round(seconds, 3), "frames_per_second": round(n / seconds, 2) if seconds > 0 else None,
    }
    if json_path is not None:
        write_json(json_path, report)
    return report
