"""How long the farm keeps a finished job: its record in Redis and its result in storage."""

from __future__ import annotations

__all__ = ["DAY_SECONDS", "retention_seconds"]

DAY_SECONDS = 86400


def retention_seconds(retention_days: float) -> int:
    """REGIONFARM_RETENTION_DAYS in whole seconds: how long a finished job's record and its
    result are kept (the record's Redis TTL, the sweep's age limit)."""
    return round(retention_days * DAY_SECONDS)
