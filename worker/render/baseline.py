"""The MultiDiffusion baseline (method `multidiffusion`): DDIM on every view, outputs averaged."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from schemas import JobSpec
from schemas.defaults import (
    MULTIDIFFUSION_DEFAULT_GUIDANCE_SCALE,
    MULTIDIFFUSION_DEFAULT_STEPS,
    MULTIDIFFUSION_TILE_SIZE,
    MULTIDIFFUSION_TILE_STRIDE,
)

from . import vae as vae_ops
from .background import background_case
from .conditioning import encode_prompts
from .defaults import LATENT_SCALE
from .errors import InvalidJob, RenderCanceled
from .inputs import JobInputs, require_normalized
from .loading import LoadedModel
from .result import RenderResult, UNetCounter, finish_image, render_result
from .sampler import CancelCheck, LatentCallback, StepCallback

__all__ = [
    "BaselineView",
    "baseline_views",
    "baseline_window",
    "diffusers_ddim_pipeline",
    "diffusers_panorama_pipeline",
    "render_baseline",
]

# Reproduces diffusers' StableDiffusionPanoramaPipeline (kind `panorama`/`image`, view batch 1,
# eta 0) and the original omerbt/MultiDiffusion region_based.py (kind `regions`): see
# docs/method.md, "The MultiDiffusion baseline". Where those are broken (uncovered edge columns,
# tall wrapped panoramas) it does what they meant, and says so where it does.


@dataclass(frozen=True, eq=False)
class BaselineView:
    """Rows [top:bottom] and columns [left:right] of the latent canvas; `columns` lists the
    columns when the view runs past the right edge and continues at the left one (wrap)."""

    top: int
    bottom: int
    left: int
    right: int
    columns: torch.Tensor | None = None

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The view's part of a (..., h, w) tensor."""
        rows = x[..., self.top : self.bottom, :]
        if self.columns is None:
            return rows[..., self.left : self.right]
        return rows.index_select(-1, self.columns.to(x.device))

    def add_into(self, target: torch.Tensor, values: torch.Tensor) -> None:
        """target[view] += values (one addition per element, as diffusers' slice updates)."""
        rows = target[..., self.top : self.bottom, :]
        if self.columns is None:
            rows[..., self.left : self.right] += values
        else:
            rows.index_add_(-1, self.columns.to(target.device), values)


def _spans(length: int, window: int, stride: int, circular: bool) -> list[tuple[int, int]]:
    """diffusers' `get_views` on one axis, in latent units."""
    if length <= window:
        # One window on an axis no longer than it. With circular padding diffusers still takes
        # a full window there, continuing at the left edge.
        return [(0, window if circular else length)]
    count = length // stride if circular else (length - window) // stride + 1
    spans = [(k * stride, k * stride + window) for k in range(count)]
    # diffusers (and the original) stop where the next view would pass the edge, so up to
    # stride - 1 trailing columns get no view and come out as zero latents; one more view,
    # flush with the edge, covers them. Canvases the stride fits exactly are unchanged.
    if spans[-1][1] < length:
        spans.append((length - window, length))
    return spans


def baseline_views(
    height: int, width: int, window: int, stride: int, wrap: bool = False
) -> list[BaselineView]:
    """The views over an (height, width) latent in diffusers' order (row by row); `wrap` makes
    the width circular as diffusers' `circular_padding` does."""
    views = []
    for top, bottom in _spans(height, window, stride, circular=False):
        for left, right in _spans(width, window, stride, circular=wrap):
            columns = None
            if right > width:
                # diffusers concatenates latents[..., left:] and latents[..., :right - width];
                # the second slice stops at the canvas' right edge, and so does this one.
                index = list(range(left, width)) + list(range(min(right - width, width)))
                columns = torch.tensor(index, dtype=torch.long)
            views.append(BaselineView(top, bottom, left, min(right, width), columns))
    return views


def baseline_window(spec: JobSpec) -> tuple[int, int]:
    """Latent window and stride: the spec's tile, else the original's 64 and 8 (512 / 64 px).
    A given size with a null stride keeps the baseline's 64 px stride (at most the size)."""
    size = spec.tile.size or MULTIDIFFUSION_TILE_SIZE
    stride = spec.tile.stride or min(MULTIDIFFUSION_TILE_STRIDE, size)
    if stride > size:
        raise InvalidJob(
            f"tile.stride ({stride}) must not exceed the window ({size}) of method "
            "'multidiffusion': columns between the views would get no view"
        )
    return size // LATENT_SCALE, stride // LATENT_SCALE


@dataclass
class _Prompts:
    """What the loop denoises: one prompt per row of `masks` (P, 1, h, w), the rows that are
    bootstrapped, and the fixed background (pixels and latent-size cover) when there is one."""

    prompts: list[str]
    negatives: list[str]
    masks: torch.Tensor
    bootstrapped: list[int]
    fixed_pixels: torch.Tensor | None = None
    cover: torch.Tensor | None = None  # (1, 1, h, w) where the regions own the latent
    pixel_alpha: torch.Tensor | None = None  # (1, 1, H, W) where they own the pixels


def _plan(spec: JobSpec, inputs: JobInputs, latent_size: tuple[int, int]) -> _Prompts:
    """The prompts and masks of a spec, with its background case (`background_case`)."""
    H, W = spec.height, spec.width
    if spec.kind in ("image", "panorama"):
        return _Prompts(
            prompts=[spec.background.prompt or ""],
            negatives=[spec.background.negative_prompt or ""],
            masks=torch.ones(1, 1, *latent_size),
            bootstrapped=[],
        )
    # The original's masks: binary (decode_mask thresholds at 0.5), nearest-resized to the
    # latent; the background owns what no region does, clip(1 - sum, 0, 1).
    pixel, fg = torch.zeros(0, 1, H, W), torch.zeros(0, 1, *latent_size)
    if inputs.masks:
        pixel = torch.stack([torch.from_numpy(m.astype("float32"))[None] for m in inputs.masks])
        fg = F.interpolate(pixel, size=latent_size, mode="nearest")
    bg_mask = (1 - fg.sum(dim=0, keepdim=True)).clamp(0, 1)
    prompts = [r.prompt for r in spec.regions]
    negatives = [r.negative_prompt for r in spec.regions]
    every = list(range(len(prompts)))
    # The baseline's prompts take no prompt-strength pull: a fixed background's prompt (its
    # own, or the white one when none is given) goes unused.
    background = background_case(spec, inputs, unclaimed=bool((bg_mask > 0).any()))
    if background.is_region:
        # The background prompt is row 0 and is not bootstrapped, as in the original.
        return _Prompts(
            prompts=[background.prompt] + prompts,
            negatives=[background.negative] + negatives,
            masks=torch.cat([bg_mask, fg]),
            bootstrapped=[k + 1 for k in every],
        )
    if background.pixels is None:
        return _Prompts(prompts=prompts, negatives=negatives, masks=fg, bootstrapped=every)
    return _Prompts(
        prompts=prompts,
        negatives=negatives,
        masks=fg,
        bootstrapped=every,
        fixed_pixels=background.pixels,
        cover=1 - bg_mask,
        pixel_alpha=pixel.sum(dim=0, keepdim=True).clamp(0, 1),
    )


def _ignored_controls(spec: JobSpec) -> list[str]:
    """A warning naming the StreamMultiDiffusion controls this spec set that the baseline
    (plain binary masks, as the original) does not use."""
    names = []
    for name, default in (("mask_strength", 1.0), ("mask_std", 0.0), ("prompt_strength", 1.0)):
        if any(getattr(r, name) != default for r in spec.regions):
            names.append(f"regions[].{name}")
    if spec.kind == "regions" and spec.mask_mode != "discrete":
        names.append("mask_mode")
    if not names:
        return []
    return [f"method 'multidiffusion' ignores {', '.join(names)} (StreamMultiDiffusion controls)"]


def _check_cancel(should_cancel: CancelCheck | None) -> None:
    if should_cancel is not None and should_cancel():
        raise RenderCanceled("the render was canceled")


def _prev_level(scheduler, t: torch.Tensor) -> float:
    """ᾱ of the timestep a DDIM step from t lands on (the scheduler's own rule)."""
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
    return float(alpha)


def _noised(clean: torch.Tensor, noise: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha**0.5 * clean + (1 - alpha) ** 0.5 * noise


@torch.no_grad()
def _color_latents(vae, count: int, generator: torch.Generator, native_size: int, device, dtype):
    """(count, C, 1, 1) latents of random constant-colour images, the original's bootstrapping
    backgrounds. A constant image's latent is constant away from the borders, so one
    native-size encode's centre value stands for any view size (the original encoded 512 px
    squares, one per colour, with a sampled posterior; the mode keeps a seed reproducible)."""
    colors = torch.rand(count, 3, generator=generator)
    latents = []
    for color in colors:
        image = color.view(1, 3, 1, 1).expand(1, 3, native_size, native_size)
        z = vae_ops.encode(vae, image)
        centre = native_size // LATENT_SCALE // 2
        latents.append(z[..., centre : centre + 1, centre : centre + 1])
    return torch.cat(latents).to(device, dtype)


@dataclass
class _Job:
    """What the baseline's steps share: sizes, DDIM settings, views, prompts and masks."""

    latent_size: tuple[int, int]
    steps: int
    guidance: float
    views: list[BaselineView]
    wrap: bool
    prompts: _Prompts
    scheduler: object  # the job's own DDIMScheduler, its timesteps set
    dtype: torch.dtype

    @property
    def do_cfg(self) -> bool:
        return self.guidance > 1.0  # diffusers' rule: guidance 1 or less is one conditional pass


@dataclass
class _Text:
    embeds: torch.Tensor | None  # (uncond then) cond rows of every prompt; None: no prompt
    timestep_cond: torch.Tensor | None  # guidance-distilled UNets only


@dataclass
class _Start:
    """The canvas before the first step, and what the loop mixes into it."""

    latents: torch.Tensor
    noise: torch.Tensor  # the initial noise, which re-noises the bootstrap backgrounds
    generator: torch.Generator  # the seed's, drawn on in the loop for bootstrap colours
    colors: torch.Tensor | None  # bootstrap colour latents (the first bootstrap_steps)
    boot_steps: int
    masks: torch.Tensor
    fixed: torch.Tensor | None  # the fixed background's latent
    cover: torch.Tensor | None  # where the regions own the latent


@torch.no_grad()
def render_baseline(
    model: LoadedModel,
    spec: JobSpec,
    inputs: JobInputs,
    *,
    on_step: StepCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_latent: LatentCallback | None = None,
) -> RenderResult:
    """Render a normalized spec with the original MultiDiffusion: every prompt denoised on
    every view with DDIM and classifier-free guidance, the views' DDIM outputs averaged (per
    mask for regions), constant-colour bootstrapping for the first `bootstrap_steps`, one
    full-canvas decode with the model's full VAE. Null steps / guidance take the baseline's
    defaults (50, 7.5). UNet calls: one per view and step, carrying 2 latents per prompt
    (1 without guidance), uncond and cond in one batch as diffusers does."""
    require_normalized(spec, ("width", "height", "seed"))
    if model.family != "sd15":
        raise InvalidJob(
            f"method: multidiffusion (the baseline) runs on sd15 models; {model.name} is "
            f"{model.family}: use method streammultidiffusion or an sd15 model"
        )
    t_start = time.perf_counter()
    job = _job(model, spec, inputs)

    t_text = time.perf_counter()
    text = _encode_text(model, job)
    text_seconds = time.perf_counter() - t_text

    start = _start(model, spec, job)
    calls = UNetCounter(model.pipe.unet)
    t_denoise = time.perf_counter()
    latents = _denoise(calls, job, text, start, on_step, should_cancel, on_latent)
    denoise_seconds = time.perf_counter() - t_denoise

    t_decode = time.perf_counter()
    image = _decode(model, job, latents)
    seconds = (text_seconds, denoise_seconds, time.perf_counter() - t_decode)
    warnings = list(inputs.warnings) + _ignored_controls(spec)
    return render_result(spec, image, t_start, seconds, warnings, calls)


def _job(model: LoadedModel, spec: JobSpec, inputs: JobInputs) -> _Job:
    from diffusers import DDIMScheduler

    pipe = model.pipe
    h, w = spec.height // LATENT_SCALE, spec.width // LATENT_SCALE
    steps = spec.steps if spec.steps is not None else MULTIDIFFUSION_DEFAULT_STEPS
    guidance = float(
        spec.guidance_scale
        if spec.guidance_scale is not None
        else MULTIDIFFUSION_DEFAULT_GUIDANCE_SCALE
    )
    window, stride = baseline_window(spec)
    wrap = spec.wrap == "horizontal"
    # A scheduler of the job's own: diffusers schedulers keep state (set_timesteps), and the
    # shared pipe's is the LCM one that StreamMultiDiffusion renders with. A DDIM step is a
    # pure function of (eps, t, x) once the timesteps are set, so one scheduler serves every
    # view: diffusers' per-view snapshots of the scheduler's __dict__ change nothing for it.
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=model.device)
    return _Job(
        latent_size=(h, w),
        steps=steps,
        guidance=guidance,
        views=baseline_views(h, w, window, stride, wrap=wrap),
        wrap=wrap,
        prompts=_plan(spec, inputs, (h, w)),
        scheduler=scheduler,
        # diffusers keeps the latents in the prompt embeddings' dtype, the text encoder's.
        dtype=pipe.text_encoder.dtype,
    )


def _encode_text(model: LoadedModel, job: _Job) -> _Text:
    pipe, device, dtype = model.pipe, model.device, job.dtype
    embeds = None
    if job.prompts.prompts:
        embeds = encode_prompts(pipe, job.prompts.prompts).hidden
        if job.do_cfg:
            embeds = torch.cat([encode_prompts(pipe, job.prompts.negatives).hidden, embeds])
        embeds = embeds.to(device, dtype)
    timestep_cond = None
    if pipe.unet.config.time_cond_proj_dim is not None:  # guidance-distilled UNets, as diffusers
        timestep_cond = pipe.get_guidance_scale_embedding(
            torch.tensor(job.guidance - 1).repeat(1),
            embedding_dim=pipe.unet.config.time_cond_proj_dim,
        ).to(device=device, dtype=dtype)
    return _Text(embeds, timestep_cond)


def _start(model: LoadedModel, spec: JobSpec, job: _Job) -> _Start:
    """The initial latents, bootstrap colours and fixed background, drawing on the seed's
    generator in the original's order (the latents first, then the colours)."""
    from diffusers.utils.torch_utils import randn_tensor

    pipe, device, dtype, plan = model.pipe, model.device, job.dtype, job.prompts
    # The first draw of the seed's CPU generator, exactly as the panorama pipeline's
    # prepare_latents draws it (shape, dtype, then moved to the device).
    generator = torch.Generator("cpu").manual_seed(int(spec.seed))
    shape = (1, pipe.unet.config.in_channels, *job.latent_size)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    latents = latents * job.scheduler.init_noise_sigma
    noise = latents.clone()  # the original noises its bootstrap backgrounds with this, each step

    vae = pipe.vae  # the full VAE, as the original and diffusers (never the tiny one)
    boot_steps = min(spec.bootstrap_steps, job.steps) if plan.bootstrapped else 0
    colors = None
    if boot_steps:
        # The original draws as many colours as bootstrapping steps, and per view and step a
        # random one for each bootstrapped prompt.
        colors = _color_latents(vae, boot_steps, generator, model.native_size, device, dtype)
    fixed = cover = None
    if plan.fixed_pixels is not None:
        # A fixed background (a picture, or white): it is not denoised but re-noised to each
        # step's level outside the regions (the original has no such case).
        fixed = vae_ops.encode(vae, plan.fixed_pixels).to(device, dtype)
        cover = plan.cover.to(device, dtype)
        first = float(job.scheduler.alphas_cumprod[int(job.scheduler.timesteps[0])])
        latents = cover * latents + (1 - cover) * _noised(fixed, noise, first)
    return _Start(
        latents=latents,
        noise=noise,
        generator=generator,
        colors=colors,
        boot_steps=boot_steps,
        masks=plan.masks.to(device, dtype),
        fixed=fixed,
        cover=cover,
    )


def _denoise(
    calls: UNetCounter,
    job: _Job,
    text: _Text,
    start: _Start,
    on_step: StepCallback | None,
    should_cancel: CancelCheck | None,
    on_latent: LatentCallback | None,
) -> torch.Tensor:
    """The DDIM loop: per step, every view's DDIM output averaged into the canvas (Eq. 5)."""
    scheduler, latents, masks = job.scheduler, start.latents, start.masks
    fixed, cover, noise = start.fixed, start.cover, start.noise
    value = torch.zeros_like(latents)
    count = torch.zeros(1, 1, *job.latent_size, device=latents.device, dtype=latents.dtype)
    clean = torch.zeros_like(latents) if on_latent is not None else None
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        value.zero_()
        count.zero_()
        if clean is not None:
            clean.zero_()
        for view in job.views if text.embeds is not None else ():
            _check_cancel(should_cancel)
            m = view.take(masks)
            x = view.take(latents).repeat(len(m), 1, 1, 1)
            if i < start.boot_steps:
                x = _bootstrap(x, m, view, t, job, start)
            model_input = torch.cat([x, x]) if job.do_cfg else x
            model_input = scheduler.scale_model_input(model_input, t)
            eps = calls(
                model_input, t, encoder_hidden_states=text.embeds, timestep_cond=text.timestep_cond
            ).sample
            if job.do_cfg:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + job.guidance * (eps_cond - eps_uncond)
            out = scheduler.step(eps, t, x, eta=0.0)
            # Uniform weights for one prompt (x * 1 and a sum over one row are exact, so this
            # is diffusers' `value += view; count += 1`), the masks for regions (Eq. 5).
            view.add_into(value, (out.prev_sample * m).sum(dim=0, keepdim=True))
            view.add_into(count, m.sum(dim=0, keepdim=True))
            if clean is not None:
                view.add_into(clean, (out.pred_original_sample * m).sum(dim=0, keepdim=True))
        latents = torch.where(count > 0, value / count, value)
        if fixed is not None:
            level = _prev_level(scheduler, t)  # where this step's DDIM outputs now are
            latents = cover * latents + (1 - cover) * _noised(fixed, noise, level)
        if on_latent is not None:
            preview = torch.where(count > 0, clean / count, clean)
            if fixed is not None:
                preview = cover * preview + (1 - cover) * fixed
            on_latent(i + 1, preview)
        if on_step is not None:
            on_step(i + 1, total)
    return latents


def _bootstrap(x, m, view: BaselineView, t, job: _Job, start: _Start) -> torch.Tensor:
    """The bootstrapped rows of a view's latents outside their masks: a random constant
    colour per row, noised to step t with the initial noise (the original's bootstrapping)."""
    rows = job.prompts.bootstrapped
    pick = torch.randint(0, len(start.colors), (len(rows),), generator=start.generator)
    bg = start.colors[pick.to(x.device)].expand(-1, -1, *x.shape[-2:])
    bg = job.scheduler.add_noise(bg, view.take(start.noise).expand_as(bg), t)
    x[rows] = x[rows] * m[rows] + bg * (1 - m[rows])
    return x


def _decode(model: LoadedModel, job: _Job, latents: torch.Tensor):
    """One decode of the whole canvas, as diffusers; with wrap its 8-column circular padding."""
    vae = model.pipe.vae
    if job.wrap:
        pixels = vae_ops.decode_wrapped(vae, latents).cpu()
    else:
        pixels = vae_ops.decode(vae, latents).cpu()
    return finish_image(pixels, job.prompts.fixed_pixels, job.prompts.pixel_alpha)


def diffusers_panorama_pipeline(model: LoadedModel):
    """diffusers' StableDiffusionPanoramaPipeline on the very modules of `model` (its LoRA
    fused into the shared UNet) with a DDIM scheduler of the same config: the reference this
    mode reproduces, for tests and benchmarks."""
    from diffusers import StableDiffusionPanoramaPipeline

    return diffusers_ddim_pipeline(model, StableDiffusionPanoramaPipeline)


def diffusers_ddim_pipeline(model: LoadedModel, pipeline_class):
    """A diffusers SD1.5 pipeline of `pipeline_class` (StableDiffusionPipeline, the panorama
    one, ...) on the very modules of `model`, with a DDIM scheduler of the same config and no
    progress bar; for the references that tests and benchmarks compare against."""
    from diffusers import DDIMScheduler

    pipe = model.pipe
    built = pipeline_class(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    built.set_progress_bar_config(disable=True)
    return built
