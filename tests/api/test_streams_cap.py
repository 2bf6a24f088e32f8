"""Event streams under `regionfarm api` (gunicorn, gevent workers), through real HTTP and a real
Redis: they cost no thread, each tenant may hold only REGIONFARM_MAX_STREAMS_PER_TENANT of them
(429 `too_many_streams` beyond), and a stream that ends, or whose client goes, frees its slot."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from api.streams import LEASE_SECONDS, streams_key

BIN = Path(sys.executable).parent / "regionfarm"
START_S = 60.0


class Api:
    """One `regionfarm api` process (2 gunicorn workers) on the test Redis, with two tenants."""

    def __init__(
        self, url: str, proc: subprocess.Popen[bytes], log: Path, keys: dict[str, str]
    ) -> None:
        self.url, self.proc, self.log, self.keys = url, proc, log, keys
        self.opened: list[requests.Response] = []

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def submit(self, tenant: str, spec: dict[str, Any]) -> str:
        answer = requests.post(
            f"{self.url}/v1/jobs", json=spec, headers=self.headers(tenant), timeout=10
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def stream(self, tenant: str, job_id: str) -> requests.Response:
        """`GET /v1/jobs/<id>/events`; an open stream has read its first line, and its `lines`
        go on from there (dropping that iterator would close the connection)."""
        answer = requests.get(
            f"{self.url}/v1/jobs/{job_id}/events",
            headers=self.headers(tenant),
            stream=True,
            timeout=10,
        )
        self.opened.append(answer)
        if answer.status_code == 200:
            answer.lines = answer.iter_lines()
            first = next(answer.lines)
            assert first.split(b":", 1)[0] in (b"retry", b"id", b"event"), first
        return answer

    def close(self) -> None:
        for answer in self.opened:
            answer.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_api(
    redis_url: str, keys_file: Path, keys: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Api]]:
    """``start_api(cap=3)``: a running API whose tenants may hold `cap` streams each."""
    started: list[Api] = []

    def start(cap: int) -> Api:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
        env.update(
            REGIONFARM_REDIS_URL=redis_url,
            REGIONFARM_API_KEYS_FILE=str(keys_file),
            REGIONFARM_DATA_DIR=str(tmp_path / "data"),
            REGIONFARM_DEFAULT_MODEL="tiny-random",
            REGIONFARM_MAX_STREAMS_PER_TENANT=str(cap),
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = tmp_path / f"api{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN), "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        api = Api(f"http://127.0.0.1:{port}", proc, log, keys)
        started.append(api)
        deadline = time.monotonic() + START_S
        while True:
            try:
                if requests.get(f"{api.url}/readyz", timeout=2).status_code == 200:
                    return api
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    yield start
    for api in started:
        api.close()


def _refused(answer: requests.Response, cap: int) -> None:
    """The contract's 429 for a tenant over its streams cap."""
    assert answer.status_code == 429, answer.status_code
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "too_many_streams"
    assert f"{cap} event streams" in body["error"]["message"]
    assert "REGIONFARM_MAX_STREAMS_PER_TENANT" in body["error"]["message"]
    assert body["error"]["details"] == []
    assert int(answer.headers["Retry-After"]) > 0


def _eventually_opens(api: Api, tenant: str, job_id: str, within: float) -> float:
    """Seconds until a new stream of `tenant` is let in (429s until then)."""
    started = time.monotonic()
    while True:
        answer = api.stream(tenant, job_id)
        if answer.status_code == 200:
            return time.monotonic() - started
        _refused(answer, 2)
        answer.close()
        assert time.monotonic() - started < within, "the slot did not come back"
        time.sleep(0.1)


def test_a_tenant_over_its_cap_gets_429_and_another_tenant_is_unaffected(
    start_api, spec, r: redis.Redis
):
    cap = 3
    api = start_api(cap)
    job, other_job = api.submit("acme", spec), api.submit("acme", spec)
    streams = [api.stream("acme", job) for _ in range(cap)]
    assert [s.status_code for s in streams] == [200] * cap

    _refused(api.stream("acme", job), cap)
    _refused(api.stream("acme", other_job), cap)  # the cap is the tenant's, not the job's
    assert r.zcard(streams_key("acme")) == cap

    globex_job = api.submit("globex", spec)
    assert [api.stream("globex", globex_job).status_code for _ in range(cap)] == [200] * cap
    _refused(api.stream("globex", globex_job), cap)
    # A stream of another tenant's job is still a 404, whatever the caps say.
    assert api.stream("globex", job).status_code == 404

    # Every slot is a lease that runs out unless the stream renews it.
    now_ms = time.time() * 1000
    for _slot, expires in r.zrange(streams_key("acme"), 0, -1, withscores=True):
        assert now_ms < expires <= now_ms + LEASE_SECONDS * 1000 + 1000
    assert 0 < r.pttl(streams_key("acme")) <= LEASE_SECONDS * 1000
    assert api.submit("acme", spec)  # open streams do not stop submits


def test_a_stream_that_ends_or_loses_its_client_frees_its_slot(start_api, spec, r: redis.Redis):
    api = start_api(2)
    ending, staying = api.submit("acme", spec), api.submit("acme", spec)
    first, second = api.stream("acme", ending), api.stream("acme", staying)
    assert (first.status_code, second.status_code) == (200, 200)
    _refused(api.stream("acme", staying), 2)

    # The job ends: its stream sends the final job and ends, and its slot comes back.
    assert (
        requests.delete(
            f"{api.url}/v1/jobs/{ending}", headers=api.headers("acme"), timeout=10
        ).status_code
        == 202
    )
    rest = b"\n".join(first.lines)
    assert b"canceled" in rest, rest
    _eventually_opens(api, "acme", staying, within=5)

    # A client hangs up on a stream whose job goes on: the server ends that stream at once.
    assert r.zcard(streams_key("acme")) == 2
    second.close()
    took = _eventually_opens(api, "acme", staying, within=10)
    assert took < 5, took
    assert r.zcard(streams_key("acme")) == 2


def test_slots_of_a_killed_api_come_back_when_their_leases_run_out(start_api, spec, r: redis.Redis):
    api = start_api(2)
    job = api.submit("acme", spec)
    assert [api.stream("acme", job).status_code for _ in range(2)] == [200, 200]
    os.killpg(api.proc.pid, signal.SIGKILL)  # no stream gets to give its slot back
    api.proc.wait()
    assert r.zcard(streams_key("acme")) == 2

    again = start_api(2)
    _refused(again.stream("acme", job), 2)  # their leases still run
    # Time passes (as LEASE_SECONDS would): the leases of the dead process run out.
    r.zadd(streams_key("acme"), {m: 1 for m in r.zrange(streams_key("acme"), 0, -1)}, xx=True)
    assert again.stream("acme", job).status_code == 200
    assert r.zcard(streams_key("acme")) == 1


def test_open_streams_cost_no_thread(start_api, spec):
    """64 open streams (the old API had 2 x 16 threads, one per stream): a submit and a read
    are still answered at once."""
    api = start_api(100)
    job = api.submit("acme", spec)
    streams = [api.stream("acme", job) for _ in range(64)]
    assert all(s.status_code == 200 for s in streams)
    started = time.monotonic()
    new = api.submit("acme", spec)
    read = requests.get(f"{api.url}/v1/jobs/{new}", headers=api.headers("acme"), timeout=10)
    assert read.status_code == 200 and read.json()["status"] == "queued"
    assert time.monotonic() - started < 2.0
    assert "MonkeyPatchWarning" not in api.log.read_text()


def test_a_lease_that_ran_out_is_not_taken_back_and_its_stream_ends(r: redis.Redis) -> None:
    """Renewal keeps a live lease, but one that ran out (Redis unreachable, a client that
    stopped reading) may be another stream's slot by now: the stream ends instead, so a tenant
    never holds more than its cap."""
    from api import streams

    key = streams.streams_key("acme")
    far = int(time.time() * 1000) + 10 * 3600 * 1000  # (Redis's clock is this machine's)
    r.zadd(key, {"live": far, "lapsed": 1})
    live = streams._Held(r, key, "live", iter(["a", "b"]), {})
    live.renewed = -1e9  # due for renewal at its next chunk
    assert next(live) == "a"
    assert 0 < r.zscore(key, "live") - time.time() * 1000 <= streams.LEASE_SECONDS * 1000 + 1000
    lapsed = streams._Held(r, key, "lapsed", iter(["a", "b"]), {})
    lapsed.renewed = -1e9
    with pytest.raises(StopIteration):
        next(lapsed)
    assert r.zscore(key, "lapsed") is None and r.zcard(key) == 1
