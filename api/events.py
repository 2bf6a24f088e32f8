"""Server-Sent Events for one job: status and progress from the job's event log in Redis, then
the final job; every event has an id, and a client that reconnects with `Last-Event-ID` gets
every event it missed before the live ones."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context

from api.auth import still_admitted
from api.state import state
from api.urls import job_result_url
from farm.records import EventLog, to_public
from farm.redis_conn import redis_errors
from schemas.identifiers import is_event_id
from schemas.job import FINAL_STATUSES

__all__ = ["KEEPALIVE_SECONDS", "RETRY_MS", "stream"]

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
RECHECK_SECONDS = 5.0
"""The record is re-read this often, in case it ended or was purged without an event."""
WAIT_MS = 5000
"""Milliseconds one read of the event log waits for the next event (an event ends the wait at
once; under the Redis client's 10 s socket timeout)."""
RETRY_MS = 1000
"""Sent as the stream's `retry:`: milliseconds a client waits before it reconnects."""


def _event(name: str, data: Any, event_id: str) -> str:
    text = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {text}\n\n"


def _position(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def resume_point(last_event_id: str | None, log: EventLog) -> str | None:
    """Where a client that saw `last_event_id` resumes in `log`; None when it cannot (no id,
    an id this job's log never gave, or one whose successors were dropped from a full log):
    it gets the snapshot of a new client instead."""
    if last_event_id is None or not is_event_id(last_event_id.strip()):
        return None
    seen = _position(last_event_id.strip())
    if seen > _position(log.last):
        return None
    if log.trimmed and seen < _position(log.first):
        return None
    return f"{seen[0]}-{seen[1]}"


def stream(job_id: str, tenant: str) -> Response:
    """The events of `job_id`: for a new client, the job's status and progress now, then each
    event as it happens; a client that connects after the end gets the final job at once."""
    records = state().records
    result_url = job_result_url(job_id)
    last_event_id = request.headers.get("Last-Event-ID")
    admitted = still_admitted()

    def with_preview(entries: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
        """The log keeps progress without its preview: the newest one gets the record's."""
        for k in range(len(entries) - 1, -1, -1):
            event_id, name, data = entries[k]
            if name != "progress":
                continue
            now = records.progress(job_id)
            if now and "preview" in now and {**data, "preview": now["preview"]} == now:
                entries[k] = (event_id, name, now)
            break
        return entries

    def generate() -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        at_start = records.event_log(job_id, tenant)
        record = at_start.record
        if record is None:
            return
        cursor = resume_point(last_event_id, at_start)
        ending = record["status"] in FINAL_STATUSES
        if cursor is None:  # a new client: what the job is now, then what happens next
            cursor = at_start.last
            if ending:
                yield _event("job", to_public(record, result_url=result_url), cursor)
                return
            yield _event("status", {"status": record["status"]}, cursor)
            if record.get("progress"):
                yield _event("progress", json.loads(record["progress"]), cursor)
        last_sent = last_check = time.monotonic()
        while True:
            # Reading the log from the last id sent is gap-free: nothing falls between the
            # backlog and the live events, and nothing is sent twice.
            entries = records.events_after(job_id, cursor, block_ms=None if ending else WAIT_MS)
            for event_id, name, data in with_preview(entries):
                cursor = event_id
                if name == "status" and data.get("status") in FINAL_STATUSES:
                    ending = True
                    break
                yield _event(name, data, event_id)
            now = time.monotonic()
            if entries:
                last_sent = now
            if ending:
                record = records.get(job_id, tenant)
                if record is not None:  # None: purged while we watched
                    yield _event("job", to_public(record, result_url=result_url), cursor)
                return
            if now - last_check > RECHECK_SECONDS:
                last_check = now
                if not admitted():  # its key was removed or replaced: the stream ends
                    return
                record = records.get(job_id, tenant)
                if record is None:
                    return
                ending = record["status"] in FINAL_STATUSES  # then read what is left, and end
            if now - last_sent > KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = now

    def guarded() -> Iterator[str]:
        # Redis going away ends the stream: the client reconnects with the last id it got.
        try:
            yield from generate()
        except redis_errors as exc:
            log.warning(
                "events stream ended: Redis did not answer (%s)", exc, extra={"job_id": job_id}
            )

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(guarded()), mimetype="text/event-stream", headers=headers)
