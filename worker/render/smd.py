"""StreamMultiDiffusion (method `streammultidiffusion`, the default), in four steps: plan the
render from the spec, encode its prompts and fixed latents, denoise with the sampler, decode."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from schemas import JobSpec

from . import vae as vae_ops
from .background import Background, background_case
from .conditioning import Embeds, encode_prompts, pull_toward
from .defaults import GUIDANCE_RESCALE, LATENT_SCALE
from .inputs import JobInputs, require_normalized
from .loading import LoadedModel
from .masks import background_masks, prepare_masks
from .result import RenderResult, UNetCounter, finish_image, render_result
from .sampler import (
    CancelCheck,
    LatentCallback,
    SamplerInputs,
    StepCallback,
    ViewBatch,
    auto_view_batch,
    sample,
)
from .schedule import Schedule, build_schedule
from .tiles import tile_views


def render_streammultidiffusion(
    model: LoadedModel,
    spec: JobSpec,
    inputs: JobInputs,
    *,
    on_step: StepCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_latent: LatentCallback | None = None,
    view_batch: int | None = None,
    average_noisy_latents: bool = False,
) -> RenderResult:
    """Render a normalized spec (seed, size, steps and guidance filled in) with
    StreamMultiDiffusion; the parameters are those of `render_job`."""
    require_normalized(spec, ("width", "height", "seed", "steps", "guidance_scale"))
    t_start = time.perf_counter()
    plan = _plan(model, spec, inputs)

    t_text = time.perf_counter()
    cond, uncond = _encode_prompts(model, plan)
    text_seconds = time.perf_counter() - t_text
    sampler_inputs = _sampler_inputs(model, spec, plan, cond, uncond)

    calls = UNetCounter(model.denoising_unet)
    t_denoise = time.perf_counter()
    latent = sample(
        calls,
        sampler_inputs,
        (1, model.pipe.unet.config.in_channels, *plan.latent_size),
        on_step=on_step,
        should_cancel=should_cancel,
        on_latent=on_latent,
        batch=ViewBatch(auto_view_batch(model.device, plan.window[0], view_batch)),
        average_noisy_latents=average_noisy_latents,
    )
    denoise_seconds = time.perf_counter() - t_denoise

    t_decode = time.perf_counter()
    image = _decode(model, plan, latent)
    seconds = (text_seconds, denoise_seconds, time.perf_counter() - t_decode)
    return render_result(spec, image, t_start, seconds, list(inputs.warnings), calls)


def smd_window(spec: JobSpec, model: LoadedModel) -> tuple[tuple[int, int], tuple[int, int]]:
    """Latent window and stride: the spec's tile, else the model's native size and half of it."""
    size = (spec.tile.size or model.native_size) // LATENT_SCALE
    stride = (spec.tile.stride or (size * LATENT_SCALE) // 2) // LATENT_SCALE
    return (size, size), (max(1, stride), max(1, stride))


# --- plan ----------------------------------------------------------------------------------


@dataclass
class _Regions:
    """The regions as the sampler sees them: prompts, (P, 1, H, W) pixel masks and their
    controls. Kinds `image` and `panorama` are one region covering the canvas."""

    prompts: list[str]
    negatives: list[str]
    masks: torch.Tensor
    strengths: list[float]
    stds: list[float]
    prompt_strengths: list[float]
    bootstrap_steps: int


@dataclass
class _Plan:
    """What a render does, decided before any model call. `masks` (P, T, 1, h, w) has a row
    per sampled region, the background first when it is a region of its own; `blurred`
    (regions only) makes the final blend with a fixed background."""

    regions: _Regions
    background: Background
    masks: torch.Tensor
    blurred: torch.Tensor
    schedule: Schedule
    guidance: float
    canvas: tuple[int, int]
    latent_size: tuple[int, int]
    window: tuple[tuple[int, int], tuple[int, int]]
    wrap: bool


def _plan(model: LoadedModel, spec: JobSpec, inputs: JobInputs) -> _Plan:
    """The schedule, the regions' per-step masks and the background case of a spec."""
    H, W = spec.height, spec.width
    h, w = H // LATENT_SCALE, W // LATENT_SCALE
    schedule = build_schedule(model.pipe.scheduler, spec.steps)
    regions = _regions(spec, inputs)
    prepared = prepare_masks(
        regions.masks,
        strengths=regions.strengths,
        stds=regions.stds,
        levels=schedule.b,
        mode=spec.mask_mode,
        latent_size=(h, w),
    )
    masks = prepared.steps
    unclaimed = background_masks(masks)  # (T, 1, h, w)
    background = background_case(spec, inputs, unclaimed=bool((unclaimed > 0).any()))
    if background.is_region:  # sampled first, with what no region claims
        masks = torch.cat([unclaimed[None], masks])
    return _Plan(
        regions=regions,
        background=background,
        masks=masks,
        blurred=prepared.blurred,
        schedule=schedule,
        guidance=float(spec.guidance_scale),
        canvas=(H, W),
        latent_size=(h, w),
        window=smd_window(spec, model),
        wrap=spec.wrap == "horizontal",
    )


def _regions(spec: JobSpec, inputs: JobInputs) -> _Regions:
    if spec.kind in ("image", "panorama"):
        return _Regions(
            prompts=[spec.background.prompt or ""],
            negatives=[spec.background.negative_prompt or ""],
            masks=torch.ones(1, 1, spec.height, spec.width),
            strengths=[1.0],
            stds=[0.0],
            prompt_strengths=[1.0],
            bootstrap_steps=0,
        )
    masks = torch.zeros(0, 1, spec.height, spec.width)
    if inputs.masks:
        masks = torch.stack([torch.from_numpy(m.astype(np.float32))[None] for m in inputs.masks])
    return _Regions(
        prompts=[r.prompt for r in spec.regions],
        negatives=[r.negative_prompt for r in spec.regions],
        masks=masks,
        strengths=[r.mask_strength for r in spec.regions],
        stds=[r.mask_std for r in spec.regions],
        prompt_strengths=[r.prompt_strength for r in spec.regions],
        bootstrap_steps=spec.bootstrap_steps,
    )


# --- encode --------------------------------------------------------------------------------


def _encode_prompts(model: LoadedModel, plan: _Plan) -> tuple[Embeds, Embeds | None]:
    """The conditional and (with guidance above 1) negative embeddings, one per row of
    `plan.masks`. A background prompt pulls the regions' embeddings toward its own (prompt
    strength) and, when the background is a region, comes first."""
    pipe, background = model.pipe, plan.background
    has_bg = background.prompt is not None
    prompts = plan.regions.prompts + ([background.prompt] if has_bg else [])
    negatives = plan.regions.negatives + ([background.negative] if has_bg else [])
    cond = encode_prompts(pipe, prompts)
    uncond = encode_prompts(pipe, negatives, negative=True) if plan.guidance > 1.0 else None
    if not has_bg:
        return cond, uncond
    strengths = plan.regions.prompt_strengths
    bg_cond, cond = cond[-1:], cond[:-1]
    cond = pull_toward(cond, bg_cond, strengths)
    if uncond is not None:
        bg_uncond, uncond = uncond[-1:], uncond[:-1]
        uncond = pull_toward(uncond, bg_uncond, strengths)
    if background.is_region:
        cond = Embeds.cat([bg_cond, cond])
        uncond = Embeds.cat([bg_uncond, uncond]) if uncond is not None else None
    return cond, uncond


def _sampler_inputs(
    model: LoadedModel, spec: JobSpec, plan: _Plan, cond: Embeds, uncond: Embeds | None
) -> SamplerInputs:
    """Everything the sampler takes, on the model's device: the embeddings, the masks, the
    fixed background's latent (encoded here), the white latent, the views and the schedule."""
    device, vae = model.device, model.pipe.vae
    h, w = plan.latent_size
    background_latent = None
    if plan.background.pixels is not None:
        background_latent = vae_ops.encode(vae, plan.background.pixels).float().to(device)
    if "white" not in model.cache:  # one encode per model: SDXL's is a 1024x1024 fp32 pass
        model.cache["white"] = vae_ops.white_latent(vae, model.native_size, (1, 1))
    white = model.cache["white"].expand(-1, -1, h, w).to(device)
    window, stride = plan.window
    views, view_weights = tile_views(h, w, window, stride, wrap=plan.wrap)
    return SamplerInputs(
        cond=cond.to(device, model.dtype),
        uncond=uncond.to(device, model.dtype) if uncond is not None else None,
        masks=plan.masks.to(device),
        background=background_latent,
        white=white,
        views=views,
        view_weights=[vw.to(device) for vw in view_weights],
        schedule=plan.schedule,
        guidance_scale=plan.guidance,
        bootstrap_steps=plan.regions.bootstrap_steps,
        leak_sensitivity=float(spec.bootstrap_leak_sensitivity),
        generator=torch.Generator("cpu").manual_seed(int(spec.seed)),
        canvas=plan.canvas,
        guidance_rescale=GUIDANCE_RESCALE[model.family],
    )


# --- decode --------------------------------------------------------------------------------


def _decode(model: LoadedModel, plan: _Plan, latent: torch.Tensor) -> Image.Image:
    """The final latent decoded (by the tiny VAE when the model has one; tiled, and with
    circular padding for a wrapped panorama) and blended with a fixed background."""
    vae = model.pipe.vae
    decoder = model.tiny_vae or vae
    if plan.wrap:
        pixels = vae_ops.decode_wrapped(decoder, latent, vae, decoder=vae_ops.decode_any).cpu()
    else:
        pixels = vae_ops.decode_any(decoder, latent, scaling_vae=vae).cpu()
    fixed, alpha = plan.background.pixels, None
    if fixed is not None:
        # Untouched pixels keep the background exactly; the seam is as soft as the mask blur.
        alpha = plan.blurred.sum(dim=0, keepdim=True).clamp(0, 1)
    return finish_image(pixels, fixed, alpha)
