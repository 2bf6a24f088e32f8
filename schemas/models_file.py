"""The models file: which models a farm can serve, what each one is, and its defaults."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.defaults import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_NATIVE_SIZE,
    DEFAULT_STEPS,
    LCM_MAX_STEPS,
    MAX_GUIDANCE_SCALE,
    MAX_MODEL_NAME_CHARS,
    MIN_SIDE,
    SIDE_MULTIPLE,
)
from schemas.errors import details_from_validation_error, format_loc
from schemas.fields import MODEL_NAME_PATTERN

__all__ = ["PACKAGED_MODELS_FILE", "ModelEntry", "ModelsFileError", "load_models"]

PACKAGED_MODELS_FILE = "models.toml"
"""Name of the models file shipped inside the `schemas` package."""


class ModelsFileError(ValueError):
    """The models file cannot be read or an entry in it is invalid; the message names both."""


class ModelEntry(BaseModel):
    """One model the farm can serve: where its weights come from and its sampling defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    name: str = Field(
        min_length=1,
        max_length=MAX_MODEL_NAME_CHARS,
        pattern=MODEL_NAME_PATTERN,
        description="The name specs use (`model`), and the queue suffix (`render.<name>`).",
    )
    source: str = Field(
        min_length=1,
        description="Where the weights are: a Hugging Face hub id, a local diffusers "
        "directory, a single `.safetensors` file, or `builtin:<name>` for the test models.",
    )
    family: Literal["sd15", "sdxl"] = Field(default="sd15", description="Architecture family.")
    lora: str | None = Field(
        default=None,
        description="A LoRA fused at load time (hub id, `<owner>/<repo>/<file>.safetensors`, "
        "local file or `builtin:<name>`), e.g. the LCM-LoRA that makes a base model an LCM, or "
        "SDXL-Lightning's LoRA.",
    )
    lora_scale: float = Field(default=1.0, description="Weight of the LoRA when it is fused.")
    unet: str | None = Field(
        default=None,
        description="A UNet that replaces the source's (e.g. SDXL-Lightning's distilled UNet): "
        "a `.safetensors` file of diffusers-layout UNet weights, local or as "
        "`<owner>/<repo>/<file>.safetensors` on the hub.",
    )
    scheduler: Literal["lcm", "euler"] = Field(
        default="lcm",
        description="The sampler: `lcm` (LCM models: mixes the predicted clean latents, then "
        "re-noises) or `euler` (Euler with trailing timesteps, for SDXL-Lightning: mixes the "
        "Euler next samples).",
    )
    steps: int = Field(
        default=DEFAULT_STEPS,
        ge=1,
        le=LCM_MAX_STEPS,
        description="Denoising steps when a spec names none.",
    )
    guidance_scale: float = Field(
        default=DEFAULT_GUIDANCE_SCALE,
        ge=0.0,
        le=MAX_GUIDANCE_SCALE,
        description="Classifier-free guidance scale when a spec names none.",
    )
    native_size: int = Field(
        default=DEFAULT_NATIVE_SIZE,
        ge=MIN_SIDE,
        multiple_of=SIDE_MULTIPLE,
        description="Pixels: the side of the square the model was trained on; the canvas of "
        "kind `image` when a spec gives no size, and the default tile size.",
    )
    dtype: Literal["auto", "float16", "float32", "bfloat16"] = Field(
        default="auto",
        description="Weight dtype; `auto`: float16 on a GPU, float32 on a CPU.",
    )
    tiny_vae: str | None = Field(
        default=None,
        description="A tiny autoencoder (hub id or directory) for fast previews/decode.",
    )
    compile: bool = Field(
        default=False,
        description="Compile the UNet with torch.compile once at worker start, warmed up at the "
        "view-batch shape that every call then has (`regionfarm worker --compile` does the same "
        "for any model); StreamMultiDiffusion jobs of any canvas at least the native size then "
        "never recompile. `regionfarm render` stays eager.",
    )
    description: str = Field(default="", description="One line for `regionfarm models`.")
    prompts: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Prompts the model draws well (a trained toy model knows only its world's "
        "words): the web page starts its background (the first) and its brushes (the rest, in "
        "order) from them when this model is chosen.",
    )


def _read_toml(path: Path | None) -> tuple[str, dict[str, Any]]:
    if path is None:
        resource = resources.files("schemas").joinpath(PACKAGED_MODELS_FILE)
        where = f"packaged schemas/{PACKAGED_MODELS_FILE}"
        text = resource.read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelsFileError(f"models file {where}: cannot read it: {exc}") from None
    try:
        return where, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"models file {where}: not valid TOML: {exc}") from None


def load_models(path: Path | None = None) -> dict[str, ModelEntry]:
    """Read a models file (TOML: ``[models.<name>] source = ...``), in the file's order.

    `path` None reads the file packaged with `schemas`. Every problem raises
    `ModelsFileError` naming the file and the entry.
    """
    where, data = _read_toml(path)
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise ModelsFileError(
            f"models file {where}: unknown top-level key(s) {', '.join(unknown)}: "
            "entries go in [models.<name>] tables"
        )
    tables = data.get("models")
    if not isinstance(tables, dict) or not tables:
        raise ModelsFileError(f"models file {where}: no [models.<name>] entries")
    entries: dict[str, ModelEntry] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ModelsFileError(f"models file {where}: [models.{name}] must be a table")
        if "name" in table and table["name"] != name:
            raise ModelsFileError(
                f"models file {where}: [models.{name}]: name {table['name']!r} differs from "
                "the table's name"
            )
        data = {**table, "name": name}
        try:
            entries[name] = ModelEntry.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{format_loc(d['loc']) or 'entry'}: {d['msg']}"
                for d in details_from_validation_error(exc, data)
            )
            raise ModelsFileError(f"models file {where}: [models.{name}]: {problems}") from None
    return entries
