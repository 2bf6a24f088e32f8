"""Region masks: cover by layer order, Gaussian blur, strength, per-step quantization, downsample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .defaults import COVER_ALPHA, MIN_BLUR_SIGMA

MASK_MODES = ("discrete", "semi-continuous", "continuous")


@dataclass
class PreparedMasks:
    """`steps`: (P, T, 1, h, w) latent-size weights per region and step; `blurred`: (P, 1, H, W)
    pixel masks after cover and blur, before strength (used for the final pixel blend)."""

    steps: torch.Tensor
    blurred: torch.Tensor


def cover(masks: torch.Tensor, alpha: float = COVER_ALPHA) -> torch.Tensor:
    """Later masks lie on top: scale each mask by `alpha` wherever a later mask is > 0."""
    out = masks.clone()
    for p in range(masks.shape[0] - 1):
        above = (masks[p + 1 :] > 0).any(dim=0)
        out[p] = torch.where(above, out[p] * alpha, out[p])
    return out


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalized 1-D Gaussian of size 2*ceil(3 sigma)+1."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, H, W) mask, sigma in pixels, replicate padding."""
    if sigma < MIN_BLUR_SIGMA:
        return mask
    k = gaussian_kernel(sigma).to(mask)
    r = (k.numel() - 1) // 2
    x = mask[None]  # (1, 1, H, W)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x[0]


def quantize(masks: torch.Tensor, levels: Sequence[float], mode: str) -> torch.Tensor:
    """(P, 1, H, W) soft masks -> (P, T, 1, H, W) per-step masks against the noise levels.

    discrete: m > b_i; continuous: clip((m - b_{i+1}) / (b_i - b_{i+1}), 0, 1) with b_T = 0;
    semi-continuous: discrete for every step but the last, which is continuous.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mode!r}")
    b = torch.tensor(list(levels), dtype=masks.dtype, device=masks.device)
    b_next = torch.cat([b[1:], b.new_zeros(1)])
    shape = (1, -1, 1, 1, 1)
    m = masks[:, None]  # (P, 1, 1, H, W)
    discrete = (m > b.view(shape)).to(masks.dtype)
    continuous = ((m - b_next.view(shape)) / (b - b_next).view(shape)).clamp(0, 1)
    if mode == "discrete":
        return discrete
    if mode == "continuous":
        return continuous
    return torch.cat([discrete[:, :-1], continuous[:, -1:]], dim=1)


def prepare_masks(
    masks: torch.Tensor,
    *,
    strengths: Sequence[float],
    stds: Sequence[float],
    levels: Sequence[float],
    mode: str,
    latent_size: tuple[int, int],
    cover_alpha: float = COVER_ALPHA,
) -> PreparedMasks:
    """The mask pipeline of docs/method.md ("Masks"), in its order, for (P, 1, H, W) masks in [0, 1]
    already at canvas size: cover, blur, (keep for the blend), strength, quantize, downsample."""
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be (P, 1, H, W), got {tuple(masks.shape)}")
    covered = cover(masks.float(), cover_alpha)
    if masks.shape[0] == 0:  # a job of background only
        blurred = covered
    else:
        blurred = torch.stack([blur(m, float(s)) for m, s in zip(covered, stds)])
    strong = blurred * torch.tensor(list(strengths), dtype=blurred.dtype).view(-1, 1, 1, 1)
    per_step = quantize(strong, levels, mode)  # (P, T, 1, H, W)
    P, T, _, H, W = per_step.shape
    small = F.interpolate(per_step.view(P * T, 1, H, W), size=latent_size, mode="nearest-exact")
    return PreparedMasks(steps=small.view(P, T, 1, *latent_size), blurred=blurred)


def background_masks(steps: torch.Tensor) -> torch.Tensor:
    """(T, 1, h, w): what no region claims at each step, clip(1 - sum_p m_{p,i}, 0, 1)."""
    return (1 - steps.sum(dim=0)).clamp(0, 1)
