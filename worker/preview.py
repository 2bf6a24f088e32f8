"""A small preview of a render in progress: the latent projected to RGB, as a JPEG data URI."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

__all__ = ["MAX_SIDE", "latent_preview"]

MAX_SIDE = 256
"""Pixels on the preview's long side, at most."""
QUALITY = 70
"""JPEG quality of previews (a few KB each)."""

# A linear map from SD1.5's four latent channels to RGB: a well-known approximation that is
# good enough to see composition and colour while a render runs, and costs nothing next to a
# VAE decode.
_LATENT_RGB = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)


def latent_preview(latent: torch.Tensor) -> str:
    """A ``data:image/jpeg;base64,...`` preview of a (1, 4, h, w) latent."""
    x = latent[0].float().cpu()
    if x.shape[0] != _LATENT_RGB.shape[0]:
        x = x[: _LATENT_RGB.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", x, _LATENT_RGB)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    scale = MAX_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
