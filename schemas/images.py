"""Decoding and checking of input images (masks, backgrounds, palettes) before any pixel work."""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from schemas.errors import Loc, SpecError
from schemas.identifiers import ASSET_ID_PREFIX

__all__ = [
    "ASSET_FORMATS",
    "DATA_URI_TYPES",
    "AssetReader",
    "decode_image",
    "decode_image_bytes",
    "decode_mask",
    "encode_png_data_uri",
    "image_size",
    "mask_array",
    "sniff_format",
]

AssetReader = Callable[[str], bytes]
"""Returns the stored bytes of an uploaded asset by its id (the part after ``asset:``)."""

DATA_URI_TYPES: dict[str, str] = {"image/png": "PNG", "image/webp": "WEBP"}
"""MIME types accepted in data URIs, with Pillow's name for each format."""

ASSET_FORMATS: tuple[str, ...] = ("PNG", "WEBP", "JPEG")
"""Pillow formats accepted for uploaded assets (a photo to start from is often a JPEG)."""

_FORMAT_NAMES = {"PNG": "PNG", "WEBP": "WebP", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP"}
_DATA_URI = re.compile(
    r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)$", re.DOTALL
)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# What Pillow raises for a file it cannot parse: UnidentifiedImageError and "truncated" are
# OSErrors; broken chunks give SyntaxError, ValueError, EOFError, zlib or struct errors.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error)


def sniff_format(data: bytes) -> str | None:
    """Name the image format from the file's magic number ("PNG", "WEBP", ...), or None."""
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def _from_data_uri(ref: str, loc: Loc) -> tuple[bytes, str]:
    match = _DATA_URI.match(ref)
    if match is None:
        raise SpecError("malformed data URI: expected data:image/png;base64,...", loc=loc)
    mime = match["mime"].strip().lower()
    if mime not in DATA_URI_TYPES:
        raise SpecError(
            f"image type {mime or '(none)'!r} is not accepted in a data URI: "
            "send image/png or image/webp",
            loc=loc,
        )
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if "base64" not in params:
        raise SpecError("data URI must be base64-encoded (data:image/png;base64,...)", loc=loc)
    try:
        # Clients often wrap long base64 lines; whitespace carries nothing.
        data = base64.b64decode("".join(match["payload"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise SpecError("data URI payload is not valid base64", loc=loc) from None
    declared = DATA_URI_TYPES[mime]
    actual = sniff_format(data)
    if actual != declared:
        found = _FORMAT_NAMES.get(actual or "", "") or "not a recognized image"
        raise SpecError(f"the data URI says {mime} but its bytes are {found}", loc=loc)
    return data, declared


def _from_asset(ref: str, loc: Loc, assets: AssetReader | None) -> tuple[bytes, str]:
    asset_id = ref[len(ASSET_ID_PREFIX) :]
    if not asset_id:
        raise SpecError("empty asset reference: expected asset:<id>", loc=loc)
    if assets is None:
        raise SpecError(
            "asset references (asset:<id>) need the API, which stores uploads: "
            "submit through the API, or inline the image as a data URI",
            loc=loc,
        )
    try:
        data = assets(asset_id)
    except SpecError as exc:
        raise SpecError([{"loc": list(loc), "msg": d["msg"]} for d in exc.details]) from None
    except (LookupError, FileNotFoundError):
        raise SpecError(
            f"unknown asset {ref!r}: upload it with POST /v1/assets (assets expire 24 hours "
            "after their last use)",
            loc=loc,
        ) from None
    fmt = sniff_format(data)
    if fmt not in ASSET_FORMATS:
        raise SpecError(f"asset {ref!r} is not a PNG, WebP or JPEG image", loc=loc)
    return data, fmt


def _read_ref(ref: object, loc: Loc, assets: AssetReader | None) -> tuple[bytes, str]:
    if not isinstance(ref, str):
        raise SpecError("must be a data URI or an asset reference (asset:<id>)", loc=loc)
    if ref.startswith(ASSET_ID_PREFIX):
        return _from_asset(ref, loc, assets)
    if ref[:5].lower() == "data:":
        return _from_data_uri(ref, loc)
    hint = " (URLs are not fetched)" if ref[:8].lower().startswith(("http:", "https:")) else ""
    raise SpecError(
        "must be a data URI (data:image/png;base64,...) or an asset reference (asset:<id>)" + hint,
        loc=loc,
    )


def _check_pixels(width: int, height: int, max_pixels: int, loc: Loc) -> None:
    if width * height > max_pixels:
        raise SpecError(
            f"image is {width}x{height} ({width * height} pixels), over the limit of "
            f"{max_pixels} pixels",
            loc=loc,
        )


def _open_lazy(data: bytes, fmt: str, max_pixels: int, loc: Loc) -> Image.Image:
    """Open `data` reading the header only, and refuse it if it claims too many pixels."""
    if fmt == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
        # The size sits at a fixed offset: refuse a bomb before Pillow looks at it at all.
        width, height = struct.unpack(">II", data[16:24])
        _check_pixels(width, height, max_pixels, loc)
    try:
        # Pillow's own bomb guard warns (or raises) past its global limit; under a farm's
        # larger max_pixels it must answer as a SpecError too, never as a stray warning.
        # catch_warnings is process-wide: the worst a thread race can do is leave this one
        # filter in place, which turns the same warning into the error caught here anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SpecError(f"image is over the limit of {max_pixels} pixels: {exc}", loc=loc) from None
    except _READ_ERRORS:
        raise SpecError(f"not a readable {_FORMAT_NAMES[fmt]} image", loc=loc) from None
    _check_pixels(img.width, img.height, max_pixels, loc)
    return img


def _load(img: Image.Image, loc: Loc) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SpecError(f"image is too large to decode: {exc}", loc=loc) from None
    except _READ_ERRORS:
        raise SpecError("image data is truncated or corrupt", loc=loc) from None
    return img


def decode_image_bytes(
    data: bytes, *, max_pixels: int, loc: Loc, formats: tuple[str, ...] = ASSET_FORMATS
) -> Image.Image:
    """Decode raw image bytes (an upload) of one of `formats`, checking the size first."""
    fmt = sniff_format(data)
    if fmt not in formats:
        names = ", ".join(_FORMAT_NAMES[f] for f in formats)
        raise SpecError(f"not an accepted image: send one of {names}", loc=loc)
    return _load(_open_lazy(data, fmt, max_pixels, loc), loc)


def decode_image(
    ref: str, *, max_pixels: int, loc: Loc, assets: AssetReader | None = None
) -> Image.Image:
    """Decode a data URI (PNG or WebP) or an ``asset:<id>`` into a loaded Pillow image.

    The size is read from the header and checked against `max_pixels` before any pixel is
    decoded. Every problem is a `SpecError` at `loc`.
    """
    data, fmt = _read_ref(ref, loc, assets)
    return _load(_open_lazy(data, fmt, max_pixels, loc), loc)


def image_size(
    ref: str, *, max_pixels: int, loc: Loc, assets: AssetReader | None = None
) -> tuple[int, int]:
    """Return ``(width, height)`` of an image reference, reading its header only."""
    data, fmt = _read_ref(ref, loc, assets)
    img = _open_lazy(data, fmt, max_pixels, loc)
    return img.width, img.height


def mask_array(img: Image.Image) -> np.ndarray:
    """Return the region mask of `img` as a bool HxW array: True where the value is above 0.5.

    The value is the alpha channel when the image has one (RGBA, LA, PA, or a palette or
    grayscale image with a transparent color), else its luminance, scaled to 0..1.
    """
    bands = img.getbands()
    if "A" in bands or "a" in bands:
        values = np.asarray(img.getchannel("A" if "A" in bands else "a"))
    elif "transparency" in img.info and img.mode in ("1", "L", "P", "RGB"):
        values = np.asarray(img.convert("RGBA").getchannel("A"))
    elif img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grayscale PNGs: Pillow's convert("L") would clip, not scale.
        return np.asarray(img, dtype=np.float64) / 65535.0 > 0.5
    else:
        values = np.asarray(img.convert("L"))
    # 8 bits: v / 255 > 0.5 exactly when v > 127; comparing integers skips a float copy.
    return values > 127


def decode_mask(
    ref: str,
    *,
    width: int | None,
    height: int | None,
    max_pixels: int,
    loc: Loc,
    assets: AssetReader | None = None,
) -> np.ndarray:
    """Decode a region mask and check it: exactly ``width x height`` and not empty.

    `width` or `height` None skips the size check (the canvas itself is invalid).
    """
    img = decode_image(ref, max_pixels=max_pixels, loc=loc, assets=assets)
    if width is not None and height is not None and img.size != (width, height):
        raise SpecError(
            f"mask is {img.width}x{img.height} but the canvas is {width}x{height}", loc=loc
        )
    mask = mask_array(img)
    if not mask.any():
        raise SpecError("mask is empty: no pixel is above 0.5", loc=loc)
    return mask


def encode_png_data_uri(image: np.ndarray | Image.Image) -> str:
    """Encode an image or array as a PNG data URI; the same input always gives the same bytes.

    A bool array becomes an 8-bit grayscale mask (0 or 255); a uint8 array of shape HxW,
    HxWx3 or HxWx4 becomes L, RGB or RGBA.
    """
    if isinstance(image, Image.Image):
        img = image
    else:
        arr = np.asarray(image)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        shape_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))
        if arr.dtype != np.uint8 or not shape_ok:
            raise TypeError(f"cannot encode an array of dtype {arr.dtype} and shape {arr.shape}")
        img = Image.fromarray(np.ascontiguousarray(arr))
    buf = io.BytesIO()
    # Fixed settings and no metadata chunks: the bytes depend on the pixels alone.
    img.save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
