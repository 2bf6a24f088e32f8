"""Retention: results older than the farm's retention, and uploads unused for 24 hours, are
deleted from storage (job records expire in Redis on their own)."""

from __future__ import annotations

import logging
import time

import redis

from farm.redis_keys import SWEEP_LOCK, asset_meta_key
from farm.retention import retention_seconds
from farm.storage import Storage
from schemas.defaults import ASSET_TTL

__all__ = ["SWEEP_LOCK", "sweep"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 3600
"""Seconds between two sweeps of the farm."""


def sweep(
    storage: Storage, client: redis.Redis, *, retention_days: float, now: float | None = None
) -> dict[str, int]:
    """Delete expired objects; answers how many of each kind went."""
    now = time.time() if now is None else now
    keep_results = retention_seconds(retention_days)
    deleted = {"results": 0, "assets": 0}
    base = storage.prefix.strip("/")
    for key, modified in list(storage.list_keys(base)):
        parts = (key[len(base) + 1 :] if base else key).split("/")
        if len(parts) != 3:
            continue
        tenant, folder, name = parts
        age = now - modified
        if folder == "assets":
            sha = name.split(".", 1)[0]
            # An asset still in use has its record refreshed at every use; none left, and old
            # enough: nobody has used it for 24 hours.
            if age > ASSET_TTL and not client.exists(asset_meta_key(tenant, sha)):
                storage.delete(key)
                deleted["assets"] += 1
        elif age > keep_results:
            storage.delete(key)
            deleted["results"] += 1
    if any(deleted.values()):
        log.info(
            "retention sweep deleted %(results)d result objects and %(assets)d assets", deleted
        )
    return deleted
