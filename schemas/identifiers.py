"""The farm's identifiers (tenant, job id, asset id, idempotency key): one pattern each."""

from __future__ import annotations

import re
from typing import TypeGuard

__all__ = [
    "ASSET_ID_PATTERN",
    "ASSET_ID_PREFIX",
    "ASSET_ID_RE",
    "EVENT_ID_PATTERN",
    "EVENT_ID_RE",
    "IDEMPOTENCY_KEY_PATTERN",
    "IDEMPOTENCY_KEY_RE",
    "IDEMPOTENCY_KEY_RULE",
    "JOB_ID_PATTERN",
    "JOB_ID_RE",
    "MAX_IDEMPOTENCY_KEY_CHARS",
    "SHA256_PATTERN",
    "SHA256_RE",
    "TENANT_PATTERN",
    "TENANT_RE",
    "TENANT_RULE",
    "asset_id",
    "check_tenant_name",
    "field_pattern",
    "is_asset_id",
    "is_event_id",
    "is_idempotency_key",
    "is_job_id",
    "is_sha256",
    "is_tenant",
]

# Every check below is a full match (`re.fullmatch`). Never `^...$` with `.match`: in Python,
# `$` also matches before a trailing newline, so "acme\n" would pass as a tenant name.

TENANT_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
"""Tenant names become parts of storage keys (``<prefix>/<tenant>/...``) and TOML bare keys."""
TENANT_RULE = (
    f"1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit "
    f"(the pattern {TENANT_PATTERN})"
)
"""The tenant name rule in words, for error messages."""

JOB_ID_PATTERN = r"job_[0-9A-HJKMNP-TV-Z]{26}"
"""``job_`` and a ULID in Crockford base32 (no I, L, O, U), made by the server only."""

SHA256_PATTERN = r"[0-9a-f]{64}"
"""A sha256 as 64 lowercase hex digits (API key hashes, uploaded assets)."""

ASSET_ID_PREFIX = "asset:"
ASSET_ID_PATTERN = ASSET_ID_PREFIX + SHA256_PATTERN
"""An uploaded asset: ``asset:`` and the sha256 of its bytes."""

MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_KEY_PATTERN = rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}"
"""An ``Idempotency-Key`` header value: printable ASCII (what a structured-field string holds)."""
IDEMPOTENCY_KEY_RULE = f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"

EVENT_ID_PATTERN = r"\d{1,20}-\d{1,20}"
"""An event's ``id:`` in a job's event stream (and a client's ``Last-Event-ID``): the Redis
Stream entry id ``<milliseconds>-<sequence>`` of the event in the job's log."""

TENANT_RE = re.compile(TENANT_PATTERN)
JOB_ID_RE = re.compile(JOB_ID_PATTERN)
SHA256_RE = re.compile(SHA256_PATTERN)
ASSET_ID_RE = re.compile(ASSET_ID_PATTERN)
IDEMPOTENCY_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
EVENT_ID_RE = re.compile(EVENT_ID_PATTERN)


def field_pattern(pattern: str) -> str:
    """`pattern` anchored for pydantic's ``Field(pattern=...)`` and JSON Schema: pydantic's
    default (Rust) regex engine and ECMA-262 both read ``$`` as the end of the text only."""
    return f"^(?:{pattern})$"


def _full(regex: re.Pattern[str], value: object) -> TypeGuard[str]:
    return isinstance(value, str) and regex.fullmatch(value) is not None


def is_tenant(value: object) -> TypeGuard[str]:
    return _full(TENANT_RE, value)


def is_job_id(value: object) -> TypeGuard[str]:
    return _full(JOB_ID_RE, value)


def is_sha256(value: object) -> TypeGuard[str]:
    return _full(SHA256_RE, value)


def is_asset_id(value: object) -> TypeGuard[str]:
    return _full(ASSET_ID_RE, value)


def is_idempotency_key(value: object) -> TypeGuard[str]:
    return _full(IDEMPOTENCY_KEY_RE, value)


def is_event_id(value: object) -> TypeGuard[str]:
    return _full(EVENT_ID_RE, value)


def asset_id(sha256: str) -> str:
    """The id of the asset whose bytes have this sha256: ``asset:<sha256>``."""
    if not is_sha256(sha256):
        raise ValueError(f"not a sha256 (64 lowercase hex digits): {sha256!r}")
    return ASSET_ID_PREFIX + sha256


def check_tenant_name(name: object) -> str:
    """`name` when it is a valid tenant name; else a ValueError that says the rule."""
    if not is_tenant(name):
        raise ValueError(f"tenant name {name!r} is not allowed: use {TENANT_RULE}")
    return name
