"""Palette label maps: which pixels of a painted image carry each listed color."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

__all__ = ["color_value", "label_map", "palette_masks"]


def color_value(color: str) -> int:
    """``"#rrggbb"`` -> the 24-bit integer 0xrrggbb."""
    return int(color.lstrip("#"), 16)


def label_map(img: Image.Image) -> np.ndarray:
    """Return the HxW int32 array of 0xrrggbb per pixel; -1 where the pixel is transparent.

    Transparent pixels (alpha at most half) belong to no color: an eraser in a paint program
    leaves them, whatever RGB they happen to hold.
    """
    rgba = np.asarray(img.convert("RGBA"), dtype=np.int32)
    labels = (rgba[..., 0] << 16) | (rgba[..., 1] << 8) | rgba[..., 2]
    labels[rgba[..., 3] <= 127] = -1
    return labels


def palette_masks(img: Image.Image, colors: Iterable[str]) -> dict[str, np.ndarray]:
    """Return, for each ``#rrggbb`` in `colors` (in order), the bool HxW mask of its pixels."""
    labels = label_map(img)
    return {color: labels == color_value(color) for color in colors}
