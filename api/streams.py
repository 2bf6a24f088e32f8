"""The per-tenant cap on open event streams: each open stream holds a lease in Redis."""

from __future__ import annotations

import logging
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from flask import Response, request

from api.errors import ApiError
from api.events import KEEPALIVE_SECONDS
from api.state import state
from farm import lua
from farm.redis_conn import redis_errors
from farm.redis_keys import streams_key

__all__ = ["LEASE_SECONDS", "hold", "streams_key"]

log = logging.getLogger(__name__)

RENEW_SECONDS = KEEPALIVE_SECONDS / 2
"""A stream renews its lease at the first chunk it sends this long after the last renewal: an
idle one at each heartbeat, so renewals never stop while it is open."""
LEASE_SECONDS = 4 * KEEPALIVE_SECONDS
"""A lease not renewed for this long is dropped: the slots of an API process that was killed
(and so never released them) come back after at most this long."""

# One sorted set per tenant (farm/redis_keys.py streams_key): member = one stream's slot id,
# score = its lease's expiry in Redis server time (ms), so API hosts with different clocks agree.
_ACQUIRE = lua.load("server_now", "stream_acquire")
_RENEW = lua.load("server_now", "stream_renew")
_LEASE_MS = int(LEASE_SECONDS * 1000)


def hold(tenant: str, response: Response) -> Response:
    """`response`, an event stream of `tenant`, holding one of the tenant's slots while it is
    open: the slot goes back when the stream ends or its client is gone. A tenant whose slots
    are all taken gets a 429 instead."""
    st = state()
    client, key, slot = st.redis, streams_key(tenant), uuid.uuid4().hex
    cap = st.settings.max_streams_per_tenant
    try:
        acquired = client.eval(_ACQUIRE, 1, key, cap, _LEASE_MS, slot)
    except BaseException:
        response.close()  # the stream never started: let it go inside this request
        raise
    if not acquired:
        response.close()
        raise ApiError(
            429,
            "too_many_streams",
            f"tenant {tenant!r} already has {cap} event streams open, the most the farm allows "
            "(REGIONFARM_MAX_STREAMS_PER_TENANT): close one, or retry once one of its jobs "
            "has ended",
            headers={"Retry-After": str(int(KEEPALIVE_SECONDS))},
        )
    response.response = _Held(client, key, slot, response.response, request.environ)
    return response


def _hang_up_watch(environ: dict[str, Any]) -> Any:
    """Under gunicorn's gevent worker, a greenlet that ends this request's handler as soon as
    its client hangs up: the stream then ends (and gives its slot back) at once rather than at
    its next write. None elsewhere (Flask's server): there the next heartbeat finds it out."""
    sock = environ.get("gunicorn.socket")
    monkey = sys.modules.get("gevent.monkey")
    if sock is None or monkey is None or not monkey.is_module_patched("socket"):
        return None
    if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
        return None  # an HTTP/2 connection carries other streams too
    import gevent
    from gevent.socket import wait_read

    handler = gevent.getcurrent()

    def watch() -> None:
        # An events client sends nothing after its request: the socket turns readable when
        # it hangs up (EOF or reset). Anything else (a pipelined request) ends the watch.
        try:
            wait_read(sock.fileno())
            gone = sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        except ValueError:  # a TLS socket refuses a peek: its next write finds the hang-up
            gone = False
        if gone:
            handler.kill(block=False)

    return gevent.spawn(watch)


class _Held:
    """A stream's chunks, renewing its lease as they pass; closing it (the server does, when
    the stream ends or its client is gone) closes the stream and gives the slot back."""

    def __init__(
        self, client: redis.Redis, key: str, slot: str, chunks: Iterable, environ: dict
    ) -> None:
        self.client, self.key, self.slot = client, key, slot
        self.chunks, self.environ = chunks, environ
        self.iterator: Iterator | None = None
        self.renewed = time.monotonic()
        self.released = False
        self.watcher: Any = None

    def __iter__(self) -> _Held:
        return self

    def __next__(self) -> object:
        if self.iterator is None:  # the server has started sending: it will close us
            self.iterator = iter(self.chunks)
            self.watcher = _hang_up_watch(self.environ)
        chunk = next(self.iterator)
        now = time.monotonic()
        if now - self.renewed >= RENEW_SECONDS:
            self.renewed = now
            try:
                kept = self.client.eval(_RENEW, 1, self.key, _LEASE_MS, self.slot)
            except redis_errors as exc:  # the lease may lapse; the stream goes on
                log.warning("could not renew an event stream's lease: %s", exc)
            else:
                if not kept:
                    # Its slot ran out: end the stream, so that a tenant never holds more than
                    # its cap; the client resumes with Last-Event-ID when a slot is free.
                    log.warning("an event stream's lease ran out: ending the stream")
                    self.released = True
                    raise StopIteration
        return chunk

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.kill(block=False)
        try:
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()
        finally:
            if not self.released:
                self.released = True
                try:
                    self.client.zrem(self.key, self.slot)
                except redis_errors as exc:  # the lease runs out by itself
                    log.warning("could not give back an event stream's slot: %s", exc)
