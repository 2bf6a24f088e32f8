"""Image files with no per-run data in them, so the same render gives the same bytes."""

from __future__ import annotations

import io

from PIL import Image

__all__ = ["encode_image"]


def encode_image(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    """PNG, WebP or JPEG bytes. No text chunks, EXIF or timestamps are written."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality, method=4, exact=True)
    elif fmt == "jpeg":
        image.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    else:
        raise ValueError(f"output format must be png, webp or jpeg, got {fmt!r}")
    return buf.getvalue()
