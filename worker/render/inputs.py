"""A job's decoded inputs (region masks, background picture), checked again in the worker, and
the checks every method makes of a normalized spec before it renders."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from schemas import JobSpec
from schemas.images import decode_image, decode_mask

from .errors import InvalidJob


@dataclass
class JobInputs:
    """The decoded images of a job: region masks (bool, H x W) and the background picture."""

    masks: list[np.ndarray]
    background: Image.Image | None
    warnings: list[str] = field(default_factory=list)


def load_inputs(
    spec: JobSpec, *, max_pixels: int, assets: Callable[[str], bytes] | None = None
) -> JobInputs:
    """Decode the masks and the background image of a normalized spec (re-checked here: the
    worker trusts nothing it has not validated itself)."""
    width, height = spec.width, spec.height
    masks = [
        decode_mask(
            r.mask,
            width=width,
            height=height,
            max_pixels=max_pixels,
            loc=["regions", k, "mask"],
            assets=assets,
        )
        for k, r in enumerate(spec.regions)
    ]
    background, warnings = None, []
    if spec.background is not None and spec.background.image:
        image = decode_image(
            spec.background.image, max_pixels=max_pixels, loc=["background", "image"], assets=assets
        ).convert("RGB")
        if image.size != (width, height):
            warnings.append(
                f"background.image is {image.width}x{image.height}; resized to the canvas "
                f"{width}x{height}"
            )
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        background = image
    return JobInputs(masks=masks, background=background, warnings=warnings)


def image_pixels(image: Image.Image) -> torch.Tensor:
    """An image as (1, 3, H, W) float32 RGB pixels in [0, 1], what the VAE encodes."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def require_normalized(spec: JobSpec, names: Iterable[str]) -> None:
    """InvalidJob for the first of the spec's fields `names` left unset: the API and the worker
    render normalized specs only (`schemas.normalize_spec` fills them in)."""
    for name in names:
        if getattr(spec, name) is None:
            raise InvalidJob(f"{name} is not set: normalize the spec before rendering")
