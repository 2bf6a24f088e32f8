"""Idempotency-Key (IETF httpapi draft): the first answer (status and body) is stored with the
key for 24 hours and replayed exactly, also when two requests race and after its jobs were
purged; queues nothing more; another body under the key is a 422."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import redis
from flask import Response

from api.errors import ApiError
from farm import lua
from farm.redis_keys import idempotency_key
from schemas.defaults import IDEMPOTENCY_TTL
from schemas.identifiers import IDEMPOTENCY_KEY_RULE, is_idempotency_key

__all__ = ["REPLAYED_HEADER", "Claim", "claim"]

WAIT_SECONDS = 30.0
"""How long a second request waits for the first one with its key to finish."""
POLL_SECONDS = 0.02
REPLAYED_HEADER = "Idempotent-Replayed"
"""Set to ``true`` on an answer that is the stored first answer, given again."""
STORED_HEADERS = ("Content-Type", "Location")
"""The headers of the first answer that are stored and replayed with its status and body."""

_RELEASE = lua.load("idempotency_release")
"""Deletes the claim only if it is still ours and still pending (a compare-and-delete)."""


@dataclass
class Claim:
    """Either ours to fill (`replay` None), or the stored first answer to give again."""

    client: redis.Redis
    key: str
    body_hash: str
    token: str
    replay: dict | None = None

    def complete(self, response: Response) -> None:
        """Store `response`, the first answer, exactly as sent, for the key's lifetime."""
        headers = {h: response.headers[h] for h in STORED_HEADERS if h in response.headers}
        value = {
            "hash": self.body_hash,
            "state": "done",
            "status": response.status_code,
            "headers": headers,
            "body": response.get_data(as_text=True),
        }
        self.client.set(self.key, json.dumps(value), keepttl=True)

    def release(self) -> None:
        """Give the key up after an answer that is not stored (an error): a retry runs anew."""
        self.client.eval(_RELEASE, 1, self.key, self.token)

    def replayed(self) -> Response:
        """The stored first answer: its status, body and headers, marked as a replay. It never
        looks at the jobs, which may have changed or been purged since."""
        assert self.replay is not None
        stored = self.replay
        response = Response(stored["body"], status=stored["status"], headers=stored["headers"])
        response.headers[REPLAYED_HEADER] = "true"
        return response


def claim(client: redis.Redis, tenant: str, route: str, key: str, body: bytes) -> Claim:
    """Claim `key` for this request, or wait for the request that holds it and replay it."""
    if not is_idempotency_key(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}",
            [{"loc": ["headers", "Idempotency-Key"], "msg": f"must be {IDEMPOTENCY_KEY_RULE}"}],
        )
    digest = hashlib.sha256(key.encode()).hexdigest()
    redis_key = idempotency_key(tenant, route, digest)
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
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body in the last 24 "
                "hours: use a new key for a new request",
                [{"loc": ["headers", "Idempotency-Key"], "msg": "reused with another body"}],
            )
        if stored["state"] == "done":
            return Claim(client, redis_key, body_hash, token, replay=stored)
        if time.monotonic() > deadline:
            raise ApiError(
                409,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed: retry later",
            )
        time.sleep(POLL_SECONDS)
