"""Server-made ids: job ids are ULIDs (time-ordered, so newest-first listing is a lex sort)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

from schemas.identifiers import JOB_ID_RE, is_job_id

__all__ = ["JOB_ID_RE", "is_job_id", "new_job_id", "now_rfc3339"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
# The pattern of a job id (and `is_job_id`) is defined once, in schemas.identifiers.

_lock = threading.Lock()
_last = (0, 0)  # (milliseconds, randomness) of the last id this process made


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_job_id() -> str:
    """A new ``job_<ULID>``; ids made by one process in one millisecond still sort in order."""
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:
            # Same millisecond (or the clock stepped back): count up from the last id instead
            # of drawing, so that ids keep their creation order within this process.
            ms, rand = last_ms, (last_rand + 1) % (1 << 80)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last = (ms, rand)
    return "job_" + _encode(ms, 10) + _encode(rand, 16)


def now_rfc3339() -> str:
    """The time now, RFC 3339 UTC with milliseconds: ``2026-11-26T04:47:15.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
