"""Mask-centering for bootstrapping: roll each region's copy so its mask's box is centred."""

from __future__ import annotations

import torch


def bbox_center_shifts(masks: torch.Tensor) -> list[tuple[int, int]]:
    """For (P, 1, h, w) masks: per region (dy, dx) = centre of the box of pixels > 0 minus the
    view centre, centre = (lo + hi + 1) // 2. An empty mask gets (0, 0) (its weight is 0 anyway;
    the reference rolled it by half the view for nothing)."""
    shifts = []
    h, w = masks.shape[-2:]
    for m in masks:
        rows = torch.nonzero(m.reshape(h, w).amax(dim=1) > 0).flatten()
        cols = torch.nonzero(m.reshape(h, w).amax(dim=0) > 0).flatten()
        if rows.numel() == 0 or cols.numel() == 0:
            shifts.append((0, 0))
            continue
        cy = (int(rows[0]) + int(rows[-1]) + 1) // 2
        cx = (int(cols[0]) + int(cols[-1]) + 1) // 2
        shifts.append((cy - h // 2, cx - w // 2))
    return shifts


def roll_each(x: torch.Tensor, shifts: list[tuple[int, int]], sign: int) -> torch.Tensor:
    """Circularly roll x[p] by sign * shifts[p] on the last two axes (sign -1 centres, +1 undoes)."""
    if all(s == (0, 0) for s in shifts):
        return x
    return torch.stack(
        [xi.roll(shifts=(sign * dy, sign * dx), dims=(-2, -1)) for xi, (dy, dx) in zip(x, shifts)]
    )
