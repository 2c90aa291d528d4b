"""Flow estimation backends: ``flows(clip, pairs) -> (N, H, W, 2)`` float32, F_{src->dst} for each (src, dst).

- ``dis``: OpenCV's DIS optical flow (Kroeger et al., 2016) on grey frames; fast, no weights.
- ``gt``: the embedded benchmark's exact forward flow (``data/synth/flow_gt/<split>/<clip>.npy``), resized to
  the clip's resolution (vectors rescaled with it). Other pairs are derived from it: backward steps
  t+1 -> t by inverting the field (fixed-point iteration ``G(p) = -F(p + G(p))``; NaN, i.e. no
  correspondence, where frame t+1 shows what frame t does not), farther pairs by chaining steps; both are
  exact where the scene is visible in all the frames involved, and approximate at occlusion boundaries.
- ``zero``: the identity flow (no warping): every neighbour is taken as already aligned with its reference, so
  Eq. 10 averages the raw neighbours where they look alike and the refinement pastes without motion. The baseline
  that measures what a flow buys (reports/paper_tables.md, the flow-quality table).
- any other name: that ptlflow model, e.g. ``flownet2`` (Ilg et al., 2017), the paper's choice, or
  ``raft_small``, with the weights of a checkpoint found offline (``resolve_checkpoint``), never random ones.
  FlowNet models (flownet2, flownetc, flownetcs, flownetcss) get the exact fast correlation of
  ``videoda.flow.correlation`` patched in and channels-last weights. ptlflow is imported only here, when such a
  backend is built. A ptlflow model runs on the device of its ``Runtime`` (``compute``), in its precision; DIS
  (OpenCV) and the ground-truth flows run on the CPU whatever the device.
"""

import contextlib
import itertools
import re
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import torch

from videoda import choices
from videoda.errors import DataError, ParamError
from videoda.flow.correlation import flownet_correlation
from videoda.flow.warp import flow_to_tensor, warp_probs
from videoda.utils.device import CPU
from videoda.utils.io import sha256_file

BUILTIN_METHODS = ("dis", "gt", "zero")   # every other flow.method names a ptlflow model
DEFAULT_CKPT = "things"           # ptlflow's checkpoint name used when flow.ckpt is null
DIS_PRESETS = {name: getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{name.upper()}") for name in choices.DIS_PRESETS}
FLOWNET2_CKPT = "flownet2-things-d63b53a7.ckpt"   # ptlflow's name: torch.hub's <name>-<sha256 prefix>.ckpt


class DisFlow:
    def __init__(self, preset="medium"):
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        self.attrs = {"dis_preset": preset}   # what the flow store records about the estimator

    def flows(self, clip, pairs):
        grey = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in clip.images]
        return np.stack([self.dis.calc(grey[a], grey[b], None) for a, b in pairs])


class ZeroFlow:
    attrs = {}

    def flows(self, clip, pairs):
        h, w = clip.images.shape[1:3]
        return np.zeros((len(pairs), h, w, 2), np.float32)


def resize_flow(flow, size):
    """(N, h, w, 2) -> (N, H, W, 2) float32, vectors rescaled to the new pixel size."""
    n, h, w, _ = flow.shape
    out_h, out_w = size
    flow = np.asarray(flow, np.float32)
    if (h, w) == (out_h, out_w):
        return flow.copy()
    interp = cv2.INTER_AREA if out_h <= h and out_w <= w else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (out_w, out_h), interpolation=interp) for f in flow])
    out[..., 0] *= out_w / w
    out[..., 1] *= out_h / h
    return out


def chain_flows(steps):
    """F_{a->a+k} from the one-frame flows F_{a->a+1}, ..., F_{a+k-1->a+k} (each (H, W, 2))."""
    total = flow_to_tensor(steps[0])
    for step in steps[1:]:
        moved, _ = warp_probs(flow_to_tensor(step), total)   # zero once the path has left the frame
        total = total + moved
    return total[0].permute(1, 2, 0).numpy()


def invert_flow(flow, iterations=30, tolerance=0.5):
    """F_{b->a} from F_{a->b} (H, W, 2) by the fixed point G(p) = -F(p + G(p)). Where no point of frame a lands
    within ``tolerance`` pixels of p (p shows what frame a does not: disocclusion, or it came from outside
    frame a), G(p) is NaN: no correspondence."""
    forward = flow_to_tensor(flow)
    inverse = -forward
    for _ in range(iterations):
        moved, inside = warp_probs(forward, inverse)
        inverse = torch.where(inside[:, None], -moved, inverse)
    moved, inside = warp_probs(forward, inverse)
    solved = inside & (torch.linalg.vector_norm(inverse + moved, dim=1) <= tolerance)
    return torch.where(solved[:, None], inverse, torch.nan)[0].permute(1, 2, 0).numpy()


class GroundTruthFlow:
    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: ground-truth flow folder not found (flow.gt_root)")
        self.attrs = {"gt_root": str(root)}

    def forward(self, clip):
        """The clip's exact F_{t->t+1}, (T - 1, H, W, 2) at the clip's resolution."""
        path = self.root / f"{clip.name}.npy"
        if not path.is_file():
            raise DataError(f"{path}: no ground-truth flow for clip '{clip.name}'")
        try:
            flow = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:   # EOFError: an empty file
            raise DataError(f"{path}: unreadable ground-truth flow ({e})") from e
        t, h, w = clip.images.shape[:3]
        if flow.ndim != 4 or flow.shape[0] != t - 1 or flow.shape[3] != 2:
            raise DataError(f"{path}: flow {flow.shape} does not fit clip '{clip.name}' of {t} frames "
                            f"(expected ({t - 1}, H, W, 2))")
        return resize_flow(flow, (h, w))

    def flows(self, clip, pairs):
        forward = self.forward(clip)
        backward = {}     # F_{t+1->t}, each inverted once

        def step_back(t):
            if t not in backward:
                backward[t] = invert_flow(forward[t])
            return backward[t]

        out = []
        for a, b in pairs:   # chaining inverted steps beats inverting a chained flow (fewer folds)
            steps = forward[a:b] if b > a else [step_back(t) for t in range(a - 1, b - 1, -1)]
            out.append(steps[0] if len(steps) == 1 else chain_flows(steps))
        return np.stack(out)


def is_ptlflow_method(method):
    """Every ``flow.method`` other than the built-in ones names a ptlflow model."""
    return method not in BUILTIN_METHODS


def ptlflow_reference(method, key="flow.method"):
    """ptlflow's model class for ``method`` (imports ptlflow, slowly: only when a ptlflow model is used)."""
    import ptlflow   # slow to import and prints: only here

    try:
        return ptlflow.get_model_reference(method)
    except ValueError:
        raise ParamError(f"params.yaml: {key} = {method!r} is neither one of {list(BUILTIN_METHODS)} nor a "
                         f"ptlflow model name (list them: python -c \"import ptlflow; "
                         f"print(ptlflow.get_model_names())\")") from None


def hub_checkpoint_path(url) -> Path:
    """Where torch.hub (and so ptlflow) keeps the file downloaded from ``url``: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def missing_checkpoint_message(method, name, path, url):
    return (f"{path}: not found, ptlflow's '{name}' checkpoint for {method}. Nothing is downloaded here: on a "
            f"machine with network access, download {url} and copy the file {path.name} to {path.parent} "
            f"($TORCH_HOME/hub/checkpoints/; $TORCH_HOME defaults to ~/.cache/torch), or set flow.ckpt to the path of "
            f"a checkpoint file")


def resolve_checkpoint(method, ckpt=None, ref=None):
    """The checkpoint file for ptlflow's ``method``: ``(path, url)``. ``ckpt`` is a local file, or the name of one
    of the model's pretrained checkpoints (default ``things``), looked up offline where torch.hub stores it (``url``
    is then its address, else None). Nothing is downloaded; a missing file says which file to get and where to put
    it."""
    ckpt = str(ckpt) if ckpt else DEFAULT_CKPT
    path = Path(ckpt).expanduser()
    if path.is_file():
        return path, None
    ref = ref if ref is not None else ptlflow_reference(method)
    urls = dict(getattr(ref, "pretrained_checkpoints", None) or {})
    if ckpt in urls:
        path = hub_checkpoint_path(urls[ckpt])
        if not path.is_file():
            raise DataError(missing_checkpoint_message(method, ckpt, path, urls[ckpt]))
        return path, urls[ckpt]
    if "/" in ckpt or path.suffix:
        raise DataError(f"{path}: checkpoint file not found (flow.ckpt)")
    names = ", ".join(sorted(urls)) or "none; give a file path"
    raise DataError(f"flow.ckpt = {ckpt!r}: no such file, and not a pretrained checkpoint name of ptlflow's "
                    f"{method} (its names: {names})")


def read_checkpoint(path, url=None):
    """A ptlflow checkpoint (a dict with a ``state_dict``) and its sha256. A file fetched from ``url`` must match
    the sha256 prefix in its name (torch.hub's convention, which ptlflow checks when it downloads)."""
    sha256 = sha256_file(path)
    expected = re.search(r"-([a-f0-9]{6,})\.", path.name) if url else None
    if expected and not sha256.startswith(expected.group(1)):
        raise DataError(f"{path}: its sha256 starts {sha256[:len(expected.group(1))]}, its name says "
                        f"{expected.group(1)}: a partial or corrupt download; get it again from {url}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path))   # mapped: read once, as the weights are used
    except Exception as e:   # torch.load raises many kinds (unpickling, zip, EOF) for a bad file
        raise DataError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DataError(f"{path}: not a ptlflow checkpoint (expected a dict with a 'state_dict')")
    return ckpt, sha256


@contextlib.contextmanager
def parameters_on_meta():
    """Within this block, new modules get their parameters on the meta device (no memory, no initialisation work)
    and everything else (buffers, metric states) as usual: for weights that a checkpoint replaces."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def build_ptlflow_model(method, fast_correlation=True, ref=None, random_init=False):
    """ptlflow's ``method`` model in eval mode; by default its parameters are left on the meta device, to load
    with ``load_state_dict(sd, assign=True)`` (this skips a random initialisation that the checkpoint replaces:
    162 M weights for FlowNet2). FlowNet models get the fast correlation (``use_fast_correlation``)."""
    torch.set_flush_denormal(True)   # denormal floats are slow on some CPUs (no effect on AMD Zen 4, measured)
    ref = ref if ref is not None else ptlflow_reference(method)
    if random_init:
        model = ref()
    else:
        with parameters_on_meta():
            model = ref()
    if fast_correlation and flownet_correlations(model):
        use_fast_correlation(model)
        model.videoda_channels_last = True   # oneDNN's native layout on CPUs: fewer layout conversions
    return model.eval()


def flownet_correlations(model):
    """The FlowNetC modules of ``model`` that use ptlflow's (slow on a CPU) correlation function."""
    from ptlflow.models.flownet import submodules

    return [m for m in model.modules() if getattr(m, "corr", None) is submodules.correlate]


def use_fast_correlation(model):
    """Replace ptlflow's FlowNet correlation function (an attribute of each FlowNetC) by ours, in this model."""
    patched = flownet_correlations(model)
    if not patched:
        raise RuntimeError("no ptlflow FlowNet correlation found to replace: has ptlflow's FlowNet code changed?")
    for m in patched:
        m.corr = flownet_correlation
    return model


def apply_hyper_parameters(model, ckpt):
    """What ptlflow's own checkpoint loading sets on a model besides its weights (``ptlflow.restore_model``)."""
    hp = ckpt.get("hyper_parameters") or {}
    for key in ("train_size", "train_avg_length"):
        if key in hp:
            setattr(model, key, hp[key])
    for name, value in (hp.get("extra_params") or {}).items():
        model.add_extra_param(name, value)


def load_ptlflow_model(method, ckpt=None, fast_correlation=True):
    """ptlflow's ``method`` model with the weights of ``ckpt`` (see ``resolve_checkpoint``), in eval mode, and the
    checkpoint's path and sha256 as ``model.checkpoint`` and ``model.checkpoint_sha256``. Never random weights:
    a missing or bad checkpoint is a ``DataError`` naming the file."""
    ref = ptlflow_reference(method)
    path, url = resolve_checkpoint(method, ckpt, ref)
    ckpt, sha256 = read_checkpoint(path, url)
    try:
        model = build_ptlflow_model(method, fast_correlation, ref)
    except Exception:   # a model whose constructor computes with its weights cannot be built on the meta device
        model = build_ptlflow_model(method, fast_correlation, ref, random_init=True)
    state = ckpt["state_dict"]
    if getattr(model, "videoda_channels_last", False):    # copies the weights out of the mapped file, once
        state = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.ndim == 4 else v
                 for k, v in state.items()}
    try:
        model.load_state_dict(state, assign=True)     # strict: every weight comes from the file
    except RuntimeError as e:
        raise DataError(f"{path}: not a {method} checkpoint ({str(e).splitlines()[0]} ...)") from e
    assert not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))
    apply_hyper_parameters(model, ckpt)
    model.checkpoint, model.checkpoint_sha256 = path, sha256
    return model.eval()


def load_flownet2(path=None, fast_correlation=True):
    """FlowNet2 with the weights of the checkpoint ``path`` (default: ptlflow's 'things' weights)."""
    return load_ptlflow_model("flownet2", path, fast_correlation)


def checkpoint_label(model):
    """Which weights a loaded ptlflow model holds, for reports: ptlflow's published weights or something else."""
    path, sha256 = Path(model.checkpoint), model.checkpoint_sha256
    published = re.search(r"-([a-f0-9]{6,})\.", path.name)
    if published and sha256.startswith(published.group(1)):
        return f"ptlflow's published weights {path.name} (sha256 {sha256[:12]}...)"
    return (f"{path.name} (sha256 {sha256[:12]}...): not ptlflow's published weights; if they are random weights, "
            f"figures from them are not a measurement of the model")


def to_flownet_input(images):
    """uint8 RGB (N, H, W, 3) -> what ptlflow's models read: float BGR in [0, 1], (N, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).permute(0, 3, 1, 2).contiguous() / 255.0


@torch.inference_mode()
def run_ptlflow(model, first, second):
    """F_{first->second} for batches of frames (N, 3, H, W) from ``to_flownet_input``: (N, H, W, 2)."""
    return model({"images": torch.stack((first, second), dim=1)})["flows"][:, 0].permute(0, 2, 3, 1)


class PtlflowFlow:
    """A ptlflow model, from ``load_ptlflow_model``: the flow store records its checkpoint's name and sha256. It runs
    on ``compute``'s device under its autocast (a ``videoda.utils.device.Runtime``); its
    weights keep their memory layout (channels-last for FlowNet models: ptlflow's other models reshape feature
    maps with ``view``, which needs the default layout)."""

    def __init__(self, model, batch_size=4, compute=CPU):
        self.compute = compute
        self.model, self.batch_size = model.to(self.compute.device), batch_size
        path = getattr(model, "checkpoint", None)
        self.attrs = {} if path is None else {"checkpoint": Path(path).name,
                                              "checkpoint_sha256": model.checkpoint_sha256}

    def flows(self, clip, pairs):
        out = []
        for i in range(0, len(pairs), self.batch_size):   # only this batch's frames are read and converted
            src, dst = zip(*pairs[i:i + self.batch_size])
            first, second = to_flownet_input(clip.images[list(src)]), to_flownet_input(clip.images[list(dst)])
            with self.compute.autocast():
                flow = run_ptlflow(self.model, self.compute.tensor(first), self.compute.tensor(second))
            out.append(flow.float().cpu().numpy())
        return np.concatenate(out)


def make_backend(method, dis_preset="medium", gt_root=None, ckpt=None, batch_size=4, compute=CPU):
    """The flow backend ``method``; a ptlflow model runs on ``compute`` (a ``Runtime``)."""
    if method == "dis":
        return DisFlow(dis_preset)
    if method == "gt":
        return GroundTruthFlow(gt_root)
    if method == "zero":
        return ZeroFlow()
    return PtlflowFlow(load_ptlflow_model(method, ckpt), batch_size, compute)
