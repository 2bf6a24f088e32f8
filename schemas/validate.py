"""parse_spec: a job spec from a client, checked field by field and as a whole."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from schemas.context import ValidationContext
from schemas.defaults import MAX_METADATA_BYTES, MULTIDIFFUSION_TILE_SIZE
from schemas.errors import Detail, Loc, SpecError, details_from_validation_error
from schemas.fields import METHOD_MAX_STEPS
from schemas.images import decode_image, decode_mask
from schemas.palette import palette_masks
from schemas.spec import JobSpec
from schemas.webhooks import webhook_url_problem

__all__ = ["canvas_problems", "check_spec", "parse_spec"]


def _detail(loc: Loc, msg: str) -> Detail:
    return {"loc": list(loc), "msg": msg}


def _load(data: JobSpec | Mapping[str, Any] | str | bytes) -> Any:
    if isinstance(data, JobSpec):
        # Re-validating a model (a worker trusts only what it checks itself) starts from JSON.
        return data.model_dump(mode="json")
    if isinstance(data, str | bytes | bytearray):
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SpecError(f"the job spec is not valid JSON: {exc}") from None
    return data


def parse_spec(
    data: JobSpec | Mapping[str, Any] | str | bytes, ctx: ValidationContext | None = None
) -> JobSpec:
    """Validate a job spec (a dict, JSON text or a `JobSpec`) and every rule between fields.

    Raises one `SpecError` listing every problem, each at its JSON path in the request body.
    `ctx` None checks against the default limits, with no model list and no assets.
    """
    ctx = ctx if ctx is not None else ValidationContext()
    raw = _load(data)
    if not isinstance(raw, Mapping):
        raise SpecError("the job spec must be a JSON object")
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(details_from_validation_error(exc, raw)) from None
    problems = check_spec(spec, ctx)
    if problems:
        raise SpecError(problems)
    return spec


def canvas_problems(spec: JobSpec, ctx: ValidationContext) -> list[Detail]:
    """Width and height present where the kind needs them, and within the pixel cap."""
    problems = []
    if spec.kind in ("regions", "panorama"):
        for side in ("width", "height"):
            if getattr(spec, side) is None:
                problems.append(_detail([side], f"{side} is required for kind {spec.kind!r}"))
    if spec.width is not None and spec.height is not None:
        pixels = spec.width * spec.height
        if pixels > ctx.max_pixels:
            msg = (
                f"canvas {spec.width}x{spec.height} is {pixels} pixels, over the farm's limit "
                f"of {ctx.max_pixels} pixels"
            )
            problems += [_detail(["width"], msg), _detail(["height"], msg)]
    return problems


def _shape_problems(spec: JobSpec, ctx: ValidationContext) -> list[Detail]:
    """Rules between kind, regions, palette, background, wrap, steps and model."""
    problems = []
    if spec.regions and spec.palette is not None:
        problems.append(_detail(["palette"], "send either regions or a palette, not both"))
    background = spec.background
    if spec.kind in ("panorama", "image"):
        if spec.regions:
            problems.append(
                _detail(["regions"], f"kind {spec.kind!r} takes no regions: use kind 'regions'")
            )
        if spec.palette is not None:
            problems.append(
                _detail(["palette"], f"kind {spec.kind!r} takes no palette: use kind 'regions'")
            )
        if background is None or background.prompt is None:
            problems.append(
                _detail(["background", "prompt"], f"kind {spec.kind!r} needs background.prompt")
            )
    elif (
        not spec.regions
        and spec.palette is None
        and (background is None or (background.prompt is None and background.image is None))
    ):
        problems.append(
            _detail(
                ["regions"],
                "nothing to render: give at least one region, a palette, or a background "
                "prompt or image",
            )
        )
    if spec.wrap != "none" and spec.kind != "panorama":
        problems.append(_detail(["wrap"], f"wrap {spec.wrap!r} needs kind 'panorama'"))
    if len(spec.regions) > ctx.max_regions:
        problems.append(
            _detail(
                ["regions"],
                f"{len(spec.regions)} regions, over the farm's limit of {ctx.max_regions}",
            )
        )
    if spec.palette is not None and len(spec.palette.colors) > ctx.max_regions:
        problems.append(
            _detail(
                ["palette", "colors"],
                f"{len(spec.palette.colors)} colors, over the farm's limit of {ctx.max_regions}",
            )
        )
    max_steps = METHOD_MAX_STEPS[spec.method]
    if spec.steps is not None and spec.steps > max_steps:
        problems.append(
            _detail(
                ["steps"],
                f"must be at most {max_steps} for method {spec.method!r}, not {spec.steps}",
            )
        )
    # The baseline's window is fixed when tile.size is null, so the stride is checkable here
    # (a stride over the window would leave columns that no view covers).
    stride = spec.tile.stride
    if (
        spec.method == "multidiffusion"
        and spec.tile.size is None
        and stride is not None
        and stride > MULTIDIFFUSION_TILE_SIZE
    ):
        problems.append(
            _detail(
                ["tile", "stride"],
                f"tile.stride ({stride}) must not exceed the window of method "
                f"'multidiffusion' ({MULTIDIFFUSION_TILE_SIZE} when tile.size is null)",
            )
        )
    if ctx.models is not None:
        name = spec.model or ctx.default_model
        if name not in ctx.models:
            known = ", ".join(sorted(ctx.models)) or "(none)"
            if spec.model:
                what = f"unknown model {name!r}"
            else:
                what = f"no model given, and the farm's default model {name!r} is not known"
            problems.append(_detail(["model"], f"{what}; known models: {known}"))
    return problems


def _extras_problems(spec: JobSpec, ctx: ValidationContext) -> list[Detail]:
    """Metadata size and the webhook target."""
    problems = []
    if spec.metadata is not None:
        try:
            text = json.dumps(
                spec.metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError):
            problems.append(_detail(["metadata"], "must be plain JSON (no NaN or infinity)"))
        else:
            size = len(text.encode("utf-8"))
            if size > MAX_METADATA_BYTES:
                problems.append(
                    _detail(
                        ["metadata"],
                        f"is {size} bytes as compact JSON, over the limit of "
                        f"{MAX_METADATA_BYTES} bytes",
                    )
                )
    if spec.webhook is not None:
        problem = webhook_url_problem(
            spec.webhook.url,
            allowlist=ctx.webhook_allowlist,
            resolve=ctx.resolve_webhook_hosts,
        )
        if problem:
            problems.append(_detail(["webhook", "url"], problem))
    return problems


def _image_problems(spec: JobSpec, ctx: ValidationContext) -> list[Detail]:
    """Decode every input image: masks, the background picture and the palette."""
    problems: list[Detail] = []
    width, height = spec.width, spec.height
    if width is None or height is None or width * height > ctx.max_pixels:
        width = height = None  # the canvas is reported already; check what does not need it
    if len(spec.regions) <= ctx.max_regions:  # else reported; do not decode a flood of masks
        for i, region in enumerate(spec.regions):
            try:
                decode_mask(
                    region.mask,
                    width=width,
                    height=height,
                    max_pixels=ctx.max_pixels,
                    loc=["regions", i, "mask"],
                    assets=ctx.assets,
                )
            except SpecError as exc:
                problems += exc.details
    if spec.background is not None and spec.background.image is not None:
        try:  # any size: the worker resizes it, with a warning (see normalize_spec)
            decode_image(
                spec.background.image,
                max_pixels=ctx.max_pixels,
                loc=["background", "image"],
                assets=ctx.assets,
            )
        except SpecError as exc:
            problems += exc.details
    if spec.palette is not None:
        problems += _palette_problems(spec, ctx, width, height)
    return problems


def _palette_problems(
    spec: JobSpec, ctx: ValidationContext, width: int | None, height: int | None
) -> list[Detail]:
    assert spec.palette is not None
    loc = ["palette", "image"]
    try:
        img = decode_image(
            spec.palette.image, max_pixels=ctx.max_pixels, loc=loc, assets=ctx.assets
        )
    except SpecError as exc:
        return exc.details
    if width is not None and height is not None and img.size != (width, height):
        return [
            _detail(
                loc, f"palette image is {img.width}x{img.height} but the canvas is {width}x{height}"
            )
        ]
    return [
        _detail(["palette", "colors", color], f"color {color} never occurs in the palette image")
        for color, mask in palette_masks(img, spec.palette.colors).items()
        if not mask.any()
    ]


def check_spec(spec: JobSpec, ctx: ValidationContext) -> list[Detail]:
    """Every rule that a single field cannot check, as a list of ``{"loc", "msg"}`` details."""
    return (
        canvas_problems(spec, ctx)
        + _shape_problems(spec, ctx)
        + _extras_problems(spec, ctx)
        + _image_problems(spec, ctx)
    )
