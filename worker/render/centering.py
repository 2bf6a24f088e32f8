"""Mask-centering for bootstrapping: roll each region's copy so its mask's box is centred."""

from __future__ import annotations

import torch


def box_bounds(masks: torch.Tensor) -> torch.Tensor:
    """For (..., h, w) masks: (..., 4) long tensor of the box of pixels > 0, [top, bottom, left,
    right] with bottom and right inclusive, on the masks' device (no copy to the host). An
    empty mask gives [0, h - 1, 0, w - 1]; callers read only boxes of non-empty masks."""
    h, w = masks.shape[-2:]
    rows = (masks.amax(dim=-1) > 0).to(torch.uint8)  # (..., h)
    cols = (masks.amax(dim=-2) > 0).to(torch.uint8)  # (..., w)
    top, left = rows.argmax(dim=-1), cols.argmax(dim=-1)  # the first maximum
    bottom = h - 1 - rows.flip(-1).argmax(dim=-1)
    right = w - 1 - cols.flip(-1).argmax(dim=-1)
    return torch.stack([top, bottom, left, right], dim=-1)


def center_shift(box, size: tuple[int, int]) -> tuple[int, int]:
    """(dy, dx) = centre of a [top, bottom, left, right] box minus the view centre, where a
    centre is (lo + hi + 1) // 2."""
    top, bottom, left, right = (int(v) for v in box)
    h, w = size
    return ((top + bottom + 1) // 2 - h // 2, (left + right + 1) // 2 - w // 2)


def bbox_center_shifts(masks: torch.Tensor) -> list[tuple[int, int]]:
    """For (P, 1, h, w) masks: per region the shift that centres its box in the view. An empty
    mask gets (0, 0) (its weight is 0 anyway; the reference rolled it by half the view for
    nothing)."""
    size = tuple(masks.shape[-2:])
    flat = masks.reshape(masks.shape[0], *size)
    empty = (flat.flatten(1).amax(dim=1) <= 0).tolist()
    boxes = box_bounds(flat).tolist()
    return [(0, 0) if e else center_shift(b, size) for e, b in zip(empty, boxes)]


def roll_each(x: torch.Tensor, shifts: list[tuple[int, int]], sign: int) -> torch.Tensor:
    """Circularly roll x[p] by sign * shifts[p] on the last two axes (sign -1 centres, +1 undoes)."""
    if all(s == (0, 0) for s in shifts):
        return x
    return torch.stack(
        [xi.roll(shifts=(sign * dy, sign * dx), dims=(-2, -1)) for xi, (dy, dx) in zip(x, shifts)]
    )
