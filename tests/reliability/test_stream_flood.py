"""A stream flood from one tenant: acme asks for event streams far beyond its cap, all at once,
then drops some and asks again, while globex submits jobs and watches each one to its end.
acme gets 429 `too_many_streams` beyond the cap and its slots back when it hangs up; globex gets
every job and every stream; nobody gets a 5xx."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from farm import redis_keys

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

UNSERVED_MODEL = "sd15-lcm"
"""A model of the models file that no worker of the test farm serves: acme's job stays queued,
so its streams stay open."""
WATCHERS = 4
"""globex's jobs watched at once (each on a stream of its own)."""


class Flood:
    """acme's stream requests: the ones let in stay open (their line iterators are kept; dropping
    one would close its connection) until `drop` or `close`."""

    def __init__(self, farm: Any, job_id: str) -> None:
        self.farm, self.job_id = farm, job_id
        self.lock = threading.Lock()
        self.open: list[tuple[requests.Response, Any]] = []
        self.answers: Counter[int] = Counter()

    def ask(self) -> None:
        url = f"{self.farm.url}/v1/jobs/{self.job_id}/events"
        answer = requests.get(url, headers=self.farm.headers("acme"), stream=True, timeout=30)
        self.farm.counted.note("GET", "/v1/jobs/<id>/events", answer)
        with self.lock:
            self.answers[answer.status_code] += 1
        if answer.status_code != 200:
            body = answer.json()["error"]
            assert (answer.status_code, body["code"]) == (429, "too_many_streams"), body
            answer.close()
            return
        lines = answer.iter_lines()
        next(lines)  # the stream's first line: it is open
        with self.lock:
            self.open.append((answer, lines))

    def drop(self, count: int) -> None:
        with self.lock:
            dropped, self.open = self.open[:count], self.open[count:]
        for answer, _ in dropped:
            answer.close()

    def close(self) -> None:
        self.drop(len(self.open))


def _watch(farm: Any, spec: dict[str, Any]) -> str | None:
    """globex submits a job and reads its stream to the end: the final job's status."""
    job_id = farm.submit(spec, tenant="globex")
    if job_id is None:
        return None
    answer = requests.get(
        f"{farm.url}/v1/jobs/{job_id}/events",
        headers=farm.headers("globex"),
        stream=True,
        timeout=60,
    )
    farm.counted.note("GET", "/v1/jobs/<id>/events", answer)
    if answer.status_code != 200:
        return f"stream answered {answer.status_code}"
    final, event = None, None
    for line in answer.iter_lines():
        if line.startswith(b"event:"):
            event = line.split(b":", 1)[1].strip()
        elif line.startswith(b"data:") and event == b"job":
            final = json.loads(line.split(b":", 1)[1])["status"]
    answer.close()
    return final


def test_stream_flood_from_one_tenant(make_farm, spec_factory, record_row, rel):
    cap = rel.pick(20, 100)
    asked = rel.pick(100, 1000)
    jobs = rel.pick(12, 60)
    farm = make_farm(step_ms=20, env={"REGIONFARM_MAX_STREAMS_PER_TENANT": str(cap)})
    started = time.monotonic()
    farm.start_workers(1)
    watched = farm.submit(spec_factory(model=UNSERVED_MODEL), tenant="acme")
    assert watched, farm.log_tail()
    flood = Flood(farm, watched)
    try:
        with ThreadPoolExecutor(16) as flooders, ThreadPoolExecutor(WATCHERS) as watchers:
            finals = [watchers.submit(_watch, farm, spec_factory(seed=i)) for i in range(jobs)]
            for future in [flooders.submit(flood.ask) for _ in range(asked)]:
                future.result()
            first = Counter(flood.answers)
            # acme hangs up on some of its streams and asks again: the slots are back at once.
            dropped = cap // 2
            flood.drop(dropped)
            deadline = time.monotonic() + 10
            while farm.r.zcard(redis_keys.streams_key("acme")) > cap - dropped:
                assert time.monotonic() < deadline, "dropped streams kept their slots"
                time.sleep(0.05)
            for future in [flooders.submit(flood.ask) for _ in range(dropped + 5)]:
                future.result()
            statuses = [f.result() for f in finals]
    finally:
        flood.close()
    again = flood.answers - first

    ids = farm.r.zrange(redis_keys.tenant_jobs_key("globex"), 0, -1)
    row = farm.tally("stream flood from one tenant", ids, started=started, tenant="globex")
    globex_ok = row.succeeded
    row.inputs += asked + dropped + 5
    row.succeeded += first[200] + again[200]
    row.failed["429 too_many_streams"] += first[429] + again[429]
    row.notes = (
        f"acme asked for {asked} streams over a cap of {cap}: {first[200]} opened, "
        f"{first[429]} answered 429; it dropped {dropped} and asked for {dropped + 5}: "
        f"{again[200]} opened; meanwhile globex submitted {jobs} jobs and watched each "
        "to its end"
    )
    record_row(row)
    assert statuses == ["succeeded"] * jobs, (statuses, farm.log_tail())
    assert globex_ok == jobs, row
    assert (first[200], first[429]) == (cap, asked - cap), first
    assert (again[200], again[429]) == (dropped, 5), again
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert not farm.counted.contract_breaks, farm.counted.contract_breaks[:5]
