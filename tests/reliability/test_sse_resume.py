"""SSE resume: clients watching renders have their connections cut again and again mid-render,
stay away a moment (so events happen while no one listens), and reconnect with Last-Event-ID.
Each stream must end with every event of the job's log exactly once, in order: every progress
step, then the final job."""

from __future__ import annotations

import http.client
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from cli.client import SseCursor, iter_sse
from farm.redis_keys import events_key

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

STEP_MS = 300
"""Per render step: over the runner's 0.25 s between two progress events, so every step is one."""
CUT_EVERY = 2
"""A client's connection is cut after every this many progress events."""
MAX_CONNECTIONS = 60
"""Connections one watcher may open before it counts as stuck."""


@dataclass
class Watch:
    """What one client saw of one job, across all its connections."""

    job_id: str
    events: list[tuple[str, str, Any]] = field(default_factory=list)
    """(id, name, data) of each event, in the order they came."""
    statuses: list[int] = field(default_factory=list)
    """The HTTP status of each connection."""
    snapshot: int = 0
    """How many of the first events were the first connection's snapshot (no Last-Event-ID)."""
    error: str = ""

    @property
    def resumes(self) -> int:
        return max(0, len(self.statuses) - 1)


def _watch(url: str, headers: dict[str, str], job_id: str, seed: int) -> Watch:
    """Follow one job's events as a client whose network keeps dropping: cut after every
    CUT_EVERY progress events, away for a random moment, back with Last-Event-ID."""
    rng = random.Random(seed)
    host, port = url.removeprefix("http://").split(":")
    watch, cursor = Watch(job_id), SseCursor()
    while len(watch.statuses) < MAX_CONNECTIONS:
        sent = {**headers, "Accept": "text/event-stream"}
        if cursor.last_event_id is not None:
            sent["Last-Event-ID"] = cursor.last_event_id
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("GET", f"/v1/jobs/{job_id}/events", headers=sent)
            response = conn.getresponse()
            watch.statuses.append(response.status)
            if response.status != 200:
                time.sleep(0.5)
                continue
            progress = 0
            for name, data in iter_sse(response, cursor):
                watch.events.append((cursor.last_event_id or "", name, data))
                if len(watch.statuses) == 1 and cursor.last_event_id == watch.events[0][0]:
                    watch.snapshot = len(watch.events)  # same id as the first: the snapshot
                if name == "job":
                    return watch
                progress += name == "progress"
                if progress == CUT_EVERY:
                    break  # the connection drops
        except (OSError, http.client.HTTPException) as exc:
            watch.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(rng.uniform(0.0, 0.8))  # away while the render goes on
    watch.error = watch.error or f"no final job after {MAX_CONNECTIONS} connections"
    return watch


def _position(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def _check(watch: Watch, logged: list[str], steps: int) -> tuple[Counter[str], int, int]:
    """The problems of one watch, and its missed and duplicated events: after the snapshot,
    the ids it got must be those of the job's log, each once, in order."""
    problems: Counter[str] = Counter()
    got = [event_id for event_id, _, _ in watch.events[watch.snapshot :]]
    since = _position(watch.events[0][0]) if watch.snapshot else (0, 0)
    after = [event_id for event_id in logged if _position(event_id) > since]
    missed = len(set(after) - set(got))
    duplicated = len(got) - len(set(got))
    if got != after:
        problems["events differ from the log"] += 1
    progress = [d["step"] for _, n, d in watch.events if n == "progress"]
    if progress != list(range(1, steps + 1)):
        problems["progress steps not 1..total once each"] += 1
    if not watch.events or watch.events[-1][1] != "job":
        problems["no final job"] += 1
    elif watch.events[-1][2]["status"] != "succeeded":
        problems[f"ended {watch.events[-1][2]['status']}"] += 1
    if watch.error:
        problems["stream error"] += 1
    return problems, missed, duplicated


def test_sse_clients_cut_mid_render_resume_with_every_event_once(
    make_farm, spec_factory, record_row, rel
):
    jobs, steps, workers = rel.pick(4, 12), rel.pick(6, 10), rel.pick(2, 3)
    farm = make_farm(step_ms=STEP_MS)
    started = time.monotonic()
    farm.start_workers(workers)
    ids = [farm.submit(spec_factory(seed=i, steps=steps)) for i in range(jobs)]
    assert all(ids), farm.counted.by_status
    headers = farm.headers("acme")
    with ThreadPoolExecutor(jobs) as pool:
        watches = list(pool.map(lambda k: _watch(farm.url, headers, ids[k], k), range(jobs)))

    row = rel.Row("SSE resume", jobs)
    resumes = checked = 0
    for watch in watches:
        logged = [event_id for event_id, _ in farm.r.xrange(events_key(watch.job_id))]
        problems, missed, duplicated = _check(watch, logged, steps)
        row.failed.update(problems)
        row.lost += missed
        row.duplicated += duplicated
        row.succeeded += not problems and not missed and not duplicated
        resumes += watch.resumes
        checked += len(watch.events)
    statuses = Counter(s for w in watches for s in w.statuses)
    row.errors_5xx = farm.counted.errors_5xx + sum(n for s, n in statuses.items() if s >= 500)
    row.seconds = time.monotonic() - started
    row.notes = (
        f"{jobs} streams ({steps} steps each) resumed {resumes} times with Last-Event-ID, cut "
        f"after every {CUT_EVERY} progress events; {checked} events checked against the job "
        "logs; missed events in 'lost', repeated ones in 'duplicated'"
    )
    record_row(row)
    assert resumes >= jobs * (steps // CUT_EVERY - 1), row  # it did cut and resume mid-render
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert row.succeeded == jobs and not row.failed, (row, [w.error for w in watches])
    assert set(statuses) == {200}, statuses
