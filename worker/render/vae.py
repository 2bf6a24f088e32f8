"""Pixels to latents and back, with the VAE (or the tiny VAE for decoding)."""

from __future__ import annotations

import torch

from .defaults import DECODE_TILE, DECODE_TILE_OVERLAP, DECODE_TILED_ABOVE, LATENT_SCALE
from .tiles import axis_profiles, axis_spans


def _scaling(vae) -> float:
    return float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)


@torch.no_grad()
def encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> scaled latent; the posterior's mode, so it is deterministic
    (the reference sampled it, so the same job gave different latents)."""
    x = (pixels * 2 - 1).to(device=vae.device, dtype=vae.dtype)
    return vae.encode(x).latent_dist.mode() * _scaling(vae)


@torch.no_grad()
def decode(vae, latent: torch.Tensor, scaling_vae=None) -> torch.Tensor:
    """Scaled latent -> (1, 3, H, W) in [0, 1], float32. `scaling_vae` names the VAE whose
    scaling factor the latent carries (the pipeline's, also when a tiny VAE decodes)."""
    z = latent / _scaling(scaling_vae or vae)
    out = vae.decode(z.to(device=vae.device, dtype=vae.dtype)).sample
    return (out.float() / 2 + 0.5).clamp(0, 1)


WRAP_PAD = 8
"""Latent columns borrowed from the opposite edge on each side when decoding a 360-degree
panorama, so the decoder sees the wrap as continuous image (then the borrowed part is cut)."""


@torch.no_grad()
def decode_tiled(
    vae,
    latent: torch.Tensor,
    scaling_vae=None,
    *,
    tile: int = DECODE_TILE,
    overlap: int = DECODE_TILE_OVERLAP,
) -> torch.Tensor:
    """Decode tile by tile and blend the overlaps with ramps that sum to one, so the memory of
    a decode is one tile's (plus the output canvas) and no seam shows. (1, 3, H, W), float32."""
    _, _, h, w = latent.shape
    stride = tile - overlap
    out = torch.zeros(1, 3, h * LATENT_SCALE, w * LATENT_SCALE)
    rows = zip(
        axis_spans(h, tile, stride),
        axis_profiles(h * LATENT_SCALE, tile * LATENT_SCALE, stride * LATENT_SCALE),
    )
    cols = list(
        zip(
            axis_spans(w, tile, stride),
            axis_profiles(w * LATENT_SCALE, tile * LATENT_SCALE, stride * LATENT_SCALE),
        )
    )
    for (top, bottom), wy in rows:
        for (left, right), wx in cols:
            pixels = decode(vae, latent[..., top:bottom, left:right], scaling_vae).cpu()
            weight = (wy[:, None] * wx[None, :]).float()
            s = LATENT_SCALE
            out[..., top * s : bottom * s, left * s : right * s] += pixels * weight
    return out


def decode_any(vae, latent: torch.Tensor, scaling_vae=None) -> torch.Tensor:
    """One call for small canvases; tiles above DECODE_TILED_ABOVE latent pixels."""
    if latent.shape[-2] * latent.shape[-1] > DECODE_TILED_ABOVE:
        return decode_tiled(vae, latent, scaling_vae)
    return decode(vae, latent, scaling_vae)


@torch.no_grad()
def decode_wrapped(vae, latent: torch.Tensor, scaling_vae=None, decoder=decode) -> torch.Tensor:
    """Decode a horizontally circular latent without a seam at the left/right edge."""
    pad = min(WRAP_PAD, latent.shape[-1])
    padded = torch.cat([latent[..., -pad:], latent, latent[..., :pad]], dim=-1)
    pixels = decoder(vae, padded, scaling_vae)
    cut = pad * LATENT_SCALE
    return pixels[..., cut : pixels.shape[-1] - cut]


@torch.no_grad()
def white_latent(vae, native_size: int, latent_size: tuple[int, int]) -> torch.Tensor:
    """The latent of an all-white canvas, (1, C, h, w).

    A white image's latent is constant away from the borders, so one native-size encode's centre
    value is broadcast to any canvas: deterministic, and the cost does not grow with the canvas.
    """
    white = torch.ones(1, 3, native_size, native_size)
    z = encode(vae, white)
    centre = z[..., native_size // LATENT_SCALE // 2, native_size // LATENT_SCALE // 2]
    return centre[..., None, None].expand(1, z.shape[1], *latent_size).float().clone()
