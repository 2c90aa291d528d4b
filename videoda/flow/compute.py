"""Stage `flow`'s work: the optical flow of every target-train clip written to the flow store, and its report.

For every frame i the flows i -> i-1 and i -> i+1 (backward-warping the neighbours onto frame i, Eq. 10), and
t -> t-tau and t-tau -> t (cut-out refinement, Eq. 12), stored once when tau = 1 (layout and conventions:
``videoda.flow.store``, ``videoda.flow``). With ``score``, the configured backend, the ``compare`` methods and the
zero flow are scored against the ground-truth flow; a ptlflow model to compare whose checkpoint is not found
offline is listed as not run.
"""

import time

import numpy as np

from videoda.data.clips import list_clips, load_clip
from videoda.errors import DataError
from videoda.flow.backends import (PtlflowFlow, checkpoint_label, is_ptlflow_method, load_ptlflow_model,
                                   make_backend, ptlflow_reference)
from videoda.flow.quality import EpeMeter
from videoda.flow.store import FlowWriter, stored_pairs
from videoda.utils.io import atomic_path


def compute_flows(data, out, *, method, tau, alpha, threshold, dis_preset, ckpt, batch_size, score, gt_root, compare,
                  progress=lambda xs, **_: xs, compute=None):
    """Write the flows of the target-train clips under ``data`` (prepared clips) to the flow store ``out`` with
    backend ``method`` (``dis_preset``, ``ckpt``, ``batch_size``: its settings; ``gt_root``: the ground-truth
    flow), pair distances 1 and ``tau``. With ``score``, the EPE of the backend, of each method in ``compare`` (with
    its default checkpoint) and of the zero flow against the ground truth, with Eq. 10's occlusion mask
    (``alpha``, ``threshold``). ptlflow models run on ``compute``'s device in its precision (a
    ``videoda.utils.device.Runtime``; None: the CPU in fp32), DIS and the ground truth on the CPU. Returns the
    report (``reports/flow.json``) and the seconds spent computing the stored flows."""
    paths = list_clips(data, "target_train")
    backend = make_backend(method, dis_preset=dis_preset, gt_root=gt_root, ckpt=ckpt, batch_size=batch_size,
                           compute=compute)
    backends, not_run = {method: backend}, {}
    for name in compare:     # scored in the report only, each with its default checkpoint
        if name in backends:
            continue
        if not is_ptlflow_method(name):
            backends[name] = make_backend(name, dis_preset=dis_preset, gt_root=gt_root)
            continue
        ptlflow_reference(name, key="flow.compare")      # a typo is a param error, not a model "not run"
        try:
            backends[name] = PtlflowFlow(load_ptlflow_model(name), batch_size, compute)
        except DataError as e:     # e.g. no checkpoint offline: say so in the report
            not_run[name] = str(e)
    gt = make_backend("gt", gt_root=gt_root) if score else None
    meters = {name: EpeMeter(alpha, threshold) for name in [*backends, "zero"]}
    deltas = sorted({1, tau})
    size, pairs_done, seconds = None, 0, 0.0
    with atomic_path(out) as tmp:
        writer = None
        for path in progress(paths, description=f"flow ({method})"):
            clip = load_clip(path)
            t, h, w = clip.images.shape[:3]
            if size is None:
                size, writer = (h, w), FlowWriter(tmp, deltas, h, w, method, attrs=backend.attrs)
            elif (h, w) != size:
                raise DataError(f"{path}: frames are {h} x {w}, other clips {size[0]} x {size[1]}")
            if t <= tau:
                raise DataError(f"{path}: clip has {t} frames, too short for flow.tau = {tau}")
            pairs = stored_pairs(t, deltas)
            start = time.perf_counter()
            flows = dict(zip(pairs, backend.flows(clip, pairs)))
            seconds += time.perf_counter() - start
            pairs_done += len(pairs)
            writer.add_clip(clip.name, t, flows)
            if gt is not None:
                forward = [(i, i + 1) for i in range(t - 1)]
                truth = gt.forward(clip)
                estimates = {method: np.stack([flows[pair] for pair in forward]), "zero": np.zeros_like(truth)}
                for name, other in backends.items():
                    if name != method:
                        estimates[name] = other.flows(clip, forward)
                images = clip.images[:]     # the meters' occlusion masks need every frame of this clip
                for name, meter in meters.items():
                    meter.add(images, estimates[name], truth)
        writer.close()

    report = {"method": method, "resolution": list(size), "clips": len(paths), "frame_distances": deltas,
              "pairs": pairs_done, "occlusion": {"alpha": alpha, "threshold": threshold}}
    report.update(backend.attrs)
    if isinstance(backend, PtlflowFlow):
        report["weights"] = checkpoint_label(backend.model)
    if gt is None:
        report["epe"] = None
    else:
        report["epe_pairs"] = f"forward t -> t+1, ground truth {gt_root} resized to {size[0]} x {size[1]}"
        report["epe"] = {name: meter.result() for name, meter in meters.items()}
        for name, other in backends.items():
            if isinstance(other, PtlflowFlow):
                report["epe"][name]["weights"] = checkpoint_label(other.model)
        if not_run:
            report["not_run"] = not_run
    return report, seconds
