"""Server-Sent Events for one job: progress and status from Redis pub/sub, then the final job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, stream_with_context, url_for

from api.state import state
from farm.records import events_channel, to_public
from schemas.job import FINAL_STATUSES

__all__ = ["KEEPALIVE_SECONDS", "stream"]

KEEPALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
RECHECK_SECONDS = 5.0
"""The record is re-read this often, in case an event was missed (a Redis reconnect)."""


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream(job_id: str, tenant: str) -> Response:
    """The events of `job_id`; a client that connects after the end gets the final job at once."""
    st = state()
    result_url = url_for("jobs.result", job_id=job_id, _external=True)

    def final_or_none() -> dict[str, Any] | None:
        """The final job; {} when the record is gone (purged while we watched); None: going."""
        record = st.records.get(job_id, tenant)
        if record is None:
            return {}
        if record["status"] in FINAL_STATUSES:
            return to_public(record, result_url=result_url)
        return None

    def generate() -> Iterator[str]:
        pubsub = st.redis.pubsub(ignore_subscribe_messages=True)
        # Subscribe before reading the record: an event between the two is not lost.
        pubsub.subscribe(events_channel(job_id))
        try:
            record = st.records.get(job_id, tenant)
            if record is None:
                return
            if record["status"] in FINAL_STATUSES:
                yield _event("job", to_public(record, result_url=result_url))
                return
            yield _event("status", {"status": record["status"]})
            if record.get("progress"):
                yield _event("progress", json.loads(record["progress"]))
            last_sent = last_check = time.monotonic()
            while True:
                message = pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is not None and message["type"] == "message":
                    payload = json.loads(message["data"])
                    name, data = payload["event"], payload["data"]
                    if name == "status" and data.get("status") in FINAL_STATUSES:
                        final = final_or_none()
                        if final is not None:
                            if final:
                                yield _event("job", final)
                            return
                    yield _event(name, data)
                    last_sent = now
                if now - last_check > RECHECK_SECONDS:
                    last_check = now
                    final = final_or_none()
                    if final is not None:
                        if final:
                            yield _event("job", final)
                        return
                if now - last_sent > KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    last_sent = now
        finally:
            pubsub.close()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(generate()), mimetype="text/event-stream", headers=headers)
