"""Image formats: each output format's file extension, content type and file suffixes, defined
once for the API, the workers, storage and the CLI."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "OUTPUT_FORMATS",
    "PILLOW_NAMES",
    "SUFFIX_FORMATS",
    "OutputFormat",
]

OutputFormat = Literal["png", "webp", "jpeg"]
"""The image formats a job can ask for (``output.format``); also those an upload may be in."""
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

EXTENSIONS: dict[str, str] = {"png": "png", "webp": "webp", "jpeg": "jpg"}
"""File extension of each format: a result's storage key (``image.<ext>``) and file names."""
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
"""The MIME type of each format, as stored, served and accepted for uploads."""
PILLOW_NAMES: dict[str, str] = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}
"""Pillow's name of each format (`Image.save(format=...)`, `sniff_format`)."""
SUFFIX_FORMATS: dict[str, str] = {
    **{f".{ext}": fmt for fmt, ext in EXTENSIONS.items()},
    **{f".{fmt}": fmt for fmt in OUTPUT_FORMATS},
}
"""The format a file suffix names (``.jpg`` and ``.jpeg`` both name jpeg), for `-o OUT`."""
