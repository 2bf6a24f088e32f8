"""Fidelity metrics of rendered pictures against the toy world's colors (numpy only, no torch).

A pixel "is" the color whose sRGB anchor is nearest (`world.nearest_color`), and a prompt asks
for the color `world.prompt_color` finds in it. `bench/fidelity.py` renders fixed layouts with
the toy models and reports these numbers; the tests check them on drawn pictures.

Masks are (H, W) bool arrays, images (H, W, 3) uint8. Pixels near a mask's edge are left out
(erosion by `margin` px): a soft transition there is wanted, not a fault. The canvas' own edge is
not a mask edge, so erosion treats the canvas as continuing past it.
"""

from __future__ import annotations

import numpy as np

from toy import world

DEFAULT_MARGIN = 8
"""Pixels: how far from a mask's edge a pixel must lie to be counted."""

_CHUNK = 1 << 18
"""Pixels per `nearest_color` call (its distance table is pixels x colors x 3 floats)."""


def color_labels(image: np.ndarray) -> np.ndarray:
    """(H, W) index into `world.COLOR_NAMES` of each pixel's nearest anchor, computed in chunks
    so a 768x1920 picture needs no gigabyte-sized distance table."""
    flat = np.asarray(image).reshape(-1, 3)
    out = np.empty(len(flat), dtype=np.int64)
    for start in range(0, len(flat), _CHUNK):
        out[start : start + _CHUNK] = world.nearest_color(flat[start : start + _CHUNK])
    return out.reshape(image.shape[:2])


def color_index(name: str) -> int:
    """The index of a color word in `world.COLOR_NAMES`."""
    return world.COLOR_NAMES.index(name)


def erode(mask: np.ndarray, margin: int) -> np.ndarray:
    """The pixels of `mask` whose whole (2 margin + 1)-px square neighbourhood is in the mask
    (Chebyshev distance >= margin + 1 from any outside pixel). Beyond the canvas the mask
    continues as at its edge (edge padding), so only mask edges erode, not the canvas edge.
    A box filter from cumulative sums: no scipy."""
    mask = np.asarray(mask, dtype=bool)
    if margin <= 0:
        return mask.copy()
    side = 2 * margin + 1
    padded = np.pad(mask.astype(np.int32), margin, mode="edge")
    sums = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int64)
    sums[1:, 1:] = padded.cumsum(0).cumsum(1)
    h, w = mask.shape
    window = (
        sums[side : side + h, side : side + w]
        - sums[:h, side : side + w]
        - sums[side : side + h, :w]
        + sums[:h, :w]
    )
    return window == side * side


def background_mask(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The pixels outside every region mask."""
    union = np.zeros(shape, dtype=bool)
    for mask in masks:
        union |= np.asarray(mask, dtype=bool)
    return ~union


def _share(labels: np.ndarray, area: np.ndarray, wanted: set[int]) -> float | None:
    """Share of the `area` pixels whose label is in `wanted`; None for an empty area."""
    count = int(area.sum())
    if count == 0:
        return None
    return float(np.isin(labels[area], list(wanted)).sum()) / count


def region_adherence(
    image: np.ndarray,
    masks: list[np.ndarray],
    prompts: list[str],
    background_prompt: str | None,
    margin: int = DEFAULT_MARGIN,
) -> list[float | None]:
    """Per region, then for the background: the share of its pixels at least `margin` px from
    its edge whose nearest anchor is its prompt's color. The background is every pixel outside
    all masks (its complement eroded the same way). None where the prompt names no color or no
    pixel lies that far inside.

    1.0 is a region painted entirely in its color; a region split half and half scores 0.5."""
    if len(masks) != len(prompts):
        raise ValueError(f"{len(masks)} masks but {len(prompts)} prompts: give one per region")
    labels = color_labels(image)
    areas = [erode(mask, margin) for mask in masks]
    areas.append(erode(background_mask(masks, labels.shape), margin))
    out: list[float | None] = []
    for area, prompt in zip(areas, [*prompts, background_prompt]):
        color = world.prompt_color(prompt) if prompt else None
        out.append(None if color is None else _share(labels, area, {color_index(color)}))
    return out


def leakage(
    image: np.ndarray,
    masks: list[np.ndarray],
    prompts: list[str],
    background_prompt: str | None = None,
    margin: int = DEFAULT_MARGIN,
) -> float | None:
    """The share of background pixels (outside every mask, at least `margin` px from the
    masks) that take one of the regions' colors: region prompts leaking into the rest of the
    canvas. The background prompt's own color is not counted even when a region shares it.
    None when no region names a color other than the background's, or no background pixel
    lies that far out."""
    labels = color_labels(image)
    own = world.prompt_color(background_prompt) if background_prompt else None
    colors = {world.prompt_color(p) for p in prompts} - {None, own}
    if not colors:
        return None
    area = erode(background_mask(masks, labels.shape), margin)
    return _share(labels, area, {color_index(c) for c in colors})


def placement(
    image: np.ndarray, mask: np.ndarray, object_color: str
) -> tuple[float | None, float | None]:
    """For an object prompted in a small region: the share of the picture's `object_color`
    pixels (nearest anchor) that lie inside `mask`, and the distance in px between their
    centroid and the mask's centroid. (None, None) when no pixel has that color: the object
    was not drawn at all."""
    labels = color_labels(image)
    mask = np.asarray(mask, dtype=bool)
    found = labels == color_index(object_color)
    count = int(found.sum())
    if count == 0:
        return None, None
    inside = float((found & mask).sum()) / count
    ys, xs = np.nonzero(found)
    my, mx = np.nonzero(mask)
    distance = float(np.hypot(ys.mean() - my.mean(), xs.mean() - mx.mean()))
    return inside, distance


def _column_jumps(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean absolute difference between neighbouring columns (axis 1) or rows (axis 0): entry
    k is the jump between line k and line k + 1, averaged over the other axis and channels."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    diffs = np.abs(np.diff(pixels, axis=axis))
    other = 0 if axis == 1 else 1
    return diffs.mean(axis=(other, 2))


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 1.0 if num == 0 else float("inf")


def seam_ratio(image: np.ndarray, borders: list[int], axis: int = 1) -> float | None:
    """Mean absolute jump across the given borders divided by the mean absolute jump between
    neighbouring columns (axis 1; rows for axis 0) everywhere else. A border b is the jump
    between columns b - 1 and b; borders at 0 or past the end are ignored. About 1: no seam;
    well above 1: the tiles show. None when no border lies inside the picture."""
    jumps = _column_jumps(image, axis)
    inside = sorted({b for b in borders if 0 < b < len(jumps) + 1})
    if not inside:
        return None
    at = np.zeros(len(jumps), dtype=bool)
    at[[b - 1 for b in inside]] = True
    if at.all():
        return None
    return _ratio(float(jumps[at].mean()), float(jumps[~at].mean()))


def wrap_seam_ratio(image: np.ndarray) -> float:
    """For a 360-degree panorama: the mean absolute jump between the last and the first column
    divided by the mean jump between neighbouring columns inside the picture. About 1: the ends
    meet seamlessly."""
    pixels = np.asarray(image, dtype=np.float64)
    wrap = float(np.abs(pixels[:, 0] - pixels[:, -1]).mean())
    return _ratio(wrap, float(_column_jumps(image, axis=1).mean()))
