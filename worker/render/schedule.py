"""The sampling schedule: timesteps and the per-step closed forms of the LCM sampler."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .defaults import LCM_GRID_STEPS, SMD_DEFAULT_STEPS, SMD_T_INDEX_LIST


@dataclass(frozen=True)
class Schedule:
    """Per selected step i: timestep t, a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar) (the noise
    level, also the mask threshold), and the LCM boundary scalings c_skip, c_out."""

    timesteps: tuple[int, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    c_skip: tuple[float, ...]
    c_out: tuple[float, ...]
    prediction_type: str = "epsilon"

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


def build_schedule(scheduler, steps: int) -> Schedule:
    """The StreamMultiDiffusion table for the default step count, LCM's own spacing otherwise.

    `scheduler` is a diffusers LCMScheduler; it is only asked for its grid and constants (its
    step counter is never used, so one scheduler object serves every job and view).
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
    c_skip, c_out = [], []
    for t in timesteps:
        skip, out = scheduler.get_scalings_for_boundary_condition_discrete(t)
        c_skip.append(float(skip))
        c_out.append(float(out))
    return Schedule(
        timesteps=tuple(timesteps),
        a=tuple(a),
        b=tuple(b),
        c_skip=tuple(c_skip),
        c_out=tuple(c_out),
        prediction_type=scheduler.config.prediction_type,
    )
