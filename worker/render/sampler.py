"""The region-based LCM sampler: MultiDiffusion with StreamMultiDiffusion's stabilization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .aggregate import Accumulator
from .centering import bbox_center_shifts, roll_each
from .conditioning import Embeds, time_ids
from .defaults import (
    BOOTSTRAP_MIX_STEPS,
    BYTES_PER_LATENT_PIXEL,
    DEFAULT_CPU_VIEW_BATCH,
    LATENT_SCALE,
    MAX_VIEW_BATCH,
)
from .errors import RenderCanceled
from .schedule import Schedule
from .tiles import View

StepCallback = Callable[[int, int], None]
LatentCallback = Callable[[int, torch.Tensor], None]
"""Called after each step with the step number and the current predicted clean latent."""
CancelCheck = Callable[[], bool]


@dataclass
class SamplerInputs:
    """Everything the loop needs, already on the model's device.

    cond / uncond: embeddings per sampled region (uncond only when guidance > 1); masks:
    (R, T, 1, h, w) per-step weights; background: the fixed clean background latent
    (1, C, h, w) or None; white: the white latent (1, C, h, w) used to bootstrap; canvas: the
    canvas in pixels (height, width), for SDXL's size conditioning; guidance_rescale: the
    share of the guided prediction rescaled to the conditional one's spread (SDXL's 0.7).
    """

    cond: Embeds
    uncond: Embeds | None
    masks: torch.Tensor
    background: torch.Tensor | None
    white: torch.Tensor
    views: list[View]
    view_weights: list[torch.Tensor]
    schedule: Schedule
    guidance_scale: float
    bootstrap_steps: int
    leak_sensitivity: float
    generator: torch.Generator
    canvas: tuple[int, int] = (0, 0)
    guidance_rescale: float = 0.0


def _randn(shape, inputs: SamplerInputs, like: torch.Tensor) -> torch.Tensor:
    # Noise is drawn on the CPU from the job's generator, so a seed gives the same noise on
    # every device, and drawn for the whole canvas, so skipping or batching views cannot change
    # which numbers go where.
    return torch.randn(shape, generator=inputs.generator, dtype=torch.float32).to(like)


@torch.no_grad()
def sample(
    unet,
    inputs: SamplerInputs,
    latent_shape: tuple[int, int, int, int],
    *,
    on_step: StepCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_latent: LatentCallback | None = None,
    batch: ViewBatch | None = None,
) -> torch.Tensor:
    """Run every step and return the final predicted clean latent (1, C, h, w), float32.

    Region-view pairs go through the UNet `batch.size` at a time (one call for several views
    and regions); pairs whose mask is empty in the view are skipped (their weight is 0).
    The LCM sampler noises each step's mix with fresh noise; the Euler sampler is
    deterministic: the fixed background and the bootstrap white are noised with the initial
    noise, and the mix goes on with the mixed predicted noise (see `Schedule`).
    """
    batch = batch if batch is not None else ViewBatch(DEFAULT_CPU_VIEW_BATCH)
    device = inputs.masks.device
    sched = inputs.schedule
    total = len(sched)
    euler = sched.sampler == "euler"
    x = _randn(latent_shape, inputs, inputs.masks)  # the generator's first draw
    initial_noise = x if euler else None
    x0_mix = x
    for i in range(total):
        _check_cancel(should_cancel)
        boot = None
        if i < inputs.bootstrap_steps:
            boot = _bootstrap_background(i, x, inputs, latent_shape, initial_noise)
        acc = Accumulator(latent_shape, device, noise=euler)
        pairs = [
            p
            for view, tile_weight in zip(inputs.views, inputs.view_weights, strict=True)
            if (p := _prepare_view(i, x, boot, view, tile_weight, inputs)) is not None
        ]
        _run_pairs(unet, i, pairs, inputs, acc, batch, should_cancel)
        x0_mix = acc.result(inputs.background)
        if i + 1 < total:
            if euler:
                fill = initial_noise if inputs.background is not None else None
                noise = acc.noise_result(fill)
            else:
                noise = _randn(latent_shape, inputs, x0_mix)
            x = sched.renoise(i + 1, x0_mix, noise)
        if on_latent is not None:
            on_latent(i + 1, x0_mix)
        if on_step is not None:
            on_step(i + 1, total)
    return x0_mix


def _check_cancel(should_cancel: CancelCheck | None) -> None:
    if should_cancel is not None and should_cancel():
        raise RenderCanceled("the render was canceled")


def _bootstrap_background(i, x, inputs: SamplerInputs, shape, initial_noise) -> torch.Tensor:
    """The noised background each region's copy sees outside its mask at bootstrap step i:
    white, turning into the fixed background (or the current latent) as i passes the mix steps.
    Noised with fresh noise (LCM) or with the initial noise (Euler, deterministic)."""
    sched = inputs.schedule
    r = min(1.0, max(0.0, BOOTSTRAP_MIX_STEPS - i))
    noise = initial_noise if initial_noise is not None else _randn(shape, inputs, x)
    if inputs.background is not None:
        clean = r * inputs.white + (1 - r) * inputs.background
        return sched.renoise(i, clean, noise)
    # No fixed background: the current latent is already at this step's noise level, so it is
    # used as it is (the reference noised it a second time, leaving almost pure noise).
    return r * sched.renoise(i, inputs.white, noise) + (1 - r) * x


@dataclass
class _ViewPairs:
    """The active regions of one view at one step, ready for the UNet."""

    view: View
    active: list[int]
    xs: torch.Tensor  # (P, C, hv, wv) the view's latent per active region (rolled if bootstrapping)
    masks: torch.Tensor  # (P, 1, hv, wv)
    tile_weight: torch.Tensor
    shifts: torch.Tensor | None
    b_view: torch.Tensor | None


def _prepare_view(i, x, boot, view, tile_weight, inputs: SamplerInputs) -> _ViewPairs | None:
    masks = view.take(inputs.masks[:, i])  # (R, 1, h, w)
    active = torch.nonzero(masks.flatten(1).amax(dim=1) > 0).flatten().tolist()
    if not active:  # no region claims a pixel here at this step: its weight would be 0
        return None
    masks = masks[active]
    xs = view.take(x).expand(len(active), -1, -1, -1)
    shifts = b_view = None
    if boot is not None:
        b_view = view.take(boot)
        xs = (1 - masks) * b_view + masks * xs
        shifts = bbox_center_shifts(masks)
        xs = roll_each(xs, shifts, sign=-1)
    return _ViewPairs(view, active, xs, masks, tile_weight, shifts, b_view)


def _run_pairs(unet, i, pairs: list[_ViewPairs], inputs: SamplerInputs, acc, batch, cancel):
    """Denoise every pair of a step, `batch.size` pairs per UNet call, into the accumulator."""
    queue = list(pairs)
    while queue:
        _check_cancel(cancel)
        # Whole views of one size go together (views at the canvas edge may be smaller); a view
        # with more regions than the batch size goes alone.
        shape = queue[0].xs.shape[-2:]
        chunk, rest, count = [], [], 0
        for p in queue:
            if p.xs.shape[-2:] == shape and (not chunk or count + len(p.active) <= batch.size):
                chunk.append(p)
                count += len(p.active)
            else:
                rest.append(p)
        queue = rest
        xs = torch.cat([p.xs for p in chunk])
        active = [k for p in chunk for k in p.active]
        crops = [(p.view.top * LATENT_SCALE, p.view.left * LATENT_SCALE)
                 for p in chunk for _ in p.active]  # fmt: skip
        out = batch.run(
            lambda a, b, xs=xs, active=active, crops=crops: _predict(
                unet, xs[a:b], i, active[a:b], crops[a:b], inputs
            ),
            len(xs),
        )
        sched = inputs.schedule
        xs32 = xs.float()
        x0_all = sched.denoise(i, xs32, out.float())
        eps_all = sched.noise_of(i, xs32, x0_all) if sched.sampler == "euler" else None
        start = 0
        for p in chunk:
            x0 = x0_all[start : start + len(p.active)]
            eps = eps_all[start : start + len(p.active)] if eps_all is not None else None
            start += len(p.active)
            weight = p.masks
            if p.shifts is not None:
                x0 = roll_each(x0, p.shifts, sign=+1)
                eps = roll_each(eps, p.shifts, sign=+1) if eps is not None else None
                if inputs.leak_sensitivity > 0:
                    # Pixels whose prediction still looks like the bootstrap background lose
                    # weight.
                    leak = (x0 - p.b_view.float()).pow(2).mean(dim=1, keepdim=True)
                    weight = weight * (2 * torch.sigmoid(leak / inputs.leak_sensitivity) - 1)
            acc.add(p.view, x0, weight * p.tile_weight, eps)


class ViewBatch:
    """How many region-view pairs go through the UNet at once; halved (and kept smaller) when
    a call runs out of GPU memory, down to one pair per call."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))

    def run(self, predict: Callable[[int, int], torch.Tensor], total: int) -> torch.Tensor:
        outs, start = [], 0
        while start < total:
            end = min(total, start + self.size)
            try:
                outs.append(predict(start, end))
            except torch.cuda.OutOfMemoryError:
                if self.size == 1:
                    raise
                torch.cuda.empty_cache()
                self.size = max(1, self.size // 2)
                continue
            start = end
        return torch.cat(outs)


def auto_view_batch(device: torch.device, window: tuple[int, int], setting: int | None) -> int:
    """The batch size: the setting when given; on the CPU the default; on CUDA as many pairs as
    half of the free memory holds, at about BYTES_PER_LATENT_PIXEL per latent pixel per pair."""
    if setting:
        return setting
    if device.type != "cuda":
        return DEFAULT_CPU_VIEW_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    per_pair = BYTES_PER_LATENT_PIXEL * window[0] * window[1]
    return int(max(1, min(MAX_VIEW_BATCH, free * 0.5 // per_pair)))


def _predict(unet, xs: torch.Tensor, i: int, active: list[int], crops, inputs: SamplerInputs):
    """The UNet's guided prediction; the unconditional half only when guidance > 1. SDXL's
    added conditioning (pooled embedding, size and the view's crop) goes with every pair."""
    t = torch.tensor(inputs.schedule.timesteps[i], device=xs.device)
    dtype = unet.dtype
    cond = inputs.cond[active]
    guided = inputs.uncond is not None
    embeds = Embeds.cat([inputs.uncond[active], cond]) if guided else cond
    passes = 2 if guided else 1
    extra = {}
    if embeds.pooled is not None:
        ids = time_ids(inputs.canvas, crops).repeat(passes, 1)
        extra["added_cond_kwargs"] = {
            "text_embeds": embeds.pooled,
            "time_ids": ids.to(xs.device, embeds.pooled.dtype),
        }
    sample = torch.cat([xs, xs]) if guided else xs
    out = unet(sample.to(dtype), t, encoder_hidden_states=embeds.hidden, **extra).sample
    if not guided:
        return out
    uncond_out, cond_out = out.chunk(2)
    guided = uncond_out + inputs.guidance_scale * (cond_out - uncond_out)
    if inputs.guidance_rescale > 0:
        # Rescale the guided prediction's spread to the conditional one's (fixes overexposure
        # at high guidance; Lin et al. 2023, as SDXL pipelines do), mixed in by the share.
        dims = tuple(range(1, guided.ndim))
        ratio = cond_out.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
        guided = torch.lerp(guided, guided * ratio, inputs.guidance_rescale)
    return guided
