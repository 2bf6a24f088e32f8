"""Idempotency-Key (IETF httpapi draft): the same key and body within 24 hours give the first
answer and queue nothing, also when two requests race; another body under the key is a 422."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import redis

from api.errors import ApiError
from schemas.defaults import IDEMPOTENCY_TTL

__all__ = ["MAX_KEY_CHARS", "Claim", "claim"]

MAX_KEY_CHARS = 255
WAIT_SECONDS = 30.0
"""How long a second request waits for the first one with its key to finish."""
POLL_SECONDS = 0.02

# Deletes the claim only if it is still ours and still pending (a compare-and-delete).
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Claim:
    """Either ours to fill (`replay` None), or the stored first answer to give again."""

    client: redis.Redis
    key: str
    body_hash: str
    token: str
    replay: dict | None = None

    def complete(self, status: int, job_ids: list[str]) -> None:
        value = {"hash": self.body_hash, "state": "done", "status": status, "ids": job_ids}
        self.client.set(self.key, json.dumps(value), keepttl=True)

    def release(self) -> None:
        """Give the key up after an answer that is not stored (an error): a retry runs anew."""
        self.client.eval(_RELEASE, 1, self.key, self.token)


def claim(client: redis.Redis, tenant: str, route: str, key: str, body: bytes) -> Claim:
    """Claim `key` for this request, or wait for the request that holds it and replay it."""
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ApiError(
            400, "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable characters",
        )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()
    redis_key = f"rf:idem:{tenant}:{route}:{digest}"
    body_hash = hashlib.sha256(body).hexdigest()
    token = uuid.uuid4().hex
    pending = json.dumps({"hash": body_hash, "state": "pending", "token": token})
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        if client.set(redis_key, pending, nx=True, ex=IDEMPOTENCY_TTL):
            return Claim(client, redis_key, body_hash, token)
        raw = client.get(redis_key)
        if raw is None:
            continue  # the holder released it between our two calls: try to claim again
        stored = json.loads(raw)
        if stored["hash"] != body_hash:
            raise ApiError(
                422, "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body in the last 24 "
                "hours: use a new key for a new request",
                [{"loc": ["headers", "Idempotency-Key"], "msg": "reused with another body"}],
            )  # fmt: skip
        if stored["state"] == "done":
            return Claim(client, redis_key, body_hash, token, replay=stored)
        if time.monotonic() > deadline:
            raise ApiError(
                409, "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed: retry later",
            )  # fmt: skip
        time.sleep(POLL_SECONDS)
