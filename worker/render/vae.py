"""Pixels to latents and back, with the VAE (or the tiny VAE for decoding)."""

from __future__ import annotations

import torch

from .defaults import LATENT_SCALE


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
def decode_wrapped(vae, latent: torch.Tensor, scaling_vae=None) -> torch.Tensor:
    """Decode a horizontally circular latent without a seam at the left/right edge."""
    pad = min(WRAP_PAD, latent.shape[-1])
    padded = torch.cat([latent[..., -pad:], latent, latent[..., :pad]], dim=-1)
    pixels = decode(vae, padded, scaling_vae)
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
