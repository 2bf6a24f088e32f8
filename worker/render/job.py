"""The engine's entry point: a normalized spec rendered by the method it names."""

from __future__ import annotations

from schemas import JobSpec

from .baseline import render_baseline
from .inputs import JobInputs
from .loading import LoadedModel
from .result import RenderResult
from .sampler import CancelCheck, LatentCallback, StepCallback
from .smd import render_streammultidiffusion


def render_job(
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
    """Render a normalized spec (seed, size, steps and guidance filled in) with a loaded model,
    by its `method`: `streammultidiffusion` (smd.py) or the `multidiffusion` baseline
    (baseline.py, DDIM).

    `on_step(step, total)` after each step, `on_latent(step, latent)` with its predicted clean
    latent, `should_cancel()` polled to stop with RenderCanceled. `view_batch` caps the
    region-view pairs per UNet call. `average_noisy_latents` is for benchmarks only
    (bench/fidelity.py's failure case), not a spec field: it turns the sampler's latent
    pre-averaging off (see `sampler.sample`). Method `multidiffusion` ignores both."""
    if spec.method == "multidiffusion":
        return render_baseline(
            model, spec, inputs, on_step=on_step, should_cancel=should_cancel, on_latent=on_latent
        )
    return render_streammultidiffusion(
        model,
        spec,
        inputs,
        on_step=on_step,
        should_cancel=should_cancel,
        on_latent=on_latent,
        view_batch=view_batch,
        average_noisy_latents=average_noisy_latents,
    )
