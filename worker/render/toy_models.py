"""The trained toy models shipped with the worker: `builtin:toy`, `builtin:toy-lcm-lora` and
`builtin:toy-xl`, trained on the toy world by `toy/train.py` (see docs/toy-models.md)."""

from __future__ import annotations

from pathlib import Path

from .checksums import SUMS_FILE
from .errors import ModelUnavailable

ASSET_DIR = Path(__file__).parent / "assets"
TOY_MODELS = {"toy": "toy", "toy-lcm-lora": "toy", "toy-xl": "toy-xl"}
"""Each shipped directory and the model whose training writes it."""


def toy_path(name: str) -> Path:
    """The shipped directory of a toy model (its weights are checked when it is loaded)."""
    path = ASSET_DIR / name
    if not (path / SUMS_FILE).is_file():
        raise ModelUnavailable(
            f"the toy model {name} is not in this installation ({path} holds no weights); "
            f"train it with `python toy/train.py {TOY_MODELS[name]}`"
        )
    return path
