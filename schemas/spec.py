"""The job spec: what a client sends to ``POST /v1/jobs``, one pydantic model per concept."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from schemas.defaults import (
    DEFAULT_BOOTSTRAP_LEAK_SENSITIVITY,
    DEFAULT_BOOTSTRAP_STEPS,
    DEFAULT_OUTPUT_QUALITY,
    DEFAULT_PRIORITY,
    LCM_MAX_STEPS,
    MAX_BOOTSTRAP_STEPS,
    MAX_GUIDANCE_SCALE,
    MAX_MODEL_NAME_CHARS,
    MAX_PRIORITY,
    MAX_REGIONS,
    MAX_WEBHOOK_URL_CHARS,
    MIN_SIDE,
    MULTIDIFFUSION_MAX_STEPS,
    SEED_MAX,
    SIDE_MULTIPLE,
)
from schemas.fields import (
    KINDS,
    METHOD_MAX_STEPS,
    METHODS,
    MODEL_NAME_PATTERN,
    ColorKey,
    ImageRef,
    Kind,
    MaskMode,
    MaskStd,
    MaskStrength,
    Method,
    NegativePrompt,
    OutputFormat,
    Prompt,
    PromptStrength,
    Wrap,
)

__all__ = [
    "KINDS",
    "METHODS",
    "METHOD_MAX_STEPS",
    "Background",
    "JobSpec",
    "Output",
    "Palette",
    "PaletteEntry",
    "Region",
    "Tile",
    "Webhook",
]


class _Model(BaseModel):
    """Every spec model: unknown fields are errors, and floats must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Background(_Model):
    """What fills every pixel that no region claims, and an optional picture to start from."""

    prompt: Prompt | None = Field(
        default=None,
        description="Prompt for unclaimed pixels; required for kinds `panorama` and `image`. "
        "Null (with no image): unclaimed pixels are plain white.",
    )
    negative_prompt: NegativePrompt = ""
    image: ImageRef | None = Field(
        default=None,
        description="Starting picture for inpainting or editing (data URI or `asset:<id>`); "
        "resized to the canvas, with a warning, when its size differs.",
    )


class Region(_Model):
    """One prompt bound to one mask of the canvas."""

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    mask: ImageRef = Field(
        description="The region's mask, exactly `width` x `height` pixels: its alpha channel "
        "when it has one, else its luminance; values above 0.5 are in the region."
    )
    mask_strength: MaskStrength = 1.0
    mask_std: MaskStd = 0.0
    prompt_strength: PromptStrength = 1.0


class PaletteEntry(_Model):
    """The prompt and settings of the region painted in one palette color."""

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    mask_strength: MaskStrength = 1.0
    mask_std: MaskStd = 0.0
    prompt_strength: PromptStrength = 1.0


class Palette(_Model):
    """A painted label map: every pixel of a listed color belongs to that color's region."""

    image: ImageRef = Field(
        description="The label map, exactly `width` x `height` pixels; pixels of colors not "
        "in `colors` (and transparent pixels) go to the background."
    )
    colors: dict[ColorKey, PaletteEntry] = Field(
        min_length=1,
        max_length=MAX_REGIONS,
        description=f"1..{MAX_REGIONS} colors (`#rrggbb`, any case) and the region each one "
        "paints; every color must occur in the image. Order is region order.",
    )

    @field_validator("colors", mode="before")
    @classmethod
    def _no_case_duplicates(cls, value: Any) -> Any:
        if isinstance(value, dict):
            seen: dict[str, str] = {}
            for key in value:
                if isinstance(key, str):
                    if key.lower() in seen:
                        raise ValueError(
                            f"colors {seen[key.lower()]!r} and {key!r} are the same color"
                        )
                    seen[key.lower()] = key
        return value


class Tile(_Model):
    """The window and stride of the tiling in image pixels; null means the model's default."""

    size: int | None = Field(
        default=None,
        ge=MIN_SIDE,
        multiple_of=SIDE_MULTIPLE,
        strict=True,
        description=f"Window side in pixels, a multiple of {SIDE_MULTIPLE}, at least "
        f"{MIN_SIDE} (the latent window is size / 8). Null: the model's native size.",
    )
    stride: int | None = Field(
        default=None,
        ge=SIDE_MULTIPLE,
        multiple_of=SIDE_MULTIPLE,
        strict=True,
        description=f"Step between windows in pixels, a multiple of {SIDE_MULTIPLE}, at most "
        "`size`. Null: half the window.",
    )

    # A field validator rather than a model validator, so that the error lands on
    # ["tile", "stride"] (fields validate in order: `size` is already in info.data).
    @field_validator("stride")
    @classmethod
    def _stride_within_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("size")
        if value is not None and size is not None and value > size:
            raise ValueError(f"tile.stride ({value}) must not exceed tile.size ({size})")
        return value


class Output(_Model):
    """How the finished image is encoded."""

    format: OutputFormat = Field(default="png", description="Image format of the result.")
    quality: int = Field(
        default=DEFAULT_OUTPUT_QUALITY,
        ge=1,
        le=100,
        strict=True,
        description="Encoder quality 1..100 for `webp` and `jpeg`; ignored for `png`.",
    )


class Webhook(_Model):
    """Where the final job object is POSTed when the job ends."""

    url: str = Field(
        min_length=1,
        max_length=MAX_WEBHOOK_URL_CHARS,
        description="https URL (http only to a host in the farm's webhook allow-list). "
        "Private, loopback, link-local and metadata addresses are refused unless allow-listed.",
        examples=["https://example.com/hook"],
    )


class JobSpec(_Model):
    """One render job, as `POST /v1/jobs` takes it (see docs/rest-api.md, "Job spec")."""

    kind: Kind = Field(
        default="regions",
        description="`regions`: region-based multi-prompt image (inpainting when "
        "`background.image` is set); `panorama`: one prompt over a wide or tall canvas; "
        "`image`: one prompt, model-native or any size.",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MODEL_NAME_CHARS,
        pattern=MODEL_NAME_PATTERN,
        description="Name of a model in the farm's models file; null: the farm's default.",
    )
    width: int | None = Field(
        default=None,
        ge=MIN_SIDE,
        multiple_of=SIDE_MULTIPLE,
        strict=True,
        description=f"Canvas width in pixels, a multiple of {SIDE_MULTIPLE}, at least "
        f"{MIN_SIDE}; width x height is capped by the farm's max_pixels. Required except for "
        "kind `image` (null: the model's native size).",
    )
    height: int | None = Field(
        default=None,
        ge=MIN_SIDE,
        multiple_of=SIDE_MULTIPLE,
        strict=True,
        description=f"Canvas height in pixels, a multiple of {SIDE_MULTIPLE}, at least "
        f"{MIN_SIDE}. Required except for kind `image`.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=SEED_MAX,
        strict=True,
        description="Random seed 0..2^63-1; null: the API draws one and stores it in the job.",
    )
    steps: int | None = Field(
        default=None,
        ge=1,
        le=MULTIDIFFUSION_MAX_STEPS,
        strict=True,
        description=f"Denoising steps: 1..{LCM_MAX_STEPS} for LCM models (method "
        f"`streammultidiffusion`), 1..{MULTIDIFFUSION_MAX_STEPS} for `multidiffusion`; "
        "null: the model's default (50 for `multidiffusion`).",
    )
    guidance_scale: float | None = Field(
        default=None,
        ge=0.0,
        le=MAX_GUIDANCE_SCALE,
        strict=True,
        description=f"Classifier-free guidance scale 0..{MAX_GUIDANCE_SCALE:g}; null: the "
        "model's default.",
    )
    background: Background | None = Field(
        default=None, description="Prompt and optional picture for pixels no region claims."
    )
    regions: list[Region] = Field(
        default_factory=list,
        description=f"0..{MAX_REGIONS} regions (the farm's max_regions setting), in order.",
    )
    palette: Palette | None = Field(
        default=None,
        description="A painted label map instead of `regions`; the API turns it into regions.",
    )
    bootstrap_steps: int = Field(
        default=DEFAULT_BOOTSTRAP_STEPS,
        ge=0,
        le=MAX_BOOTSTRAP_STEPS,
        strict=True,
        description=f"StreamMultiDiffusion bootstrapping steps 0..{MAX_BOOTSTRAP_STEPS}.",
    )
    bootstrap_leak_sensitivity: float = Field(
        default=DEFAULT_BOOTSTRAP_LEAK_SENSITIVITY,
        ge=0.0,
        le=1.0,
        strict=True,
        description="StreamMultiDiffusion leak sensitivity 0..1 during bootstrapping.",
    )
    mask_mode: MaskMode = Field(
        default="discrete", description="How masks are quantized per step (see docs/method.md)."
    )
    method: Method = Field(
        default="streammultidiffusion",
        description="`streammultidiffusion` (default): LCM schedule, latent pre-averaging and "
        "mask-centering bootstrapping. `multidiffusion`: the original baseline (DDIM, 50 steps, "
        "window 64 / stride 8 latent, guidance 7.5, per-view averaging of scheduler outputs, "
        "constant-colour bootstrapping), for comparing speed and quality on one codebase.",
    )
    tile: Tile = Field(default_factory=lambda: Tile(), description="Tiling window and stride.")
    wrap: Wrap = Field(
        default="none",
        description="`horizontal`: a seamless 360-degree panorama, left edge meets right "
        "edge (kind `panorama` only).",
    )
    output: Output = Field(default_factory=lambda: Output(), description="Result image encoding.")
    priority: int = Field(
        default=DEFAULT_PRIORITY,
        ge=0,
        le=MAX_PRIORITY,
        strict=True,
        description=f"0 (lowest) .. {MAX_PRIORITY} (highest); higher-priority jobs for the "
        "same model start first.",
    )
    webhook: Webhook | None = Field(default=None, description="Called with the final job object.")
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Up to 4 KiB (compact JSON) of the client's own data, stored and echoed "
        "back, never interpreted.",
    )
