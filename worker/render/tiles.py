"""Tiling of the latent canvas into views, with tent weights that form a partition of unity."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class View:
    """A window [top:bottom, left:right] of the latent canvas. With `wrap_width` set, columns
    past the right edge continue at the left one (a 360-degree panorama)."""

    top: int
    bottom: int
    left: int
    right: int
    wrap_width: int = 0

    @property
    def wraps(self) -> bool:
        return bool(self.wrap_width) and self.right > self.wrap_width

    def _columns(self, device: torch.device) -> torch.Tensor:
        return torch.arange(self.left, self.right, device=device) % self.wrap_width

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The view's part of a (..., H, W) tensor."""
        if self.wraps:
            return x[..., self.top : self.bottom, :].index_select(-1, self._columns(x.device))
        return x[..., self.top : self.bottom, self.left : self.right]

    def add_into(self, target: torch.Tensor, values: torch.Tensor) -> None:
        """target[view] += values, wrapping columns where the view wraps."""
        rows = target[..., self.top : self.bottom, :]
        if self.wraps:
            rows.index_add_(-1, self._columns(target.device), values)
        else:
            rows[..., self.left : self.right] += values


def axis_spans(length: int, window: int, stride: int, wrap: bool = False) -> list[tuple[int, int]]:
    """Start/end of each tile on one axis. Without wrap the last tile is truncated at the edge;
    with wrap, tiles start every `stride` around the circle and may run past the end."""
    if length <= window:
        return [(0, length)]
    if wrap:
        count = (length + stride - 1) // stride
        return [(k * stride, k * stride + window) for k in range(count)]
    count = (length - window + stride - 1) // stride + 1
    return [(k * stride, min(k * stride + window, length)) for k in range(count)]


def axis_profiles(length: int, window: int, stride: int, wrap: bool = False) -> list[torch.Tensor]:
    """Tent profile of each tile: ramps up over the overlap with the previous tile and down over
    the overlap with the next one; flat 1 at the canvas ends. Sums to 1 at every position."""
    spans = axis_spans(length, window, stride, wrap)
    circular = wrap and len(spans) > 1
    profiles = []
    for k, (start, end) in enumerate(spans):
        p = torch.ones(end - start, dtype=torch.float64)
        if k > 0 or circular:  # overlap with the previous tile
            overlap = max(0, min(end, _prev_end(spans, k, length)) - start)
            if overlap > 0:
                p[:overlap] = _ramp(overlap)
        if k < len(spans) - 1 or circular:  # overlap with the next tile
            overlap = max(0, end - _next_start(spans, k, length))
            if overlap > 0:
                p[-overlap:] = torch.minimum(p[-overlap:], _ramp(overlap).flip(0))
        profiles.append(p)
    # With stride < window / 2 (or a wrapped canvas that is not a multiple of the stride) a
    # position lies under three or more tiles; dividing by the coverage keeps the partition of
    # unity in every case (a no-op for the default half-window stride).
    total = torch.zeros(length, dtype=torch.float64)
    for (start, end), p in zip(spans, profiles):
        total.index_add_(0, torch.arange(start, end) % length, p)
    return [
        p / total[torch.arange(start, end) % length] for (start, end), p in zip(spans, profiles)
    ]


def _prev_end(spans, k: int, length: int) -> int:
    # Around the circle, the tile before the first one is the last, shifted back a full turn.
    return spans[k - 1][1] if k > 0 else spans[-1][1] - length


def _next_start(spans, k: int, length: int) -> int:
    return spans[k + 1][0] if k + 1 < len(spans) else spans[0][0] + length


def _ramp(n: int) -> torch.Tensor:
    """n values rising from near 0 to near 1 such that ramp + flipped ramp == 1."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def tile_views(
    height: int,
    width: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    wrap: bool = False,
) -> tuple[list[View], list[torch.Tensor]]:
    """Views over an (height, width) latent and each view's (1, 1, h, w) float32 weight;
    `wrap` makes the width circular."""
    wrap = wrap and width > window[1]
    rows = axis_spans(height, window[0], stride[0])
    cols = axis_spans(width, window[1], stride[1], wrap)
    row_p = axis_profiles(height, window[0], stride[0])
    col_p = axis_profiles(width, window[1], stride[1], wrap)
    views, weights = [], []
    for (top, bottom), rp in zip(rows, row_p):
        for (left, right), cp in zip(cols, col_p):
            views.append(View(top, bottom, left, right, width if wrap else 0))
            weights.append(torch.outer(rp, cp).float()[None, None])
    return views, weights
