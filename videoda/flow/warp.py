"""The one warping module: backward warping onto a reference frame, and the occlusion mask of Eq. 10.

Every function takes torch tensors in NCHW layout and a flow ``(B, 2, H, W)`` from the *reference* frame ``a``
to the frame ``b`` whose data is warped (see ``videoda.flow``): the output lives on frame ``a``'s grid.

A sampling point ``p + F(p)`` is **in frame** when it lies inside the image area,
``-0.5 <= x < W - 0.5`` and ``-0.5 <= y < H - 0.5`` (its nearest pixel exists). Outside, nothing was observed:
``warp_probs`` returns ``valid = False`` there (and zeros), ``warp_labels`` returns ``IGNORE_ID``, and the
occlusion mask is 0 (occluded). Inside, bilinear sampling uses border padding, so a point within half a pixel
of the edge reads the edge pixels. A NaN flow vector means "no correspondence" (the ``gt`` backend's backward
flow where frame b shows what frame a does not) and is treated as out of frame.

Occlusion (Eq. 10): ``O_{b=>a} = exp(-alpha * ||x_a - W_{b=>a}(x_b)||_2)``, with images scaled to [0, 1]
(RGB / 255) and the L2 norm taken over the three colour channels of each pixel, so the warping error lies
in [0, sqrt(3)]. A pixel is non-occluded where ``O > threshold`` (the paper's th = 0.7), i.e. where the error
is below ``-ln(threshold) / alpha``.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from videoda.data.classes import IGNORE_ID


def flow_to_tensor(flow) -> torch.Tensor:
    """Store layout ``(..., H, W, 2)`` (numpy or torch, any float dtype) -> float32 ``(B, 2, H, W)``."""
    flow = flow.float() if torch.is_tensor(flow) else torch.from_numpy(np.array(flow, np.float32))
    if flow.ndim == 3:
        flow = flow[None]
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2) or (B, H, W, 2), got {tuple(flow.shape)}")
    return flow.permute(0, 3, 1, 2).contiguous()


def hflip_flow(flow: torch.Tensor) -> torch.Tensor:
    """The flow of horizontally flipped frames, ``(B, 2, H, W)``: mirror the field and negate its x component."""
    flipped = flow.flip(-1).clone()
    flipped[:, 0] = -flipped[:, 0]
    return flipped


def _targets(flow):
    """Sampling points ``p + F(p)`` in pixels, (B, H, W) each, and the in-frame mask."""
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got {tuple(flow.shape)}")
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    inside = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)    # False for NaN
    return torch.nan_to_num(x), torch.nan_to_num(y), inside


def _check(data, flow, what):
    if data.ndim < 3 or data.shape[0] != flow.shape[0] or data.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"{what} {tuple(data.shape)} does not match flow {tuple(flow.shape)}")


def warp_probs(probs: torch.Tensor, flow: torch.Tensor):
    """Bilinear backward warp of ``probs`` (B, C, H, W) (soft predictions, images, any float maps).

    Returns ``(warped, valid)``: warped (B, C, H, W), zero where ``valid`` (B, H, W) is False (out of frame).
    """
    _check(probs, flow, "probs")
    _, _, h, w = flow.shape
    x, y, inside = _targets(flow)
    grid = torch.stack((2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1), dim=-1)
    warped = F.grid_sample(probs.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return torch.where(inside[:, None], warped, 0.0), inside


def warp_labels(labels: torch.Tensor, flow: torch.Tensor, ignore_id=IGNORE_ID) -> torch.Tensor:
    """Nearest-neighbour backward warp of integer ``labels`` (B, H, W); out-of-frame pixels get ``ignore_id``."""
    _check(labels, flow, "labels")
    b, _, h, w = flow.shape
    x, y, inside = _targets(flow)
    xi = torch.floor(x + 0.5).long().clamp_(0, w - 1)
    yi = torch.floor(y + 0.5).long().clamp_(0, h - 1)
    warped = labels.reshape(b, h * w).gather(1, (yi * w + xi).reshape(b, h * w)).reshape(b, h, w)
    return torch.where(inside, warped, torch.full_like(warped, ignore_id))


def warp_error(ref_images: torch.Tensor, images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``||x_a - W_{b=>a}(x_b)||_2`` per pixel (B, H, W), images (B, 3, H, W) in 0..255; inf out of frame."""
    _check(ref_images, flow, "reference images")
    warped, inside = warp_probs(images.float() / 255.0, flow)
    err = torch.linalg.vector_norm(ref_images.float() / 255.0 - warped, dim=1)
    return torch.where(inside, err, torch.full_like(err, math.inf))


def occlusion(ref_images, images, flow, alpha: float) -> torch.Tensor:
    """Eq. 10's occlusion map ``O_{b=>a}`` in [0, 1] (B, H, W); 1 = perfectly consistent, 0 out of frame."""
    return torch.exp(-alpha * warp_error(ref_images, images, flow))


def non_occluded(ref_images, images, flow, alpha: float, threshold: float) -> torch.Tensor:
    """Eq. 10's indicator ``I_{b=>a} = [O_{b=>a} > threshold]``, bool (B, H, W)."""
    return occlusion(ref_images, images, flow, alpha) > threshold
