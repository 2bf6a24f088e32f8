"""Writes the settings reference table of deploy/README.md from ``schemas.Settings``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"

if str(ROOT) not in sys.path:  # run from a checkout without an installed package
    sys.path.insert(0, str(ROOT))

from pydantic_core import PydanticUndefined

from schemas import Settings


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if value in ("", [], (), {}):
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table() -> str:
    """The Markdown table: one row per field of Settings, in the class's order."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | default | description |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        variable = f"{prefix}{name}".upper()
        rows.append(f"| `{variable}` | {_default(field)} | {_cell(field.description or '')} |")
    return "\n".join(rows)


def render(text: str) -> str:
    """`text` with the table between the markers replaced (the markers stay)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN} ... {END} are missing or out of order")
    head, tail = text[: start + len(BEGIN)], text[end:]
    return f"{head}\n{table()}\n{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", type=Path, default=README, help="the file to update")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file's table is out of date"
    )
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    try:
        updated = render(current)
    except ValueError as exc:
        print(f"{args.readme}: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if updated != current:
            print(
                f"{args.readme}: the settings table is out of date; run "
                "`.venv/bin/python deploy/gen_config_reference.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    if updated != current:
        args.readme.write_text(updated, encoding="utf-8")
        print(f"{args.readme}: settings table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
