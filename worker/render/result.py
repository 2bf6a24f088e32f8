"""What a render returns, and how every method ends: decoded pixels finished into an image,
the UNet calls counted, the timings of its phases."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from schemas import JobSpec


@dataclass
class RenderResult:
    image: Image.Image
    seed: int
    timings: dict[str, float]
    warnings: list[str]
    unet_calls: int = 0
    """UNet forward calls (several region-view pairs go in one call)."""
    unet_samples: int = 0
    """Latents those calls carried in all (a guided pair counts twice)."""


class UNetCounter:
    """Wraps the UNet to count its calls and the samples they carried (reported with every
    render and in benchmarks: batching lowers the calls, never the samples)."""

    def __init__(self, unet):
        self.unet, self.count, self.samples = unet, 0, 0

    @property
    def dtype(self):
        return self.unet.dtype

    def __call__(self, sample, *args, **kwargs):
        self.count += 1
        self.samples += int(sample.shape[0])
        return self.unet(sample, *args, **kwargs)


def finish_image(
    pixels: torch.Tensor, fixed: torch.Tensor | None = None, alpha: torch.Tensor | None = None
) -> Image.Image:
    """Decoded pixels (1, 3, H, W) in [0, 1] as the RGB image. With a fixed background `fixed`
    (same shape), blended with it by `alpha` (1, 1, H, W), 1 where the regions own a pixel:
    pixels no region touches keep the picture exactly."""
    if fixed is not None:
        pixels = alpha * pixels + (1 - alpha) * fixed
    return to_image(pixels)


def to_image(pixels: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) pixels in [0, 1] as an 8-bit RGB image (rounded, clipped)."""
    arr = (pixels[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8), mode="RGB")


def render_result(
    spec: JobSpec,
    image: Image.Image,
    t_start: float,
    seconds: tuple[float, float, float],
    warnings: list[str],
    calls: UNetCounter,
) -> RenderResult:
    """The result with its timings: `seconds` are the text, denoise and decode phases, and the
    whole render counts from `t_start` (a `time.perf_counter()` reading) to now."""
    text, denoise, decode = seconds
    timings = {
        "text_seconds": round(text, 4),
        "denoise_seconds": round(denoise, 4),
        "decode_seconds": round(decode, 4),
        "render_seconds": round(time.perf_counter() - t_start, 4),
    }
    return RenderResult(
        image=image,
        seed=int(spec.seed),
        timings=timings,
        warnings=warnings,
        unet_calls=calls.count,
        unet_samples=calls.samples,
    )
