"""The region-based LCM sampler: MultiDiffusion with StreamMultiDiffusion's stabilization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .aggregate import Accumulator
from .centering import box_bounds, center_shift, roll_each
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


class _Noise:
    """Every noise draw of a job, in the order the loop takes them. Drawn on the CPU from the
    job's generator, so a seed gives the same noise on every device, and for the whole canvas,
    so skipping or batching views cannot change which numbers go where; copied to the device
    in one transfer before the loop (the loop never waits on a host-to-device copy)."""

    def __init__(self, inputs: SamplerInputs, shape, count: int, device: torch.device):
        draws = [
            torch.randn(shape, generator=inputs.generator, dtype=torch.float32)
            for _ in range(count)
        ]
        self.all, self.taken = torch.cat(draws).to(device), 0

    def take(self) -> torch.Tensor:
        self.taken += 1
        return self.all[self.taken - 1 : self.taken]


def _noise_draws(inputs: SamplerInputs) -> int:
    """How many draws `sample` takes: the initial latent; with LCM, one per bootstrap step and
    one per step but the last (Euler reuses the initial noise)."""
    total = len(inputs.schedule)
    if inputs.schedule.sampler == "euler":
        return 1
    return 1 + min(inputs.bootstrap_steps, total) + total - 1


@dataclass
class _Plan:
    """What the masks decide about the loop, read in two device-to-host copies before it starts:
    per step and view the active regions (their ids as a list and on the device) and, while
    bootstrapping, each active region's centering shift. The loop then branches on these
    lists only, never on tensor values (HOST_SYNCS_PER_STEP)."""

    active: list[list[list[int]]]
    index: list[list[torch.Tensor]]
    shifts: list[list[list[tuple[int, int]]]]
    time_ids: list[torch.Tensor | None]


def _plan(inputs: SamplerInputs, device: torch.device) -> _Plan:
    """The loop's plan from the per-step masks (see `_Plan`)."""
    total = len(inputs.schedule)
    boot = min(inputs.bootstrap_steps, total)
    claims, boxes = [], []
    for view in inputs.views:
        masks = view.take(inputs.masks)  # (R, T, 1, hv, wv)
        claims.append(masks.flatten(2).amax(dim=2) > 0)  # (R, T)
        boxes.append(box_bounds(masks[:, :boot, 0]))  # (R, boot, 4)
    claims_host = torch.stack(claims).tolist() if claims else []  # (V, R, T)
    boxes_host = torch.stack(boxes).tolist() if boxes else []  # (V, R, boot, 4)
    active = [
        [[r for r, claim in enumerate(view_claims) if claim[i]] for view_claims in claims_host]
        for i in range(total)
    ]
    flat = [r for step in active for ids in step for r in ids]
    flat_device = torch.tensor(flat, dtype=torch.long).to(device)
    index, start = [], 0
    for step in active:
        index.append([])
        for ids in step:
            index[-1].append(flat_device[start : start + len(ids)])
            start += len(ids)
    shifts = [
        [
            [center_shift(boxes_host[v][r][i], _view_size(view)) for r in active[i][v]]
            for v, view in enumerate(inputs.views)
        ]
        for i in range(boot)
    ]
    ids = [None] * len(inputs.views)
    if inputs.cond.pooled is not None and inputs.views:
        crops = [(v.top * LATENT_SCALE, v.left * LATENT_SCALE) for v in inputs.views]
        rows = time_ids(inputs.canvas, crops).to(device, inputs.cond.pooled.dtype)
        ids = [rows[v : v + 1] for v in range(len(inputs.views))]
    return _Plan(active=active, index=index, shifts=shifts, time_ids=ids)


def _view_size(view: View) -> tuple[int, int]:
    return (view.bottom - view.top, view.right - view.left)


HOST_SYNCS_PER_STEP = 0
"""Host syncs the engine makes per denoising step (copies between host and device, reading a
tensor's value): none. The loop waits only in the caller's callbacks (progress, previews; a
cancel check reads no tensor). The syncs before the loop: HOST_SYNCS_BEFORE_LOOP."""

HOST_SYNCS_BEFORE_LOOP = 6
"""The sampler's setup: two reads of the masks (active regions, centering boxes) and four
uploads (region ids, SDXL's time ids, the timesteps, the noise)."""


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
    average_noisy_latents: bool = False,
) -> torch.Tensor:
    """Run every step and return the final predicted clean latent (1, C, h, w), float32.

    Region-view pairs go through the UNet `batch.size` at a time (one call for several views
    and regions); pairs whose mask is empty in the view are skipped (their weight is 0).
    The LCM sampler noises each step's mix with fresh noise; the Euler sampler is
    deterministic: the fixed background and the bootstrap white are noised with the initial
    noise, and the mix goes on with the mixed predicted noise (see `Schedule`).

    `average_noisy_latents` (LCM only; not a spec field) turns latent pre-averaging off, for
    benchmarks of the failure it fixes: as plain MultiDiffusion on an LCM schedule, every
    region-view pair's clean prediction is noised to the next level with noise of its own
    and those noisy latents are averaged, so the averaged noise is too weak where pairs
    overlap (what latent pre-averaging fixes in StreamMultiDiffusion, Lee et al. 2024). The
    pairs' noise comes from a generator on the device seeded from the job's, so it differs
    between devices; the final step averages clean predictions either way. Euler's mix is
    linear in its samples, so averaging noisy latents there equals what the default does, and
    the flag is ignored.
    """
    batch = batch if batch is not None else ViewBatch(DEFAULT_CPU_VIEW_BATCH)
    device = inputs.masks.device
    sched = inputs.schedule
    total = len(sched)
    euler = sched.sampler == "euler"
    plan = _plan(inputs, device)
    noise_stream = _Noise(inputs, latent_shape, _noise_draws(inputs), device)
    timesteps = torch.tensor(sched.timesteps).to(device)
    x = noise_stream.take()  # the generator's first draw
    initial_noise = x if euler else None
    pair_noise = None
    if average_noisy_latents and not euler:  # drawn after _Noise: the job's stream is unchanged
        seed = int(torch.randint(0, 2**62, (1,), generator=inputs.generator))
        pair_noise = torch.Generator(device).manual_seed(seed)
    x0_mix = x
    for i in range(total):
        _check_cancel(should_cancel)
        boot = None
        if i < inputs.bootstrap_steps:
            fresh = initial_noise if initial_noise is not None else noise_stream.take()
            boot = _bootstrap_background(i, x, inputs, fresh)
        acc = Accumulator(latent_shape, device, noise=euler)
        noisy = None
        if pair_noise is not None and i + 1 < total:
            noisy = _NoisyMix(Accumulator(latent_shape, device), pair_noise, i + 1)
        pairs = [
            _prepare_view(i, x, boot, v, inputs, plan)
            for v in range(len(inputs.views))
            if plan.active[i][v]  # no region claims a pixel here at this step: weight 0
        ]
        _run_pairs(unet, (i, timesteps[i]), pairs, inputs, acc, batch, should_cancel, noisy)
        x0_mix = acc.result(inputs.background)
        if i + 1 < total:
            if euler:
                fill = initial_noise if inputs.background is not None else None
                noise = acc.noise_result(fill)
            else:
                noise = noise_stream.take()
            if noisy is not None:
                fill = None
                if inputs.background is not None:
                    fill = sched.renoise(i + 1, inputs.background, noise)
                x = noisy.acc.result(fill)
            else:
                x = sched.renoise(i + 1, x0_mix, noise)
        if on_latent is not None:
            on_latent(i + 1, x0_mix)
        if on_step is not None:
            on_step(i + 1, total)
    return x0_mix


def _check_cancel(should_cancel: CancelCheck | None) -> None:
    if should_cancel is not None and should_cancel():
        raise RenderCanceled("the render was canceled")


def _bootstrap_background(i, x, inputs: SamplerInputs, noise) -> torch.Tensor:
    """The noised background each region's copy sees outside its mask at bootstrap step i:
    white, turning into the fixed background (or the current latent) as i passes the mix steps.
    Noised with fresh noise (LCM) or with the initial noise (Euler, deterministic)."""
    sched = inputs.schedule
    r = min(1.0, max(0.0, BOOTSTRAP_MIX_STEPS - i))
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
    count: int
    xs: torch.Tensor  # (P, C, hv, wv) the view's latent per active region (rolled if bootstrapping)
    masks: torch.Tensor  # (P, 1, hv, wv)
    tile_weight: torch.Tensor
    cond: Embeds
    uncond: Embeds | None
    time_ids: torch.Tensor | None  # (P, 6), SDXL
    shifts: list[tuple[int, int]] | None
    b_view: torch.Tensor | None


def _prepare_view(i, x, boot, v: int, inputs: SamplerInputs, plan: _Plan) -> _ViewPairs:
    view, index = inputs.views[v], plan.index[i][v]
    count = len(plan.active[i][v])
    masks = view.take(inputs.masks[:, i]).index_select(0, index)  # (P, 1, hv, wv)
    xs = view.take(x).expand(count, -1, -1, -1)
    shifts = b_view = None
    if boot is not None:
        b_view = view.take(boot)
        xs = (1 - masks) * b_view + masks * xs
        shifts = plan.shifts[i][v]
        xs = roll_each(xs, shifts, sign=-1)
    ids = plan.time_ids[v]
    return _ViewPairs(
        view=view,
        count=count,
        xs=xs,
        masks=masks,
        tile_weight=inputs.view_weights[v],
        cond=inputs.cond[index],
        uncond=inputs.uncond[index] if inputs.uncond is not None else None,
        time_ids=ids.expand(count, -1) if ids is not None else None,
        shifts=shifts,
        b_view=b_view,
    )


@dataclass
class _NoisyMix:
    """`sample(average_noisy_latents=True)`: each pair's clean prediction noised to step
    `next_step` with noise of its own from `generator`, averaged in `acc`."""

    acc: Accumulator
    generator: torch.Generator
    next_step: int


def _run_pairs(
    unet, step, pairs: list[_ViewPairs], inputs: SamplerInputs, acc, batch, cancel, noisy=None
):
    """Denoise every pair of a step, `batch.size` pairs per UNet call, into the accumulator
    (and, with `noisy`, their noised predictions into its accumulator). `step` is the step
    number and its timestep on the device."""
    i, t = step
    queue = list(pairs)
    while queue:
        _check_cancel(cancel)
        # Whole views of one size go together (views at the canvas edge may be smaller); a view
        # with more regions than the batch size goes alone.
        shape = queue[0].xs.shape[-2:]
        chunk, rest, count = [], [], 0
        for p in queue:
            if p.xs.shape[-2:] == shape and (not chunk or count + p.count <= batch.size):
                chunk.append(p)
                count += p.count
            else:
                rest.append(p)
        queue = rest
        xs = torch.cat([p.xs for p in chunk])
        cond = Embeds.cat([p.cond for p in chunk])
        uncond = Embeds.cat([p.uncond for p in chunk]) if inputs.uncond is not None else None
        ids = torch.cat([p.time_ids for p in chunk]) if cond.pooled is not None else None
        out = batch.run(
            lambda a, b, xs=xs, cond=cond, uncond=uncond, ids=ids: _predict(
                unet,
                xs[a:b],
                t,
                cond[a:b],
                uncond[a:b] if uncond is not None else None,
                ids[a:b] if ids is not None else None,
                inputs,
            ),
            len(xs),
        )
        sched = inputs.schedule
        xs32 = xs.float()
        x0_all = sched.denoise(i, xs32, out.float())
        eps_all = sched.noise_of(i, xs32, x0_all) if sched.sampler == "euler" else None
        start = 0
        for p in chunk:
            x0 = x0_all[start : start + p.count]
            eps = eps_all[start : start + p.count] if eps_all is not None else None
            start += p.count
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
            if noisy is not None:
                own = torch.randn(x0.shape, generator=noisy.generator, device=x0.device)
                noised = sched.renoise(noisy.next_step, x0, own)
                noisy.acc.add(p.view, noised, weight * p.tile_weight)


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


def _predict(unet, xs, t, cond: Embeds, uncond: Embeds | None, ids, inputs: SamplerInputs):
    """The UNet's guided prediction; the unconditional half only when guidance > 1. SDXL's
    added conditioning (pooled embedding, size and the view's crop: `ids`) goes with every
    pair."""
    guided = uncond is not None
    embeds = Embeds.cat([uncond, cond]) if guided else cond
    passes = 2 if guided else 1
    extra = {}
    if embeds.pooled is not None:
        extra["added_cond_kwargs"] = {
            "text_embeds": embeds.pooled,
            "time_ids": ids.repeat(passes, 1),
        }
    sample = torch.cat([xs, xs]) if guided else xs
    out = unet(sample.to(unet.dtype), t, encoder_hidden_states=embeds.hidden, **extra).sample
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
