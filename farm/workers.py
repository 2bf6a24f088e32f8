"""Worker heartbeats: each worker process says which model it serves, so the API can list
what is live. A heartbeat is a hash that expires unless it is refreshed."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import redis

from farm.redis_keys import WORKERS_KEY, worker_key

__all__ = ["HEARTBEAT_TTL", "WORKERS_KEY", "beat", "forget", "live_workers", "workers_per_model"]

HEARTBEAT_TTL = 30
"""Seconds a heartbeat stays live; workers refresh it every third of that."""


def beat(
    client: redis.Redis,
    name: str,
    model: str,
    info: Mapping[str, Any] | None = None,
    *,
    ttl: int = HEARTBEAT_TTL,
) -> None:
    """Record that worker `name` is alive and serves `model`."""
    record = {"name": name, "model": model, "seen": f"{time.time():.3f}"}
    record["info"] = json.dumps(dict(info or {}), separators=(",", ":"))
    pipe = client.pipeline()
    pipe.hset(worker_key(name), mapping=record)
    pipe.expire(worker_key(name), ttl)
    pipe.sadd(WORKERS_KEY, name)
    pipe.execute()


def forget(client: redis.Redis, name: str) -> None:
    """A worker that stops cleanly takes itself off the list at once."""
    pipe = client.pipeline()
    pipe.delete(worker_key(name))
    pipe.srem(WORKERS_KEY, name)
    pipe.execute()


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker with a live heartbeat: name, model, seen (unix time) and its info."""
    names = sorted(client.smembers(WORKERS_KEY))
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(worker_key(name))
    live, stale = [], []
    for name, record in zip(names, pipe.execute(), strict=True):
        if not record:
            stale.append(name)
            continue
        info = json.loads(record.get("info") or "{}")
        live.append(
            {
                "name": name,
                "model": record.get("model", ""),
                "seen": float(record.get("seen", 0)),
                "info": info,
            }
        )
    if stale:
        client.srem(WORKERS_KEY, *stale)
    return live


def workers_per_model(client: redis.Redis) -> Counter[str]:
    return Counter(w["model"] for w in live_workers(client))
