"""SpecError, the one exception for invalid input, and its pydantic-error converter."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

__all__ = ["Detail", "Loc", "SpecError", "details_from_validation_error", "format_loc"]

Loc = Sequence[str | int]
"""A JSON path into the request body: keys as strings, list indices as integers."""

Detail = dict[str, Any]
"""One problem: ``{"loc": [...], "msg": "..."}``."""

# pydantic-core puts schema tags into `loc` where a value went through a union, a wrapper
# validator or a dict key ("function-after[...]", "nullable[int]", "[key]"). A client wants the
# path in its own body, so these go.
# Model names appear the same way (a union of models is tagged by class name).
_TAG = re.compile(r"^(\[key\]|[a-z][a-z0-9_-]*\[.*\]|[A-Z][A-Za-z0-9]*)$")
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "bytes"})

# Messages that read better in a client's terms than pydantic's defaults.
_MESSAGES = {
    "extra_forbidden": "unknown field: it is not part of this schema (check its spelling)",
    "missing": "field required",
    "finite_number": "must be a finite number: NaN and infinity are not allowed",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "bool_type": "must be true or false",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")
_SHOULD = re.compile(r"^[A-Z][a-z]* should ")


class SpecError(ValueError):
    """Input that parses but is invalid: a 422 to a client, exit code 2 on the command line.

    `details` lists every problem as ``{"loc": [...], "msg": "..."}`` where `loc` is the JSON
    path of the offending value in the request body (``["regions", 2, "mask"]``).
    """

    code: ClassVar[str] = "invalid_spec"

    def __init__(self, details: Iterable[Mapping[str, Any]] | str, *, loc: Loc = ()) -> None:
        if isinstance(details, str):
            details = [{"loc": list(loc), "msg": details}]
        self.details: list[Detail] = [
            {"loc": list(d.get("loc", ())), "msg": str(d["msg"])} for d in details
        ]
        super().__init__(self.details)

    def __str__(self) -> str:
        lines = []
        for detail in self.details:
            where = format_loc(detail["loc"])
            lines.append(f"{where}: {detail['msg']}" if where else detail["msg"])
        return "\n".join(lines) if lines else "invalid input"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.details,))


def format_loc(loc: Loc) -> str:
    """Render a loc as a dotted path: ``["regions", 2, "mask"]`` -> ``regions.2.mask``."""
    return ".".join(str(part) for part in loc)


_NOT_WALKED = object()


def _is_tag(part: str) -> bool:
    return bool(_TAG.match(part)) or part in _TYPE_TAGS


def _clean_loc(loc: Sequence[str | int], error_type: str, root: Any) -> list[str | int]:
    """Drop schema tags from `loc`, keeping every part that is a key or index of the input.

    With the input at hand (`root`), a part is kept exactly when the input has it: that is
    exact even for a client's key that looks like a tag ("Red", "str"). Where the input cannot
    be walked (no root, or a non-JSON object), tags are recognised by their shape.
    """
    cleaned: list[str | int] = []
    node = root
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        # The last part of a missing field is not in the input, but it is the field's name.
        if i == last and error_type == "missing":
            cleaned.append(part)
            continue
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
                cleaned.append(part)
            continue  # not in the input: a tag
        user_key = (i == last and error_type == "extra_forbidden") or (
            i < last and loc[i + 1] == "[key]"
        )
        if isinstance(part, str) and not user_key and _is_tag(part):
            continue
        if (
            isinstance(node, list | tuple)
            and isinstance(part, int)
            and -len(node) <= part < len(node)
        ):
            node = node[part]
        else:
            node = _NOT_WALKED
        cleaned.append(part)
    return cleaned


def _clean_msg(error: Mapping[str, Any]) -> str:
    error_type = error.get("type", "")
    if error_type in _MESSAGES:
        return _MESSAGES[error_type]
    msg = str(error.get("msg", "invalid value"))
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    # "Input should be ...", "String should have ...", "List should have ...": say "must".
    return _SHOULD.sub("must ", msg, count=1)


def details_from_validation_error(exc: ValidationError, data: Any = _NOT_WALKED) -> list[Detail]:
    """Turn every error of a pydantic `ValidationError` into a ``{"loc", "msg"}`` detail.

    Pass the validated input as `data` where you have it: the locs are then exact.
    """
    details: list[Detail] = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = _clean_loc(error["loc"], error["type"], data)
        details.append({"loc": loc, "msg": _clean_msg(error)})
    return details
