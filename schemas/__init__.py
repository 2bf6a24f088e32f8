"""regionfarm's shared definitions: the job spec, its validation, settings, models and names."""

from __future__ import annotations

from schemas.context import ValidationContext
from schemas.defaults import (
    DEFAULT_MODEL,
    DEFAULT_PRIORITY,
    LCM_MAX_STEPS,
    MAX_MASK_STD,
    MAX_METADATA_BYTES,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_REGIONS,
    MAX_REQUEST_BYTES,
    MULTIDIFFUSION_MAX_STEPS,
    SEED_MAX,
)
from schemas.errors import SpecError, details_from_validation_error
from schemas.images import (
    decode_image,
    decode_image_bytes,
    decode_mask,
    encode_png_data_uri,
    image_size,
    mask_array,
    sniff_format,
)
from schemas.models_file import ModelEntry, ModelsFileError, load_models
from schemas.names import QUEUE_PREFIX, TASK_RENDER, queue_for_model
from schemas.normalize import normalize_spec, palette_to_regions
from schemas.settings import Settings
from schemas.spec import (
    KINDS,
    METHOD_MAX_STEPS,
    METHODS,
    Background,
    JobSpec,
    Output,
    Palette,
    PaletteEntry,
    Region,
    Tile,
    Webhook,
)
from schemas.validate import check_spec, parse_spec
from schemas.webhooks import webhook_url_problem

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRIORITY",
    "KINDS",
    "LCM_MAX_STEPS",
    "MAX_MASK_STD",
    "MAX_METADATA_BYTES",
    "MAX_PIXELS",
    "MAX_PROMPT_CHARS",
    "MAX_REGIONS",
    "MAX_REQUEST_BYTES",
    "METHODS",
    "METHOD_MAX_STEPS",
    "MULTIDIFFUSION_MAX_STEPS",
    "QUEUE_PREFIX",
    "SEED_MAX",
    "TASK_RENDER",
    "Background",
    "JobSpec",
    "ModelEntry",
    "ModelsFileError",
    "Output",
    "Palette",
    "PaletteEntry",
    "Region",
    "Settings",
    "SpecError",
    "Tile",
    "ValidationContext",
    "Webhook",
    "check_spec",
    "decode_image",
    "decode_image_bytes",
    "decode_mask",
    "details_from_validation_error",
    "encode_png_data_uri",
    "image_size",
    "load_models",
    "mask_array",
    "normalize_spec",
    "palette_to_regions",
    "parse_spec",
    "queue_for_model",
    "sniff_format",
    "webhook_url_problem",
]
