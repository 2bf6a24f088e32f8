"""Resumable events: ids on every event, `retry:`, a client that reconnects with Last-Event-ID
gets what it missed and then the live stream; the per-job event log in Redis is bounded, ends
with the job and is deleted by a purge."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from farm.records import EVENT_LOG_LENGTH, JobRecords
from farm.redis_keys import events_key, job_key, lease_key

PREVIEW = "data:image/jpeg;base64," + "A" * 4000


def parse_stream(text: str) -> list[dict[str, Any]]:
    """The blocks of an event stream as dicts: `id`, `event`, `data` (parsed), `retry`."""
    blocks = []
    for raw in text.replace("\r\n", "\n").split("\n\n"):
        block: dict[str, Any] = {}
        for line in raw.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            block[name] = json.loads(value) if name == "data" else value
        if block:
            blocks.append(block)
    return blocks


def events_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in blocks if "event" in b]


def position(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


@pytest.fixture
def live_api(app) -> Iterator[str]:
    """The app on a real HTTP server on loopback."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


class SseConnection:
    """One events request over a real socket, read block by block as the server sends them."""

    def __init__(self, base: str, path: str, headers: dict[str, str]) -> None:
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()

    def blocks(self) -> Iterator[dict[str, Any]]:
        lines: list[str] = []
        for raw in self.response:
            line = raw.decode().rstrip("\r\n")
            if line:
                lines.append(line)
                continue
            parsed = parse_stream("\n".join(lines))
            lines = []
            yield from parsed

    def kill(self) -> None:
        """Drop the connection as a client that dies (or loses its network) does."""
        self.response.close()
        self.conn.close()


@pytest.fixture
def records(r) -> JobRecords:
    return JobRecords(r, retention_seconds=3600)


def _running_job(client, auth, make_spec, records: JobRecords) -> str:
    """A job that this test plays the worker of: queued through the API, then started."""
    jid = client.post("/v1/jobs", json=make_spec(), headers=auth("acme")).json["id"]
    assert records.start(jid, "w@t", holder="t:1", lease_seconds=60, max_attempts=3) == "running"
    return jid


# -- the acceptance: killed mid-render, resumed ---------------------------------------------


def test_a_client_killed_mid_render_resumes_with_every_progress_step_exactly_once(
    live_api, client, auth, make_spec, worker, r, wait_for
):
    total = 8
    spec = make_spec(metadata={"test_steps": total, "test_step_seconds": 0.15})
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    path = f"/v1/jobs/{jid}/events"
    first = SseConnection(live_api, path, auth("acme"))
    worker.start()
    seen: list[dict[str, Any]] = []
    for block in first.blocks():
        if "event" in block:
            seen.append(block)
        if sum(e["event"] == "progress" for e in seen) == 2:
            break
    first.kill()
    # While no client listens, the render goes on: these events are missed, then replayed.
    wait_for(
        lambda: json.loads(r.hget(job_key(jid), "progress") or "{}").get("step", 0) >= 4,
        what="the render to go on while no client listens",
    )
    second = SseConnection(live_api, path, {**auth("acme"), "Last-Event-ID": seen[-1]["id"]})
    resumed = [b for b in second.blocks() if "event" in b]
    second.kill()

    events = seen + resumed
    steps = [e["data"]["step"] for e in events if e["event"] == "progress"]
    assert steps == list(range(1, total + 1))
    assert events[-1]["event"] == "job" and events[-1]["data"]["status"] == "succeeded"
    assert [e["event"] for e in events].count("job") == 1
    # Every event carries an id; after the snapshot they rise strictly, across the reconnect.
    assert all(e.get("id") for e in events)
    live = [position(e["id"]) for e in events[1:]]
    assert live == sorted(set(live))
    # Nothing in the job's log was left out of what the client got.
    logged = [eid for eid, _ in r.xrange(events_key(jid), min="(" + events[0]["id"])]
    assert [e["id"] for e in events[1:]] == logged


def test_every_stream_starts_with_retry_and_every_event_has_an_id(client, auth, spec):
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    client.delete(f"/v1/jobs/{jid}", headers=auth("acme"))
    blocks = parse_stream(
        client.get(f"/v1/jobs/{jid}/events", headers=auth("acme")).get_data(as_text=True)
    )
    assert int(blocks[0]["retry"]) > 0 and "event" not in blocks[0]
    [job] = events_of(blocks)
    assert job["event"] == "job" and job["data"]["status"] == "canceled"
    assert position(job["id"]) > (0, 0)


def test_a_resume_replays_status_and_progress_in_order_and_ends_with_the_job(
    client, auth, make_spec, records
):
    jid = _running_job(client, auth, make_spec, records)
    for step in (1, 2, 3):
        records.set_progress(jid, {"step": step, "total": 3, "eta_seconds": 0.5})
    records.finish(jid, "failed", error={"code": "internal", "message": "test"})
    url = f"/v1/jobs/{jid}/events"
    full = records.redis.xrange(events_key(jid))
    names = [f["event"] for _, f in full]
    assert names == ["status", "progress", "progress", "progress", "status"]
    after_first_progress = full[1][0]
    answer = client.get(url, headers={**auth("acme"), "Last-Event-ID": after_first_progress})
    events = events_of(parse_stream(answer.get_data(as_text=True)))
    steps = [(e["event"], e["data"].get("step")) for e in events]
    assert steps == [("progress", 2), ("progress", 3), ("job", None)]
    assert events[-1]["data"]["status"] == "failed" and events[-1]["id"] == full[-1][0]
    # A client that already had the final job (its id) gets it again, and nothing else.
    again = client.get(url, headers={**auth("acme"), "Last-Event-ID": full[-1][0]})
    [job] = events_of(parse_stream(again.get_data(as_text=True)))
    assert job["event"] == "job" and job["data"]["status"] == "failed"


@pytest.mark.parametrize("last_id", ["", "banana", "1-2-3", "99999999999999-0", "-1"])
def test_an_unknown_or_bad_last_event_id_gets_the_snapshot_of_a_new_client(
    client, auth, make_spec, records, last_id
):
    jid = _running_job(client, auth, make_spec, records)
    records.set_progress(jid, {"step": 2, "total": 4, "eta_seconds": 0.5})
    records.finish(jid, "succeeded", result={"key": "k", "format": "png"})
    answer = client.get(
        f"/v1/jobs/{jid}/events", headers={**auth("acme"), "Last-Event-ID": last_id}
    )
    assert answer.status_code == 200
    [job] = events_of(parse_stream(answer.get_data(as_text=True)))
    assert job["event"] == "job" and job["data"]["status"] == "succeeded"


def test_a_new_client_gets_the_snapshot_with_the_logs_last_id(client, auth, make_spec, records):
    jid = _running_job(client, auth, make_spec, records)
    records.set_progress(jid, {"step": 1, "total": 4, "eta_seconds": 0.5, "preview": PREVIEW})
    response = client.get(f"/v1/jobs/{jid}/events", headers=auth("acme"), buffered=False)
    chunks = iter(response.response)
    text = ""
    while text.count("event: ") < 2:
        text += next(chunks).decode()
    status, progress = events_of(parse_stream(text))
    [(last, _)] = records.redis.xrevrange(events_key(jid), count=1)
    assert (status["event"], status["data"], status["id"]) == (
        "status",
        {"status": "running"},
        last,
    )
    assert progress["event"] == "progress" and progress["id"] == last
    assert progress["data"]["preview"] == PREVIEW  # the record's progress, preview and all
    records.finish(jid, "canceled")
    rest = "".join(c.decode() for c in chunks)
    [job] = events_of(parse_stream(rest))
    assert job["event"] == "job" and position(job["id"]) > position(last)


def test_live_progress_keeps_its_preview_but_the_log_does_not(client, auth, make_spec, records):
    jid = _running_job(client, auth, make_spec, records)
    records.set_progress(jid, {"step": 1, "total": 2, "eta_seconds": 0.5, "preview": PREVIEW})
    records.set_progress(jid, {"step": 2, "total": 2, "eta_seconds": 0.0, "preview": PREVIEW})
    for _, fields in records.redis.xrange(events_key(jid)):
        assert "preview" not in fields["data"]
    assert json.loads(records.redis.hget(job_key(jid), "progress"))["preview"] == PREVIEW
    records.finish(jid, "canceled")
    answer = client.get(f"/v1/jobs/{jid}/events", headers={**auth("acme"), "Last-Event-ID": "0-0"})
    events = events_of(parse_stream(answer.get_data(as_text=True)))
    progress = [e for e in events if e["event"] == "progress"]
    # Replayed: steps 1 and 2; only the newest, which is what the record holds, has a preview.
    assert [p["data"]["step"] for p in progress] == [1, 2]
    assert "preview" not in progress[0]["data"] and progress[1]["data"]["preview"] == PREVIEW


def test_another_tenants_job_is_a_404_whatever_the_last_event_id(client, auth, make_spec, records):
    jid = _running_job(client, auth, make_spec, records)
    answer = client.get(
        f"/v1/jobs/{jid}/events", headers={**auth("globex"), "Last-Event-ID": "0-0"}
    )
    assert answer.status_code == 404


# -- the event log ------------------------------------------------------------------------


def test_the_log_is_bounded_and_keeps_the_newest_events(client, auth, make_spec, records):
    jid = _running_job(client, auth, make_spec, records)
    extra = 40
    for step in range(1, EVENT_LOG_LENGTH + extra + 1):
        records.set_progress(jid, {"step": step, "total": 2000, "preview": PREVIEW})
    key = events_key(jid)
    assert records.redis.xlen(key) == EVENT_LOG_LENGTH
    entries = records.redis.xrange(key)
    steps = [json.loads(f["data"])["step"] for _, f in entries]
    # 1 status and 1040 progress events were added: the status and the first 40 are gone.
    assert steps == list(range(extra + 1, EVENT_LOG_LENGTH + extra + 1))
    # Bounded in bytes too: no preview in it, so well under 100 bytes an event.
    assert records.redis.memory_usage(key) < EVENT_LOG_LENGTH * 100
    # A client whose last event was dropped from the full log gets the snapshot, not a gap.
    records.finish(jid, "canceled")
    answer = client.get(f"/v1/jobs/{jid}/events", headers={**auth("acme"), "Last-Event-ID": "0-0"})
    [job] = events_of(parse_stream(answer.get_data(as_text=True)))
    assert job["event"] == "job" and job["data"]["progress"]["step"] == EVENT_LOG_LENGTH + extra


def test_the_log_expires_with_the_job_record(client, auth, make_spec, records):
    jid = _running_job(client, auth, make_spec, records)
    records.set_progress(jid, {"step": 1, "total": 2})
    assert records.redis.ttl(events_key(jid)) == -1  # kept while the job is active
    assert records.redis.ttl(job_key(jid)) == -1
    assert client.delete(f"/v1/jobs/{jid}", headers=auth("acme")).status_code == 202
    records.finish(jid, "canceled")  # the worker stops: it ends canceled
    record_ttl, log_ttl = records.redis.ttl(job_key(jid)), records.redis.ttl(events_key(jid))
    assert record_ttl > 0 and abs(record_ttl - log_ttl) <= 1


def test_a_queued_job_canceled_has_its_log_expire_with_it(client, auth, spec, r):
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    assert client.delete(f"/v1/jobs/{jid}", headers=auth("acme")).json["status"] == "canceled"
    [(_, fields)] = r.xrange(events_key(jid))
    assert (fields["event"], json.loads(fields["data"])) == ("status", {"status": "canceled"})
    record_ttl, log_ttl = r.ttl(job_key(jid)), r.ttl(events_key(jid))
    assert record_ttl > 0 and abs(record_ttl - log_ttl) <= 1


def test_purge_deletes_the_log(client, auth, make_spec, records):
    jid = _running_job(client, auth, make_spec, records)
    records.set_progress(jid, {"step": 1, "total": 1})
    records.finish(jid, "succeeded", result={"key": "", "format": "png"})
    assert records.redis.exists(events_key(jid))
    assert client.delete(f"/v1/jobs/{jid}?purge=true", headers=auth("acme")).status_code == 204
    assert not records.redis.exists(events_key(jid)) and not records.redis.exists(job_key(jid))
    assert client.get(f"/v1/jobs/{jid}/events", headers=auth("acme")).status_code == 404


def test_a_requeued_job_logs_its_return_to_the_queue_and_its_new_attempt(
    client, auth, make_spec, records
):
    jid = _running_job(client, auth, make_spec, records)
    records.set_progress(jid, {"step": 1, "total": 2})
    records.redis.delete(lease_key(jid))  # its worker died: the lease ran out
    assert records.requeue(jid, max_attempts=3) == "requeued"
    assert records.start(jid, "w2@t", holder="t:2", lease_seconds=60, max_attempts=3) == "running"
    logged = [(f["event"], json.loads(f["data"])) for _, f in records.redis.xrange(events_key(jid))]
    assert logged == [
        ("status", {"status": "running"}),
        ("progress", {"step": 1, "total": 2}),
        ("status", {"status": "queued"}),
        ("status", {"status": "running"}),
    ]


def test_starting_a_job_that_already_ended_says_so_and_ending_at_start_says_that(
    client, auth, make_spec, records: JobRecords
) -> None:
    """A worker sends the webhook of a job that ends at its start; a job that had ended before
    (a queued job canceled through the API, which sent the webhook) must not get a second one,
    so the two answers differ."""
    jid = client.post("/v1/jobs", json=make_spec(), headers=auth("acme")).json["id"]
    assert client.delete(f"/v1/jobs/{jid}", headers=auth("acme")).json["status"] == "canceled"
    assert records.start(jid, "w@t", holder="t:1", lease_seconds=60, max_attempts=3) == (
        "ended:canceled"
    )
    running = _running_job(client, auth, make_spec, records)
    assert client.delete(f"/v1/jobs/{running}", headers=auth("acme")).json["status"] == "canceling"
    # A start that finds the cancel waiting (its worker died before it saw it) ends the job.
    status = records.start(running, "w2@t", holder="t:2", lease_seconds=60, max_attempts=3)
    assert status == "canceled"


def test_a_stream_ends_when_its_key_is_removed_from_the_keys_file(
    live_api, client, auth, make_spec, keys_file
) -> None:
    """Removing a key refuses new requests at once; a stream opened with it must not go on for
    as long as its job runs (hours): it ends at its next recheck."""
    import time

    jid = client.post("/v1/jobs", json=make_spec(), headers=auth("acme")).json["id"]
    conn = SseConnection(live_api, f"/v1/jobs/{jid}/events", auth("acme"))
    blocks = conn.blocks()
    assert next(blocks).get("retry") and next(blocks)["event"] == "status"
    keys_file.write_text('{"tenants": {}}')  # every key removed: the farm admits nobody
    started = time.monotonic()
    assert list(blocks) == []  # the stream ends, with no more events
    assert time.monotonic() - started < 20
    conn.kill()
