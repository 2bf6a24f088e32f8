"""Named limits and defaults of the job spec and the farm, each with its unit."""

from __future__ import annotations

from schemas.names import TASK_RENDER, queue_for_model

__all__ = [
    "DEFAULT_BOOTSTRAP_LEAK_SENSITIVITY",
    "DEFAULT_BOOTSTRAP_STEPS",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_JOB_TIME_LIMIT",
    "DEFAULT_MODEL",
    "DEFAULT_NATIVE_SIZE",
    "DEFAULT_OUTPUT_QUALITY",
    "DEFAULT_PRIORITY",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_STEPS",
    "LCM_MAX_STEPS",
    "MAX_BOOTSTRAP_STEPS",
    "MAX_GUIDANCE_SCALE",
    "MAX_MASK_STD",
    "MAX_METADATA_BYTES",
    "MAX_MODEL_NAME_CHARS",
    "MAX_PIXELS",
    "MAX_PRIORITY",
    "MAX_PROMPT_CHARS",
    "MAX_REGIONS",
    "MAX_REQUEST_BYTES",
    "MAX_WEBHOOK_URL_CHARS",
    "MIN_SIDE",
    "MULTIDIFFUSION_MAX_STEPS",
    "SEED_MAX",
    "SIDE_MULTIPLE",
    "TASK_RENDER",
    "queue_for_model",
]

# --- canvas and request size -------------------------------------------------------------

MAX_PIXELS = 8192 * 1024
"""Pixels (width x height) allowed per canvas and per decoded input image: 8,388,608."""

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Bytes allowed in one request body, inline images included: 32 MiB."""

MIN_SIDE = 64
"""Pixels: the smallest width or height of a canvas (one 8x8 latent)."""

SIDE_MULTIPLE = 8
"""Pixels: width, height and tile sizes are multiples of this (the VAE's downscale factor)."""

DEFAULT_NATIVE_SIZE = 512
"""Pixels: the side of a model's native square canvas when its models-file entry names none."""

# --- regions and prompts -----------------------------------------------------------------

MAX_REGIONS = 64
"""Regions (or palette colors) per job; the farm's `max_regions` setting may lower it."""

MAX_PROMPT_CHARS = 2000
"""Characters per prompt or negative prompt (the text encoder truncates to its own tokens)."""

MAX_MASK_STD = 64
"""Pixels: the largest standard deviation of the Gaussian blur applied to a region mask."""

# --- sampling ----------------------------------------------------------------------------

SEED_MAX = 2**63 - 1
"""The largest seed (seeds are 0 .. 2^63-1, so they fit a signed 64-bit integer)."""

LCM_MAX_STEPS = 50
"""Denoising steps: the most an LCM model (method `streammultidiffusion`) takes."""

MULTIDIFFUSION_MAX_STEPS = 150
"""Denoising steps: the most the DDIM baseline (method `multidiffusion`) takes."""

DEFAULT_STEPS = 5
"""Denoising steps when neither the spec nor the model's entry names any (LCM)."""

DEFAULT_GUIDANCE_SCALE = 1.0
"""Classifier-free guidance scale when neither the spec nor the model's entry names one."""

MAX_GUIDANCE_SCALE = 30.0
"""The largest classifier-free guidance scale a spec may ask for."""

MAX_BOOTSTRAP_STEPS = 10
"""Steps: the most denoising steps that StreamMultiDiffusion's bootstrapping may cover."""

DEFAULT_BOOTSTRAP_STEPS = 1
"""Steps of StreamMultiDiffusion bootstrapping (mask-centering) by default."""

DEFAULT_BOOTSTRAP_LEAK_SENSITIVITY = 0.2
"""Fraction 0..1: how much of a region may leak out of its mask during bootstrapping."""

# --- queueing, output and bookkeeping ----------------------------------------------------

DEFAULT_PRIORITY = 5
"""Job priority 0 (lowest) .. 9 (highest) when a spec names none."""

MAX_PRIORITY = 9
"""The highest job priority."""

DEFAULT_MODEL = "sd15-lcm"
"""Name (in the models file) of the model used when a spec names none."""

MAX_MODEL_NAME_CHARS = 64
"""Characters in a model name (it becomes part of a queue name)."""

DEFAULT_OUTPUT_QUALITY = 95
"""Encoder quality 1..100 for the lossy output formats (webp, jpeg)."""

MAX_METADATA_BYTES = 4096
"""Bytes of a spec's `metadata`, serialized as compact UTF-8 JSON: 4 KiB."""

MAX_WEBHOOK_URL_CHARS = 2048
"""Characters in a webhook URL."""

DEFAULT_RETENTION_DAYS = 7
"""Days that job records and results are kept."""

DEFAULT_JOB_TIME_LIMIT = 3600.0
"""Seconds one render may take before it fails with `timeout`."""

MAX_QUEUED_JOBS = 1000
"""Most jobs one tenant may have queued (not yet started) at once; more answer 429."""

IDEMPOTENCY_TTL = 24 * 3600
"""Seconds an Idempotency-Key and its first answer are remembered."""

ASSET_TTL = 24 * 3600
"""Seconds an uploaded asset is kept after its last use."""

LEASE_SECONDS = 30.0
"""Seconds a worker's lease on a running job lasts unless renewed (every third of it); a job
whose lease ran out is re-queued by the reconciler."""

MAX_ATTEMPTS = 3
"""Starts of one job before it fails with `worker_lost` (its worker died every time)."""

STORAGE_RETRY_SECONDS = 120.0
"""Seconds a worker keeps retrying an upload to unreachable storage before the job fails with
`storage_unavailable`."""

# --- the MultiDiffusion baseline (method `multidiffusion`, see docs/method.md) -----------

MULTIDIFFUSION_DEFAULT_STEPS = 50
"""DDIM steps of the MultiDiffusion baseline when the spec names none (the original's 50)."""

MULTIDIFFUSION_DEFAULT_GUIDANCE_SCALE = 7.5
"""Classifier-free guidance scale of the baseline when the spec names none (the original's)."""

MULTIDIFFUSION_TILE_SIZE = 512
"""Pixels: the baseline's window when `tile.size` is null (64 latent, as the original's)."""

MULTIDIFFUSION_TILE_STRIDE = 64
"""Pixels: the baseline's stride when `tile.stride` is null (8 latent; at most the window)."""

MULTIDIFFUSION_BOOTSTRAP_FRACTION = 0.4
"""Fraction of the steps the baseline bootstraps when the spec leaves `bootstrap_steps` out:
the original's 20 of 50, capped at MAX_BOOTSTRAP_STEPS (so 10 of the default 50)."""
