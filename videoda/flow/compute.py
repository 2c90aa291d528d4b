"""Stage `flow`'s work: the optical flow of every target-train clip written to the flow store, and its report.

For every frame i the flows i -> i-1 and i -> i+1 (backward-warping the neighbours onto frame i, Eq. 10), and
t -> t-tau and t-tau -> t (cut-out refinement, Eq. 12), stored once when tau = 1 (layout and conventions:
``videoda.flow.store``, ``videoda.flow``). With ``flow.epe``, the configured backend, the ``flow.compare`` methods
and the zero flow are scored against the ground-truth flow; a ptlflow model to compare whose checkpoint is not found
offline is listed as not run.
"""

import time

import numpy as np

from videoda.data.clips import list_clips, load_clip
from videoda.errors import DataError
from videoda.flow.backends import (PtlflowFlow, checkpoint_label, is_ptlflow_method, load_ptlflow_model,
                                   make_backend, ptlflow_reference)
from videoda.flow.quality import EpeMeter
from videoda.flow.store import FlowStore, FlowWriter, stored_pairs
from videoda.utils.device import CPU
from videoda.utils.shards import in_clip_order, main_atomic_path, results_folder


def compute_flows(data, out, cfg, compute=CPU, work=None):
    """Write the flows of the target-train clips under ``data`` (prepared clips) to the flow store ``out`` with
    stage ``flow``'s config ``cfg`` (``videoda.config.Flow``): backend ``cfg.method`` (``cfg.dis_preset``,
    ``cfg.ckpt``, ``cfg.batch_size``: its settings; ``cfg.gt_root``: the ground-truth flow), pair distances 1 and
    ``cfg.tau``. With ``cfg.epe``, the EPE of the backend, of each method in ``cfg.compare`` (with its default
    checkpoint) and of the zero flow against the ground truth, with Eq. 10's occlusion mask (``cfg.occlusion``).
    ptlflow models run on ``compute``'s device in its precision (a ``videoda.utils.device.Runtime``), DIS and the
    ground truth on the CPU. Returns the report (``reports/flow.json``) and the seconds spent computing the stored
    flows.

    Several processes (``compute.world``): each rank computes its share of the clips (flows and EPE terms) into
    a shard folder next to ``out``, and rank 0 writes the store clip by clip in clip order and adds the EPE terms
    in clip order, as one process does: the same bytes and report. It returns the report and the seconds of all
    ranks together; the other ranks return (None, None).

    ``work``: the stage's ``ClipWork`` folder (``videoda.utils.resume``), where each clip's flows and EPE terms are
    kept (one process too) until the stage removes it: a rerun after a kill computes only the clips not done, and
    rank 0 writes the store from every kept clip in clip order (the bytes of an uninterrupted run; the disk holds
    the flows twice while it does). The seconds reported are those spent computing, in this run and the killed
    one, as kept."""
    method, tau, gt_root, batch_size = cfg.method, cfg.tau, cfg.gt_root, cfg.batch_size
    alpha, threshold = cfg.occlusion.alpha, cfg.occlusion.occlusion_threshold
    paths = list_clips(data, "target_train")
    backend = make_backend(method, dis_preset=cfg.dis_preset, gt_root=gt_root, ckpt=cfg.ckpt, batch_size=batch_size,
                           compute=compute)
    backends, not_run = {method: backend}, {}
    for name in cfg.compare if cfg.epe else ():     # scored in the report only, each with its default checkpoint
        if name in backends:
            continue
        if not is_ptlflow_method(name):
            backends[name] = make_backend(name, dis_preset=cfg.dis_preset, gt_root=gt_root)
            continue
        ptlflow_reference(name, key="flow.compare")      # a typo is a param error, not a model "not run"
        try:
            backends[name] = PtlflowFlow(load_ptlflow_model(name), batch_size, compute)
        except DataError as e:     # e.g. no checkpoint offline: say so in the report
            not_run[name] = str(e)
    gt = make_backend("gt", gt_root=gt_root) if cfg.epe else None
    meters = {name: EpeMeter(alpha, threshold) for name in [*backends, "zero"]}
    deltas = sorted({1, tau})
    world = compute.world
    first_size = {}      # the frame size of the first clip this process computes

    def clip_flows(index, path):
        """Clip ``index``'s flows, their seconds and its EPE terms (one row per meter); several processes: its
        flows go to the shard folder (``index``.h5, the store's layout: float16 then, as stored)."""
        clip = load_clip(path)
        t, h, w = clip.images.shape[:3]
        size = first_size.setdefault("size", (h, w))
        if (h, w) != size:
            raise DataError(f"{path}: frames are {h} x {w}, other clips {size[0]} x {size[1]}")
        if t <= tau:
            raise DataError(f"{path}: clip has {t} frames, too short for flow.tau = {tau}")
        pairs = stored_pairs(t, deltas)
        start = time.perf_counter()
        flows = dict(zip(pairs, backend.flows(clip, pairs)))
        result = {"name": clip.name, "frames": t, "height": h, "width": w,
                  "seconds": time.perf_counter() - start, "flows": flows}
        if gt is not None:
            forward = [(i, i + 1) for i in range(t - 1)]
            truth = gt.forward(clip)
            estimates = {method: np.stack([flows[pair] for pair in forward]), "zero": np.zeros_like(truth)}
            for name, other in backends.items():
                if name != method:
                    estimates[name] = other.flows(clip, forward)
            images = clip.images[:]     # the meters' occlusion masks need every frame of this clip
            result["epe"] = np.stack([np.stack(meter.terms(images, estimates[name], truth))
                                      for name, meter in meters.items()])
        if shards is not None:
            with FlowWriter(shards / f"{index}.h5", deltas, h, w, method) as shard:
                shard.add_clip(clip.name, t, result.pop("flows"))
        return result

    size, pairs_done, seconds = None, 0, 0.0
    with main_atomic_path(out, world) as tmp, results_folder(out, world, work) as shards:
        writer = None
        results = in_clip_order(paths, clip_flows, compute, shards, description=f"flow ({method})")
        for index, result in results:      # rank 0: every clip, in clip order; other ranks: none
            h, w = result["height"], result["width"]
            if size is None:
                size, writer = (h, w), FlowWriter(tmp, deltas, h, w, method, attrs=backend.attrs)
            elif (h, w) != size:
                raise DataError(f"{paths[index]}: frames are {h} x {w}, other clips {size[0]} x {size[1]}")
            flows = result["flows"] if "flows" in result else \
                shard_flows(shards / f"{index}.h5", result["name"], result["frames"], deltas)
            seconds += result["seconds"]
            pairs_done += len(flows)
            writer.add_clip(result["name"], result["frames"], flows)
            for meter, (sums, counts) in zip(meters.values(), result.get("epe", ())):
                meter.add_terms(sums, counts)
            del flows, result
        if writer is not None:
            writer.close()
    if not world.is_main:
        return None, None

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


def shard_flows(path, clip, num_frames, deltas):
    """The flows of ``clip`` in a shard file, ``{(src, dst): float32 (H, W, 2)}`` as ``FlowWriter.add_clip`` takes
    them (exactly the float16 values it stores); the file stays until its folder goes (a rerun may need it)."""
    with FlowStore(path) as store:
        return {pair: store.flow(clip, *pair) for pair in stored_pairs(num_frames, deltas)}
