"""Tiled VAE decode: the same picture as one decode, no seam where tiles meet."""

from __future__ import annotations

import torch

from worker.render import vae as vae_ops


def _latent(h: int, w: int) -> torch.Tensor:
    # A smooth latent, like a render's (a random one is all edges everywhere).
    g = torch.Generator().manual_seed(3)
    coarse = torch.randn(1, 4, h // 8 + 1, w // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear") * 2


def test_tiled_decode_matches_one_decode_and_shows_no_seam(tiny):
    vae = tiny.pipe.vae
    latent = _latent(32, 96)
    whole = vae_ops.decode(vae, latent)
    tiled = vae_ops.decode_tiled(vae, latent, tile=24, overlap=8)  # 1 x 5 tiles
    assert tiled.shape == whole.shape == (1, 3, 256, 768)
    diff = (tiled - whole).abs()
    # Close, not equal: the VAE's mid-block attention is global, so a tile sees less context
    # (random weights exaggerate it; about 10/255 on average here).
    assert diff.mean() < 0.06, float(diff.mean())
    # Seams: the step between neighbouring columns where tiles meet is no larger than elsewhere.
    steps = (tiled[..., 1:] - tiled[..., :-1]).abs().mean(dim=(0, 1, 2))
    borders = [x * 8 for x in (16, 24, 32, 40, 48, 56, 64, 72)]
    assert max(float(steps[b - 1]) for b in borders) < 3 * float(steps.mean()) + 1e-3


def test_large_canvases_are_decoded_in_tiles(tiny, monkeypatch):
    calls = []
    real = vae_ops.decode

    def counting(vae, latent, scaling_vae=None):
        calls.append(tuple(latent.shape[-2:]))
        return real(vae, latent, scaling_vae)

    monkeypatch.setattr(vae_ops, "decode", counting)
    vae_ops.decode_any(tiny.pipe.vae, _latent(32, 32))
    assert calls == [(32, 32)]
    calls.clear()
    vae_ops.decode_any(tiny.pipe.vae, _latent(64, 256))  # over DECODE_TILED_ABOVE
    assert len(calls) > 1 and max(h * w for h, w in calls) <= 64 * 64
