"""Field types shared by the job-spec models: literals, prompts, image references, strengths."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field

from schemas.defaults import (
    LCM_MAX_STEPS,
    MAX_MASK_STD,
    MAX_PROMPT_CHARS,
    MULTIDIFFUSION_MAX_STEPS,
)
from schemas.formats import OutputFormat

__all__ = [
    "COLOR_PATTERN",
    "KINDS",
    "MASK_MODES",
    "METHODS",
    "METHOD_MAX_STEPS",
    "MODEL_NAME_PATTERN",
    "ColorKey",
    "ImageRef",
    "Kind",
    "MaskMode",
    "MaskStd",
    "MaskStrength",
    "Method",
    "NegativePrompt",
    "OutputFormat",
    "Prompt",
    "PromptStrength",
    "Wrap",
]

Kind = Literal["regions", "panorama", "image"]
MaskMode = Literal["discrete", "semi-continuous", "continuous"]
Wrap = Literal["none", "horizontal"]
# `multidiffusion` is the original MultiDiffusion baseline (DDIM), rendered by
# worker/render/baseline.py; its step limit is in METHOD_MAX_STEPS below.
Method = Literal["streammultidiffusion", "multidiffusion"]

KINDS: tuple[str, ...] = get_args(Kind)
MASK_MODES: tuple[str, ...] = get_args(MaskMode)
METHODS: tuple[str, ...] = get_args(Method)
METHOD_MAX_STEPS: dict[str, int] = {
    "streammultidiffusion": LCM_MAX_STEPS,
    "multidiffusion": MULTIDIFFUSION_MAX_STEPS,
}
"""The most denoising steps each method takes (LCM schedules stop at 50)."""

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""Model names become queue names (``render.<name>``): letters, digits, ``.``, ``_``, ``-``."""

COLOR_PATTERN = re.compile(r"^#[0-9a-fA-F]{6}$")
"""A palette color: ``#rrggbb``, six hex digits in any case."""


def _color_key(value: str) -> str:
    if not COLOR_PATTERN.match(value):
        raise ValueError(f"palette color {value!r} must be written #rrggbb (six hex digits)")
    return value.lower()


ColorKey = Annotated[str, AfterValidator(_color_key)]
"""A palette color key: ``#rrggbb`` in any case, normalized to lower case."""

Prompt = Annotated[
    str,
    Field(
        max_length=MAX_PROMPT_CHARS,
        description=f"What to draw, in words; at most {MAX_PROMPT_CHARS} characters "
        "(the text encoder truncates to its own token limit).",
    ),
]
NegativePrompt = Annotated[
    str,
    Field(
        max_length=MAX_PROMPT_CHARS,
        description=f"What to keep out, in words; at most {MAX_PROMPT_CHARS} characters.",
    ),
]
ImageRef = Annotated[
    str,
    Field(
        description="An image as a data URI (`data:image/png;base64,...` or "
        "`data:image/webp;base64,...`) or an uploaded asset (`asset:<id>`).",
        examples=["data:image/png;base64,iVBORw0KGgo...", "asset:3f2a9c"],
    ),
]
MaskStrength = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        strict=True,
        description="How strongly the region claims its pixels, 0..1 (1: fully).",
    ),
]
MaskStd = Annotated[
    float,
    Field(
        ge=0.0,
        le=MAX_MASK_STD,
        strict=True,
        description=f"Standard deviation in pixels (0..{MAX_MASK_STD}) of a Gaussian blur that "
        "softens the mask's edge; 0 keeps it hard.",
    ),
]
PromptStrength = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        strict=True,
        description="How much of the region's prompt is used, 0..1; lower values blend it "
        "toward the background prompt.",
    ),
]
