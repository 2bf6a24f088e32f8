"""The sampling schedule: timesteps and the per-step closed forms of the LCM and Euler samplers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .defaults import LCM_GRID_STEPS, SMD_DEFAULT_STEPS, SMD_T_INDEX_LIST


@dataclass(frozen=True)
class Schedule:
    """Per selected step i: timestep t, a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar) (the noise
    level, also the mask threshold), and the LCM boundary scalings c_skip, c_out.

    `sampler` says how a step ends. `lcm`: the regions' predicted clean latents are mixed, then
    noised to the next level with fresh noise. `euler` (deterministic, SDXL-Lightning): Euler's
    next samples are mixed. With sigma = b / a, Euler's step x + eps (sigma' - sigma) on
    x / a is a' x0 + b' eps on x, so mixing Euler samples is mixing x0 and the predicted noise
    with the same weights and noising the one with the other (`renoise(i + 1, x0, eps)`)."""

    timesteps: tuple[int, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    c_skip: tuple[float, ...]
    c_out: tuple[float, ...]
    prediction_type: str = "epsilon"
    sampler: str = "lcm"

    def __len__(self) -> int:
        return len(self.timesteps)

    def denoise(self, i: int, x: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        """The predicted clean latent x0 at step i (LCM's boundary-condition form)."""
        a, b = self.a[i], self.b[i]
        if self.prediction_type == "epsilon":
            x0 = (x - b * model_output) / a
        elif self.prediction_type == "v_prediction":
            x0 = a * x - b * model_output
        else:  # "sample"
            x0 = model_output
        return self.c_out[i] * x0 + self.c_skip[i] * x

    def renoise(self, i: int, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x0 taken to the noise level of step i."""
        return self.a[i] * x0 + self.b[i] * noise

    def noise_of(self, i: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise that takes x0 to x at step i (the model's noise prediction, whatever its
        parametrization)."""
        return (x - self.a[i] * x0) / self.b[i]


def build_schedule(scheduler, steps: int) -> Schedule:
    """The StreamMultiDiffusion table for the default step count, the scheduler's own spacing
    otherwise.

    `scheduler` is a diffusers LCMScheduler or EulerDiscreteScheduler (trailing timesteps); it
    is only asked for its grid and constants (its step counter is never used, so one scheduler
    object serves every job and view).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == SMD_DEFAULT_STEPS:
        scheduler.set_timesteps(LCM_GRID_STEPS)
        grid = [int(t) for t in scheduler.timesteps]
        timesteps = [grid[k] for k in SMD_T_INDEX_LIST]
    else:
        scheduler.set_timesteps(steps)
        timesteps = [int(t) for t in scheduler.timesteps]
    alphas = scheduler.alphas_cumprod.double()
    a = [float(alphas[t].sqrt()) for t in timesteps]
    b = [float((1 - alphas[t]).sqrt()) for t in timesteps]
    lcm = hasattr(scheduler, "get_scalings_for_boundary_condition_discrete")
    c_skip, c_out = [0.0] * len(timesteps), [1.0] * len(timesteps)
    if lcm:
        for k, t in enumerate(timesteps):
            skip, out = scheduler.get_scalings_for_boundary_condition_discrete(t)
            c_skip[k], c_out[k] = float(skip), float(out)
    return Schedule(
        timesteps=tuple(timesteps),
        a=tuple(a),
        b=tuple(b),
        c_skip=tuple(c_skip),
        c_out=tuple(c_out),
        prediction_type=scheduler.config.prediction_type,
        sampler="lcm" if lcm else "euler",
    )
