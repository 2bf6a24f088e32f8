"""A normalized job spec turned into sampler inputs, rendered, and blended into the final image."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from schemas import JobSpec
from schemas.images import decode_image, decode_mask

from . import vae as vae_ops
from .conditioning import Embeds, encode_prompts, pull_toward
from .defaults import GUIDANCE_RESCALE, LATENT_SCALE, WHITE_BACKGROUND_PROMPT
from .errors import InvalidJob
from .loading import LoadedModel
from .masks import background_masks, prepare_masks
from .sampler import (
    CancelCheck,
    LatentCallback,
    SamplerInputs,
    StepCallback,
    ViewBatch,
    auto_view_batch,
    sample,
)
from .schedule import build_schedule
from .tiles import tile_views


@dataclass
class JobInputs:
    """The decoded images of a job: region masks (bool, H x W) and the background picture."""

    masks: list[np.ndarray]
    background: Image.Image | None
    warnings: list[str] = field(default_factory=list)


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


def _pixels(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def _to_image(pixels: torch.Tensor) -> Image.Image:
    arr = (pixels[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8), mode="RGB")


def render_job(
    model: LoadedModel,
    spec: JobSpec,
    inputs: JobInputs,
    *,
    on_step: StepCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_latent: LatentCallback | None = None,
    view_batch: int | None = None,
) -> RenderResult:
    """Render a normalized spec (seed, size, steps and guidance filled in) with a loaded model."""
    if spec.method == "multidiffusion":  # the original MultiDiffusion baseline (DDIM)
        from .baseline import render_baseline  # deferred: baseline.py imports this module

        return render_baseline(
            model, spec, inputs, on_step=on_step, should_cancel=should_cancel, on_latent=on_latent
        )
    for name in ("width", "height", "seed", "steps", "guidance_scale"):
        if getattr(spec, name) is None:
            raise InvalidJob(f"{name} is not set: normalize the spec before rendering")
    t_start = time.perf_counter()
    pipe, device = model.pipe, model.device
    H, W = spec.height, spec.width
    h, w = H // LATENT_SCALE, W // LATENT_SCALE
    schedule = build_schedule(pipe.scheduler, spec.steps)
    guidance = float(spec.guidance_scale)

    # Regions as the sampler sees them (the one-region case for image and panorama kinds).
    if spec.kind in ("image", "panorama"):
        prompts = [spec.background.prompt or ""]
        negatives = [spec.background.negative_prompt or ""]
        fg = torch.ones(1, 1, H, W)
        strengths, stds, prompt_strengths = [1.0], [0.0], [1.0]
        bootstrap_steps = 0
    else:
        prompts = [r.prompt for r in spec.regions]
        negatives = [r.negative_prompt for r in spec.regions]
        fg = torch.zeros(0, 1, H, W)
        if inputs.masks:
            fg = torch.stack([torch.from_numpy(m.astype(np.float32))[None] for m in inputs.masks])
        strengths = [r.mask_strength for r in spec.regions]
        stds = [r.mask_std for r in spec.regions]
        prompt_strengths = [r.prompt_strength for r in spec.regions]
        bootstrap_steps = spec.bootstrap_steps
    prepared = prepare_masks(
        fg,
        strengths=strengths,
        stds=stds,
        levels=schedule.b,
        mode=spec.mask_mode,
        latent_size=(h, w),
    )
    steps_masks = prepared.steps
    bg_steps = background_masks(steps_masks)  # (T, 1, h, w)

    # The three background cases of the algorithm doc.
    bg = spec.background
    bg_prompt, bg_negative = None, ""
    fixed_pixels = None  # the fixed background picture, (1, 3, H, W) in [0, 1]
    if spec.kind == "regions" and inputs.background is not None:
        fixed_pixels = _pixels(inputs.background)
        bg_prompt, bg_negative = bg.prompt or "", bg.negative_prompt or ""
    elif spec.kind == "regions" and bg is not None and bg.prompt:
        bg_prompt, bg_negative = bg.prompt, bg.negative_prompt or ""
    elif spec.kind == "regions" and bool((bg_steps > 0).any()):
        fixed_pixels = torch.ones(1, 3, H, W)
        bg_prompt = WHITE_BACKGROUND_PROMPT
    background_region = fixed_pixels is None and bg_prompt is not None

    t_text = time.perf_counter()
    need_uncond = guidance > 1.0
    all_prompts = prompts + ([bg_prompt] if bg_prompt is not None else [])
    all_negatives = negatives + ([bg_negative] if bg_prompt is not None else [])
    cond = encode_prompts(pipe, all_prompts)
    uncond = encode_prompts(pipe, all_negatives, negative=True) if need_uncond else None
    if bg_prompt is not None:
        bg_cond, cond = cond[-1:], cond[:-1]
        cond = pull_toward(cond, bg_cond, prompt_strengths)
        if uncond is not None:
            bg_uncond, uncond = uncond[-1:], uncond[:-1]
            uncond = pull_toward(uncond, bg_uncond, prompt_strengths)
        if background_region:  # the background prompt is a region of its own, sampled first
            cond = Embeds.cat([bg_cond, cond])
            uncond = Embeds.cat([bg_uncond, uncond]) if uncond is not None else None
            steps_masks = torch.cat([bg_steps[None], steps_masks])
    text_seconds = time.perf_counter() - t_text

    vae = pipe.vae
    background_latent = None
    if fixed_pixels is not None:
        background_latent = vae_ops.encode(vae, fixed_pixels).float().to(device)
    if "white" not in model.cache:  # one encode per model: SDXL's is a 1024x1024 fp32 pass
        model.cache["white"] = vae_ops.white_latent(vae, model.native_size, (1, 1))
    white = model.cache["white"].expand(-1, -1, h, w).to(device)

    window = _window(spec, model)
    wrap = spec.wrap == "horizontal"
    views, view_weights = tile_views(h, w, window[0], window[1], wrap=wrap)
    generator = torch.Generator("cpu").manual_seed(int(spec.seed))
    sampler_inputs = SamplerInputs(
        cond=cond.to(device, model.dtype),
        uncond=uncond.to(device, model.dtype) if uncond is not None else None,
        masks=steps_masks.to(device),
        background=background_latent,
        white=white,
        views=views,
        view_weights=[vw.to(device) for vw in view_weights],
        schedule=schedule,
        guidance_scale=guidance,
        bootstrap_steps=bootstrap_steps,
        leak_sensitivity=float(spec.bootstrap_leak_sensitivity),
        generator=generator,
        canvas=(H, W),
        guidance_rescale=GUIDANCE_RESCALE[model.family],
    )
    channels = pipe.unet.config.in_channels
    calls = _CallCounter(pipe.unet)
    t_denoise = time.perf_counter()
    latent = sample(
        calls,
        sampler_inputs,
        (1, channels, h, w),
        on_step=on_step,
        should_cancel=should_cancel,
        on_latent=on_latent,
        batch=ViewBatch(auto_view_batch(device, window[0], view_batch)),
    )
    denoise_seconds = time.perf_counter() - t_denoise

    t_decode = time.perf_counter()
    decoder = model.tiny_vae or vae
    if wrap:
        pixels = vae_ops.decode_wrapped(decoder, latent, vae, decoder=vae_ops.decode_any).cpu()
    else:
        pixels = vae_ops.decode_any(decoder, latent, scaling_vae=vae).cpu()
    if fixed_pixels is not None:
        # Untouched pixels keep the background exactly; the seam is as soft as the mask blur.
        alpha = prepared.blurred.sum(dim=0, keepdim=True).clamp(0, 1)
        pixels = alpha * pixels + (1 - alpha) * fixed_pixels
    image = _to_image(pixels)
    seconds = (text_seconds, denoise_seconds, time.perf_counter() - t_decode)
    return _render_result(spec, image, t_start, seconds, list(inputs.warnings), calls)


def _render_result(spec, image, t_start: float, seconds, warnings, calls) -> RenderResult:
    """The result with its timings: `seconds` are the text, denoise and decode phases."""
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


def _window(spec: JobSpec, model: LoadedModel) -> tuple[tuple[int, int], tuple[int, int]]:
    """Latent window and stride: the spec's tile, else the model's native size and half of it."""
    size = (spec.tile.size or model.native_size) // LATENT_SCALE
    stride = (spec.tile.stride or (size * LATENT_SCALE) // 2) // LATENT_SCALE
    return (size, size), (max(1, stride), max(1, stride))


class _CallCounter:
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
