"""Object keys: where a job's files and a tenant's uploads live in storage, and what a key may
hold (tenant names, job ids and hashes are checked, so no key leads elsewhere)."""

from __future__ import annotations

import re

from schemas.formats import EXTENSIONS, OUTPUT_FORMATS
from schemas.identifiers import JOB_ID_RE, SHA256_RE, TENANT_RE

__all__ = [
    "ASSET_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "asset_key",
    "job_object_key",
    "norm_prefix",
]

IMAGE_EXTENSIONS = frozenset(OUTPUT_FORMATS) | frozenset(EXTENSIONS.values())
"""An image's name ends in its format (``jpeg``, as uploads are named) or its file extension
(``jpg``, as results are named)."""
ASSET_EXTENSIONS = IMAGE_EXTENSIONS | {"json"}
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} for an object key: {value!r}")
    return value


def norm_prefix(prefix: str) -> str:
    """``"a/b/"``, ``"/a/b"`` and ``"a/b"`` all give ``"a/b"``; ``""`` stays ``""``."""
    text = prefix.strip("/")
    for part in text.split("/") if text else []:
        if part in (".", "..") or not _PREFIX_PART.fullmatch(part):
            raise ValueError(f"invalid storage prefix {prefix!r}: use letters, digits, . _ - and /")
    return text


def _join(prefix: str, *parts: str) -> str:
    return "/".join([p for p in [norm_prefix(prefix)] if p] + list(parts))


def job_object_key(prefix: str, tenant: str, job_id: str, name: str) -> str:
    """``<prefix>/<tenant>/<job id>/<name>``, name being ``image.<ext>`` or ``job.json``."""
    stem, _, ext = name.partition(".") if isinstance(name, str) else ("", "", "")
    if name != "job.json" and not (stem == "image" and ext in IMAGE_EXTENSIONS):
        raise ValueError(
            f"invalid object name {name!r}: use job.json or "
            f"image.<{'|'.join(sorted(IMAGE_EXTENSIONS))}>"
        )
    owner = _check(TENANT_RE, tenant, "tenant")
    return _join(prefix, owner, _check(JOB_ID_RE, job_id, "job id"), name)


def asset_key(prefix: str, tenant: str, sha256: str, ext: str) -> str:
    """``<prefix>/<tenant>/assets/<sha256>.<ext>``."""
    if ext not in ASSET_EXTENSIONS:
        raise ValueError(f"invalid asset extension {ext!r}: use one of {sorted(ASSET_EXTENSIONS)}")
    sha = _check(SHA256_RE, sha256, "sha256 (64 lowercase hex digits)")
    return _join(prefix, _check(TENANT_RE, tenant, "tenant"), "assets", f"{sha}.{ext}")
