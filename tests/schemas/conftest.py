"""Fixtures for the schemas tests: small images as data URIs and a valid base spec."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from schemas import ValidationContext

W, H = 128, 64


def _uri(image: Image.Image, fmt: str = "PNG", mime: str | None = None, **save: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    mime = mime or f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def to_uri() -> Callable[..., str]:
    """Encode a Pillow image as a data URI: ``to_uri(img, "PNG", mime=None, **save_args)``."""
    return _uri


@pytest.fixture
def box_mask() -> Callable[..., str]:
    """A grayscale PNG mask URI, white inside ``box=(x0, y0, x1, y1)``, black elsewhere."""

    def make(
        width: int = W, height: int = H, box: tuple[int, int, int, int] = (0, 0, 32, 32)
    ) -> str:
        arr = np.zeros((height, width), dtype=np.uint8)
        x0, y0, x1, y1 = box
        arr[y0:y1, x0:x1] = 255
        return _uri(Image.fromarray(arr))

    return make


@pytest.fixture
def base_spec(box_mask: Callable[..., str]) -> Callable[..., dict[str, Any]]:
    """A valid `regions` spec dict (128x64, two regions), with top-level overrides."""

    def make(**overrides: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": "regions",
            "width": W,
            "height": H,
            "background": {"prompt": "clear deep blue sky"},
            "regions": [
                {"prompt": "summer mountains", "mask": box_mask(box=(0, 0, 64, 64))},
                {"prompt": "a red balloon", "mask": box_mask(box=(64, 0, 128, 32))},
            ],
        }
        spec.update(overrides)
        return spec

    return make


@pytest.fixture
def ctx() -> ValidationContext:
    """Default limits, no model check, no DNS lookups (tests never touch the network)."""
    return ValidationContext(resolve_webhook_hosts=False)
