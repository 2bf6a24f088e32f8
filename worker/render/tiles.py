"""Tiling of the latent canvas into views, with tent weights that form a partition of unity."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class View:
    """A window [top:bottom, left:right] of the latent canvas."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


def axis_spans(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Start/end of each tile on one axis; the last tile is truncated at the canvas edge."""
    if length <= window:
        return [(0, length)]
    count = (length - window + stride - 1) // stride + 1
    return [(k * stride, min(k * stride + window, length)) for k in range(count)]


def axis_profiles(length: int, window: int, stride: int) -> list[torch.Tensor]:
    """Tent profile of each tile: ramps up over the overlap with the previous tile and down over
    the overlap with the next one; flat 1 at the canvas ends. Sums to 1 at every position."""
    spans = axis_spans(length, window, stride)
    profiles = []
    for k, (start, end) in enumerate(spans):
        p = torch.ones(end - start, dtype=torch.float64)
        if k > 0:  # overlap with the previous tile
            overlap = spans[k - 1][1] - start
            if overlap > 0:
                p[:overlap] = _ramp(overlap)
        if k < len(spans) - 1:  # overlap with the next tile
            overlap = end - spans[k + 1][0]
            if overlap > 0:
                p[-overlap:] = torch.minimum(p[-overlap:], _ramp(overlap).flip(0))
        profiles.append(p)
    # With stride < window / 2 a position lies under three or more tiles; dividing by the
    # coverage keeps the partition of unity for every stride (a no-op for the default half).
    total = torch.zeros(length, dtype=torch.float64)
    for (start, end), p in zip(spans, profiles):
        total[start:end] += p
    return [p / total[start:end] for (start, end), p in zip(spans, profiles)]


def _ramp(n: int) -> torch.Tensor:
    """n values rising from near 0 to near 1 such that ramp + flipped ramp == 1."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def tile_views(
    height: int, width: int, window: tuple[int, int], stride: tuple[int, int]
) -> tuple[list[View], list[torch.Tensor]]:
    """Views over an (height, width) latent and each view's (1, 1, h, w) float32 weight."""
    rows = axis_spans(height, window[0], stride[0])
    cols = axis_spans(width, window[1], stride[1])
    row_p = axis_profiles(height, window[0], stride[0])
    col_p = axis_profiles(width, window[1], stride[1])
    views, weights = [], []
    for (top, bottom), rp in zip(rows, row_p):
        for (left, right), cp in zip(cols, col_p):
            views.append(View(top, bottom, left, right))
            weights.append(torch.outer(rp, cp).float()[None, None])
    return views, weights
