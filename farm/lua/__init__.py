"""The farm's Redis Lua scripts, one per file in this folder (package data), read with
importlib.resources so that they travel with an installed package."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["load"]


@cache
def load(*names: str) -> str:
    """The text of the scripts `names` (file names without ``.lua``), joined in that order: a
    script that uses shared helpers names their file first."""
    folder = resources.files(__package__)
    return "\n".join(folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in names)
