"""The toy world: captioned 256 px pictures of colors, fills and shapes, generated from a seed.

It is the training data of the toy models (`toy/train.py`) and the yardstick of
`bench/fidelity.py`: every color has an sRGB anchor, and a pixel "is" the color whose anchor is
nearest. Only numpy here, so the measuring side needs no torch.

Captions:
- a plain fill: ``"red"`` or ``"a red background"``;
- a pattern: ``"red stripes"``, ``"red dots"``, ``"red checks"`` (the color on white; white's
  patterns are on black);
- an object on a fill: ``"a red circle on a blue background"`` (also ``square``, ``triangle``),
  at any position, 15 to 60 % of the side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NATIVE_SIZE = 256
"""Pixels: the side of every training picture, and the toy models' native size."""

COLORS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "yellow": (235, 210, 40),
    "blue": (40, 80, 200),
    "brown": (120, 70, 30),
    "orange": (240, 130, 30),
    "pink": (240, 150, 190),
    "purple": (130, 50, 160),
    "gray": (128, 128, 128),
}
"""Each color word and its sRGB anchor."""
COLOR_NAMES = tuple(COLORS)
ANCHORS = np.array([COLORS[name] for name in COLOR_NAMES], dtype=np.float32)
PATTERNS = ("stripes", "dots", "checks")
SHAPES = ("circle", "square", "triangle")
JITTER = 12
"""Shades jitter by up to this much per channel around their anchor."""
OBJECT_SIDE = (0.15, 0.6)
"""An object's size, as a share of the picture's side."""


@dataclass(frozen=True)
class Scene:
    """What one picture shows; `caption()` says it in words."""

    kind: str  # "plain", "pattern" or "object"
    color: str  # the fill's color (the pattern's color for a pattern)
    wording: int = 0  # which of the plain fill's two captions
    pattern: str = ""
    shape: str = ""
    shape_color: str = ""
    center: tuple[float, float] = (0.5, 0.5)  # (x, y), shares of the side
    side: float = 0.0  # share of the side

    def caption(self) -> str:
        if self.kind == "plain":
            return (
                self.color
                if self.wording == 0
                else f"{article(self.color)} {self.color} background"
            )
        if self.kind == "pattern":
            return f"{self.color} {self.pattern}"
        return (
            f"{article(self.shape_color)} {self.shape_color} {self.shape} on "
            f"{article(self.color)} {self.color} background"
        )


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def pattern_ground(color: str) -> str:
    """The color a pattern is drawn on."""
    return "black" if color == "white" else "white"


def random_scene(rng: np.random.Generator) -> Scene:
    """One scene: 35 % plain fills, 20 % patterns, 45 % objects."""
    draw = rng.random()
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    if draw < 0.35:
        return Scene("plain", color, wording=int(rng.integers(2)))
    if draw < 0.55:
        return Scene("pattern", color, pattern=PATTERNS[rng.integers(len(PATTERNS))])
    others = [name for name in COLOR_NAMES if name != color]
    side = float(rng.uniform(*OBJECT_SIDE))
    center = tuple(float(rng.uniform(side / 2, 1 - side / 2)) for _ in range(2))
    return Scene(
        "object",
        color,
        shape=SHAPES[rng.integers(len(SHAPES))],
        shape_color=others[rng.integers(len(others))],
        center=center,
        side=side,
    )


def _shade(rng: np.random.Generator, color: str) -> np.ndarray:
    jitter = rng.integers(-JITTER, JITTER + 1, size=3)
    return np.clip(np.array(COLORS[color]) + jitter, 0, 255).astype(np.uint8)


def shape_mask(shape: str, center: tuple[float, float], side: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a circle, square or (upward) triangle."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy, half = center[0] * size, center[1] * size, side * size / 2
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # A triangle with its apex up: the half-width grows from 0 at the top to `half` at the base.
    inside_rows = np.abs(dy) <= half
    return inside_rows & (np.abs(dx) <= (dy + half) / 2)


def draw(scene: Scene, rng: np.random.Generator, size: int = NATIVE_SIZE) -> np.ndarray:
    """The scene as an (size, size, 3) uint8 picture; shades and pattern phases from `rng`."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    if scene.kind == "pattern":
        image[:] = _shade(rng, pattern_ground(scene.color))
        period = int(rng.integers(size // 10, size // 4))
        ys, xs = np.mgrid[0:size, 0:size]
        xs, ys = xs + int(rng.integers(period)), ys + int(rng.integers(period))
        if scene.pattern == "stripes":
            on = (xs % period) < period // 2
        elif scene.pattern == "checks":
            on = ((xs // (period // 2)) + (ys // (period // 2))) % 2 == 0
        else:  # dots
            cx, cy = xs % period - period / 2, ys % period - period / 2
            on = cx * cx + cy * cy <= (period * 0.3) ** 2
        image[on] = _shade(rng, scene.color)
        return image
    image[:] = _shade(rng, scene.color)
    if scene.kind == "object":
        image[shape_mask(scene.shape, scene.center, scene.side, size)] = _shade(
            rng, scene.shape_color
        )
    return image


def sample(seed: int, count: int, size: int = NATIVE_SIZE) -> tuple[np.ndarray, list[str]]:
    """`count` pictures (count, size, size, 3) and their captions, the same for the same seed."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(count):
        scene = random_scene(rng)
        images[i] = draw(scene, rng, size)
        captions.append(scene.caption())
    return images, captions


def nearest_color(pixels: np.ndarray) -> np.ndarray:
    """Index into COLOR_NAMES of the nearest anchor of each pixel (any leading shape, RGB last)."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    distances = ((flat[:, None, :] - ANCHORS[None, :, :]) ** 2).sum(-1)
    return distances.argmin(-1).reshape(pixels.shape[:-1])


def prompt_color(prompt: str) -> str | None:
    """The color a prompt asks its region (or its background) to be, if the prompt names one:
    the fill of a plain or object caption, the pattern's color."""
    words = prompt.lower().replace(",", " ").split()
    if "on" in words:  # "a red circle on a blue background": the region is mostly blue
        words = words[words.index("on") + 1 :]
    named = [word for word in words if word in COLORS]
    return named[0] if named else None
