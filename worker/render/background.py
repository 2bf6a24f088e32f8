"""The three background cases of a `regions` job (docs/method.md, "Background cases"), decided
in one place for both methods."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from schemas import JobSpec

from .defaults import WHITE_BACKGROUND_PROMPT
from .inputs import JobInputs, image_pixels


@dataclass(frozen=True, eq=False)
class Background:
    """How a job's background is rendered. `prompt`: the background prompt, None when there is
    none; `negative`: its negative prompt; `pixels`: the fixed background, (1, 3, H, W) in
    [0, 1], None when nothing is fixed. A prompt with no fixed pixels is a region of its own."""

    prompt: str | None = None
    negative: str = ""
    pixels: torch.Tensor | None = None

    @property
    def is_region(self) -> bool:
        """The background prompt is denoised as a region (mask: what no region claims)."""
        return self.pixels is None and self.prompt is not None


def background_case(spec: JobSpec, inputs: JobInputs, unclaimed: bool) -> Background:
    """The background of a spec, one of three cases for kind `regions`:

    1. `background.image` set: a fixed background, the picture; `background.prompt` (or "")
       is kept for StreamMultiDiffusion's prompt-strength pull only.
    2. `background.prompt` only: the prompt is a region of its own, sampled first.
    3. neither, and `unclaimed` (some pixel no region claims, at some step): a fixed plain
       white background, with WHITE_BACKGROUND_PROMPT for the pull.

    Otherwise, and for kinds `image` and `panorama` (one region covering the canvas, whose
    prompt is the background prompt), there is no background: Background()."""
    if spec.kind != "regions":
        return Background()
    bg = spec.background
    if inputs.background is not None:
        pixels = image_pixels(inputs.background)
        return Background(bg.prompt or "", bg.negative_prompt or "", pixels)
    if bg is not None and bg.prompt:
        return Background(bg.prompt, bg.negative_prompt or "")
    if unclaimed:
        return Background(WHITE_BACKGROUND_PROMPT, "", torch.ones(1, 3, spec.height, spec.width))
    return Background()
