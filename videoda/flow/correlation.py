"""FlowNetC's correlation layer, exact and fast on a CPU.

FlowNetC correlates its two 256-channel feature maps (1/8 of the input resolution) over a 21 x 21 grid of
displacements ``d = (dx, dy)``, ``dx, dy`` in {-20, -18, ..., 20} (a kernel of 1 pixel, a patch of 21 and a
patch dilation of 2, with zero padding), and divides by the number of channels:

    out[b, 21 * i + j, y, x] = sum_c f1[b, c, y, x] * f2[b, c, y + dy_i, x + dx_j] / C

Without the compiled ``spatial_correlation_sampler`` extension, ptlflow 0.4.2 computes this by bilinearly
resampling the whole of ``f2`` once per displacement with ``grid_sample`` (441 copies of it at once), which
dominates FlowNet2's time on a CPU. The displacements are whole pixels, so no resampling is needed: shift the
zero-padded ``f2`` by each row offset and multiply. For one row offset, a batched matrix product of the
(W x C) rows of ``f1`` with the (C x (W + 40)) padded rows of ``f2`` holds every horizontal offset on 21 of
its diagonals, which are gathered out; the products are the same, only the summation order differs (float
rounding, about 1e-6 of the output's scale).
"""

import torch
import torch.nn.functional as F

PATCH = 21      # displacements per axis
DILATION = 2    # pixels between displacements
RADIUS = (PATCH - 1) // 2 * DILATION   # 20: the largest displacement


def flownet_correlation(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x (B, C, H, W) -> (B, 441, H, W), the same values and layout as ptlflow's ``correlate``."""
    if f1.shape != f2.shape or f1.ndim != 4:
        raise ValueError(f"correlation needs two (B, C, H, W) maps of one shape, got {tuple(f1.shape)} "
                         f"and {tuple(f2.shape)}")
    b, c, h, w = f1.shape
    f2 = F.pad(f2, (RADIUS, RADIUS, RADIUS, RADIUS))
    rows = f1.permute(0, 2, 3, 1)                                             # b h w c
    cols = torch.arange(w, device=f1.device)[:, None] + torch.arange(0, 2 * RADIUS + 1, DILATION,
                                                                     device=f1.device)[None]   # w x 21
    cols = cols.expand(b, h, w, PATCH)
    out = []
    for dy in range(0, 2 * RADIUS + 1, DILATION):
        full = torch.matmul(rows, f2[:, :, dy:dy + h].permute(0, 2, 1, 3))   # b h w (w + 40)
        out.append(full.gather(3, cols))                                      # b h w 21
    return torch.stack(out, dim=3).reshape(b, h, w, PATCH * PATCH).permute(0, 3, 1, 2).contiguous() / c
