"""Connections to the farm's Redis (records, events, flags), made one way everywhere."""

from __future__ import annotations

import redis

__all__ = ["RedisUnavailable", "connect", "redis_errors"]

CONNECT_TIMEOUT = 3.0
"""Seconds to wait for a connection before the broker counts as down."""
SOCKET_TIMEOUT = 10.0
"""Seconds to wait for one command's answer."""

redis_errors = (redis.ConnectionError, redis.TimeoutError)
"""What a Redis that is down or unreachable raises."""


class RedisUnavailable(Exception):
    """The broker does not answer; nothing was changed."""


UNBOUNDED = 2**31
"""The pool size of a client made without `max_connections` (redis-py 8 would make it 100): the
API holds one connection per waiting event stream, and gunicorn's --connections bounds those."""


def connect(url: str, *, max_connections: int | None = None) -> redis.Redis:
    """A client that decodes answers to text, with short timeouts."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
        max_connections=max_connections or UNBOUNDED,
    )
