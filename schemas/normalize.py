"""normalize_spec: a valid spec with every default filled in, as workers receive it."""

from __future__ import annotations

import secrets
from typing import Any

from schemas.context import ValidationContext
from schemas.defaults import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_NATIVE_SIZE,
    DEFAULT_STEPS,
    MAX_BOOTSTRAP_STEPS,
    MULTIDIFFUSION_BOOTSTRAP_FRACTION,
    MULTIDIFFUSION_DEFAULT_GUIDANCE_SCALE,
    MULTIDIFFUSION_DEFAULT_STEPS,
    SEED_MAX,
)
from schemas.errors import SpecError
from schemas.images import decode_image, encode_png_data_uri, image_size
from schemas.palette import palette_masks
from schemas.spec import JobSpec, Region
from schemas.validate import canvas_problems

__all__ = ["normalize_spec", "palette_to_regions"]


def palette_to_regions(spec: JobSpec, ctx: ValidationContext) -> list[Region]:
    """One region per palette color, in the colors' order, its mask the pixels of that color."""
    if spec.palette is None:
        return list(spec.regions)
    loc = ["palette", "image"]
    img = decode_image(spec.palette.image, max_pixels=ctx.max_pixels, loc=loc, assets=ctx.assets)
    masks = palette_masks(img, spec.palette.colors)
    regions = []
    for color, entry in spec.palette.colors.items():
        mask = masks[color]
        if not mask.any():
            raise SpecError(
                f"color {color} never occurs in the palette image",
                loc=["palette", "colors", color],
            )
        regions.append(Region(mask=encode_png_data_uri(mask), **entry.model_dump()))
    return regions


def normalize_spec(
    spec: JobSpec, ctx: ValidationContext | None = None
) -> tuple[JobSpec, list[str]]:
    """Fill in what a spec left to the farm, so that the stored job re-renders exactly.

    Fills the model (the farm's default), the seed (drawn), steps and guidance scale (the
    model's defaults; method `multidiffusion`: the baseline's own), the canvas of kind `image` (the model's native size), and turns a
    palette into regions. `spec` must have passed `parse_spec`; the result passes it again,
    unchanged. Returns the spec and warnings for the job's `warnings`.
    """
    ctx = ctx if ctx is not None else ValidationContext()
    model = spec.model or ctx.default_model
    entry = ctx.models.get(model) if ctx.models is not None else None
    data: dict[str, Any] = spec.model_dump()
    data["model"] = model
    if spec.seed is None:
        data["seed"] = secrets.randbelow(SEED_MAX + 1)
    if spec.method == "multidiffusion":
        if entry is not None and entry.family != "sd15":
            raise SpecError(
                f"the multidiffusion baseline runs on sd15 models; {model} is {entry.family}: "
                "leave method out (streammultidiffusion) or pick an sd15 model",
                loc=["method"],
            )
        data.update(_multidiffusion_defaults(spec))
    if data["steps"] is None:
        data["steps"] = entry.steps if entry is not None else DEFAULT_STEPS
    if data["guidance_scale"] is None:
        data["guidance_scale"] = (
            entry.guidance_scale if entry is not None else DEFAULT_GUIDANCE_SCALE
        )
    if spec.kind == "image":
        native = entry.native_size if entry is not None else DEFAULT_NATIVE_SIZE
        data["width"] = spec.width if spec.width is not None else native
        data["height"] = spec.height if spec.height is not None else native
    if spec.palette is not None:
        data["regions"] = [region.model_dump() for region in palette_to_regions(spec, ctx)]
        data["palette"] = None
    normalized = JobSpec.model_validate(data)
    problems = canvas_problems(normalized, ctx)  # a filled-in native size may pass the cap
    if problems:
        raise SpecError(problems)
    return normalized, _warnings(normalized, ctx)


def _multidiffusion_defaults(spec: JobSpec) -> dict[str, Any]:
    """The DDIM baseline's own defaults (not the LCM model's): 50 steps, guidance 7.5, and for
    kind `regions` bootstrapping over the original's share of the steps when the client left
    `bootstrap_steps` out (the field's default is StreamMultiDiffusion's, so "left out" is read
    from the fields the client set; the stored job then names it and re-renders exactly)."""
    filled: dict[str, Any] = {}
    if spec.steps is None:
        filled["steps"] = MULTIDIFFUSION_DEFAULT_STEPS
    if spec.guidance_scale is None:
        filled["guidance_scale"] = MULTIDIFFUSION_DEFAULT_GUIDANCE_SCALE
    if spec.kind == "regions" and "bootstrap_steps" not in spec.model_fields_set:
        steps = filled.get("steps", spec.steps)
        filled["bootstrap_steps"] = min(
            MAX_BOOTSTRAP_STEPS, round(steps * MULTIDIFFUSION_BOOTSTRAP_FRACTION)
        )
    return filled


def _warnings(spec: JobSpec, ctx: ValidationContext) -> list[str]:
    warnings = []
    background = spec.background
    if background is not None and background.image is not None:
        width, height = image_size(
            background.image,
            max_pixels=ctx.max_pixels,
            loc=["background", "image"],
            assets=ctx.assets,
        )
        if (width, height) != (spec.width, spec.height):
            warnings.append(
                f"background.image is {width}x{height} but the canvas is "
                f"{spec.width}x{spec.height}: it is resized to the canvas"
            )
    return warnings
