"""Named constants of the render engine, with their units (see docs/method.md)."""

from __future__ import annotations

LCM_GRID_STEPS = 50
"""StreamMultiDiffusion picks its steps from a 50-step LCM grid (timesteps 999, 979, ..., 19)."""

SMD_T_INDEX_LIST = (0, 4, 12, 25, 37)
"""Indices into that grid for the default 5-step schedule: timesteps 999, 919, 759, 499, 259."""

SMD_DEFAULT_STEPS = len(SMD_T_INDEX_LIST)
"""A job asking for this many LCM steps gets the table above; any other count gets LCM spacing."""

COVER_ALPHA = 0.3
"""Factor a mask is multiplied by where a later (higher) region's mask is > 0 (layer order)."""

BOOTSTRAP_MIX_STEPS = 1.0
"""Steps (fractional) during which the bootstrap background is pure white, then the background."""

WHITE_BACKGROUND_PROMPT = "simple white background image"
"""Prompt standing for the plain white background when a job gives none (as the reference)."""

LATENT_SCALE = 8
"""Pixels per latent pixel for the SD1.5 and SDXL VAEs."""

LATENT_CHANNELS = 4
"""Channels of the SD1.5 / SDXL latent."""

MIN_BLUR_SIGMA = 1e-3
"""Gaussian blur sigma (pixels) below which a mask is left unblurred."""

DEFAULT_CPU_VIEW_BATCH = 8
"""Region-view pairs per UNet call on the CPU (REGIONFARM_VIEW_BATCH overrides)."""

MAX_VIEW_BATCH = 64
"""Most region-view pairs per UNet call on a GPU, whatever the free memory."""

BYTES_PER_LATENT_PIXEL = 6 * 1024 * 1024 // (64 * 64)
"""GPU memory one region-view pair needs per latent pixel in a UNet call (fp16 SD1.5 with
guidance, measured ~6 MiB per 64x64 view), used to size batches from free memory."""

DECODE_TILE = 64
"""Latent pixels per side of one VAE decode tile (512 image pixels)."""

DECODE_TILE_OVERLAP = 16
"""Latent pixels two neighbouring decode tiles share; blended with ramps, so no seam shows."""

DECODE_TILED_ABOVE = 96 * 96
"""Latent area above which a canvas is decoded in tiles (the VAE's memory grows with area)."""

GUIDANCE_RESCALE = {"sd15": 0.0, "sdxl": 0.7}
"""Share of the guided prediction rescaled to the conditional prediction's spread, by family,
when guidance > 1 (SDXL pipelines use 0.7; SD1.5's reference does not rescale)."""
