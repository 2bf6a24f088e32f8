"""Latent pre-averaging: the weighted average of predicted clean latents over regions and views."""

from __future__ import annotations

import torch

from .tiles import View


class Accumulator:
    """Sums w * x0 and w over views for one step, then gives the weighted average; with
    `noise`, sums w * eps alongside (the Euler sampler mixes its next samples, a x0 + b eps)."""

    def __init__(self, latent_shape: tuple[int, ...], device: torch.device, noise: bool = False):
        self.num = torch.zeros(latent_shape, dtype=torch.float32, device=device)
        self.den = torch.zeros((1, 1, *latent_shape[-2:]), dtype=torch.float32, device=device)
        self.noise = torch.zeros_like(self.num) if noise else None

    def add(self, view: View, x0: torch.Tensor, weight: torch.Tensor, eps=None) -> None:
        """x0 (and eps): (P, C, h, w) predictions in the view; weight: (P, 1, h, w)."""
        view.add_into(self.num, (weight * x0.float()).sum(dim=0, keepdim=True))
        view.add_into(self.den, weight.sum(dim=0, keepdim=True))
        if self.noise is not None:
            view.add_into(self.noise, (weight * eps.float()).sum(dim=0, keepdim=True))

    def result(self, background: torch.Tensor | None = None) -> torch.Tensor:
        """sum(w x0) / sum(w) where sum(w) > 0, else 0; with a fixed clean background latent,
        the unclaimed part (1 - D, clipped) is filled with it: for D <= 1 this equals
        sum(w x0) + (1 - D) * background."""
        return self._mixed(self.num, background)

    def noise_result(self, fill: torch.Tensor) -> torch.Tensor:
        """The weighted average of the predicted noise, the unclaimed part filled with `fill`
        (the initial noise, which the fixed background is noised with) where `result` fills
        with the background."""
        return self._mixed(self.noise, fill)

    def _mixed(self, num: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
        mixed = torch.where(self.den > 0, num / self.den.clamp_min(1e-12), num)
        if fill is None:
            return mixed
        a = (1 - self.den).clamp(0, 1)
        return (1 - a) * mixed + a * fill.float()
