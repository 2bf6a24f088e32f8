"""Idempotency-Key: the same key and body give the first answer (its status and body, as
sent) and queue nothing more, also when the requests race and after the job was purged; the
same key with another body is a 422."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from api.app import create_app
from farm import redis_keys

BIN = Path(sys.executable).parent / "regionfarm"


def test_same_key_same_body_gives_the_first_job_and_queues_nothing(client, auth, spec, depth):
    headers = {**auth("acme"), "Idempotency-Key": "k-1"}
    first = client.post("/v1/jobs", json=spec, headers=headers)
    again = client.post("/v1/jobs", json=spec, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"]
    assert again.json["spec"]["seed"] == first.json["spec"]["seed"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.data == first.data  # the first answer's bytes, not a new rendering of the job
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert depth() == 1


def test_a_replay_is_the_first_answer_even_after_the_job_changed(client, auth, spec):
    headers = {**auth("acme"), "Idempotency-Key": "k-changed"}
    first = client.post("/v1/jobs", json=spec, headers=headers)
    job_id = first.json["id"]
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth("acme")).json["status"] == "canceled"
    again = client.post("/v1/jobs", json=spec, headers=headers)
    assert again.status_code == 202 and again.data == first.data
    assert again.json["status"] == "queued"  # as first answered, not as the job is now


def test_a_replay_after_the_job_was_purged_is_the_first_answer(client, auth, make_spec, r):
    for route, body in (("/v1/jobs", make_spec()), ("/v1/jobs/batch", {"jobs": [make_spec()]})):
        headers = {**auth("acme"), "Idempotency-Key": f"purged-{route}"}
        first = client.post(route, json=body, headers=headers)
        ids = [j["id"] for j in first.json.get("jobs", [first.json])]
        for job_id in ids:
            client.delete(f"/v1/jobs/{job_id}", headers=auth("acme"))
            purge = client.delete(f"/v1/jobs/{job_id}?purge=true", headers=auth("acme"))
            assert purge.status_code == 204
            assert client.get(f"/v1/jobs/{job_id}", headers=auth("acme")).status_code == 404
        again = client.post(route, json=body, headers=headers)
        assert (again.status_code, again.data) == (first.status_code, first.data), route
        assert again.headers["Idempotent-Replayed"] == "true"
    # purged, and no replay made a job again
    assert r.zcard(redis_keys.tenant_jobs_key("acme")) == 0


def test_same_key_other_body_is_a_422(client, auth, make_spec, depth):
    headers = {**auth("acme"), "Idempotency-Key": "k-2"}
    assert client.post("/v1/jobs", json=make_spec(seed=1), headers=headers).status_code == 202
    other = client.post("/v1/jobs", json=make_spec(seed=2), headers=headers)
    assert other.status_code == 422
    assert other.json["error"]["code"] == "idempotency_key_reused"
    assert depth() == 1


def test_keys_are_per_tenant_and_per_route(client, auth, spec, depth):
    client.post("/v1/jobs", json=spec, headers={**auth("acme"), "Idempotency-Key": "k"})
    client.post("/v1/jobs", json=spec, headers={**auth("globex"), "Idempotency-Key": "k"})
    batch = {"jobs": [spec]}
    answer = client.post(
        "/v1/jobs/batch", json=batch, headers={**auth("acme"), "Idempotency-Key": "k"}
    )
    assert answer.status_code == 202
    assert depth() == 3


def test_a_refused_request_does_not_burn_its_key(client, auth, make_spec, depth):
    headers = {**auth("acme"), "Idempotency-Key": "k-3"}
    bad = client.post("/v1/jobs", json=make_spec(width=12), headers=headers)
    assert bad.status_code == 422
    fixed = client.post("/v1/jobs", json=make_spec(), headers=headers)
    assert fixed.status_code == 202
    assert depth() == 1


def test_batch_replay_gives_the_same_jobs(client, auth, make_spec, depth):
    headers = {**auth("acme"), "Idempotency-Key": "b-1"}
    body = {"job": make_spec(), "seeds": [1, 2, 3]}
    first = client.post("/v1/jobs/batch", json=body, headers=headers).json
    again = client.post("/v1/jobs/batch", json=body, headers=headers).json
    assert [j["id"] for j in again["jobs"]] == [j["id"] for j in first["jobs"]]
    assert depth() == 3


@pytest.mark.parametrize("key", ["x" * 256, "", "cl\u00e9", "tab\there"])
def test_a_bad_key_is_a_400_naming_the_header_and_the_rule(client, auth, spec, key, depth):
    answer = client.post("/v1/jobs", json=spec, headers={**auth("acme"), "Idempotency-Key": key})
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "invalid_idempotency_key"
    assert "1 to 255 printable ASCII characters" in answer.json["error"]["message"]
    assert answer.json["error"]["details"][0]["loc"] == ["headers", "Idempotency-Key"]
    assert depth() == 0


def test_the_longest_key_is_taken(client, auth, spec):
    headers = {**auth("acme"), "Idempotency-Key": "~" * 255}
    assert client.post("/v1/jobs", json=spec, headers=headers).status_code == 202


def test_identical_requests_racing_make_one_job(settings, auth, spec, depth):
    # Separate apps (as separate gunicorn processes are), their requests released together.
    clients = [create_app(settings).test_client() for _ in range(8)]
    headers = {**auth("acme"), "Idempotency-Key": "race"}
    barrier = threading.Barrier(len(clients))
    answers = [None] * len(clients)

    def submit(i: int) -> None:
        barrier.wait()
        answers[i] = clients[i].post("/v1/jobs", json=spec, headers=headers)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.application.extensions["regionfarm"].close()
    assert {a.status_code for a in answers} == {202}
    assert len({a.json["id"] for a in answers}) == 1
    assert depth() == 1


# -- through real HTTP: the API under gunicorn, two processes ----------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_api(
    redis_url: str, tmp_path: Path, keys_file: Path, keys: dict[str, str]
) -> Iterator[str]:
    """`regionfarm api` (gunicorn, 2 processes) on a free port: its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env.update(
        REGIONFARM_REDIS_URL=redis_url,
        REGIONFARM_API_KEYS_FILE=str(keys_file),
        REGIONFARM_DATA_DIR=str(tmp_path / "data"),
        REGIONFARM_DEFAULT_MODEL="tiny-random",
    )
    argv = [str(BIN), "api", "--port", str(port), "--workers", "2"]
    log = tmp_path / "api.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_replays_racing_a_purge_all_get_the_first_answer_and_no_5xx(live_api, keys, spec, r):
    """Fifty and more replays (ten threads, one connection each) while another thread
    cancels the job and purges it: every replay is the first answer, before and after."""
    auth = {"Authorization": f"Bearer {keys['acme']}"}
    body = json.dumps(spec).encode()
    post = {**auth, "Idempotency-Key": "race-purge", "Content-Type": "application/json"}
    first = requests.post(f"{live_api}/v1/jobs", data=body, headers=post, timeout=30)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]

    answers: list[tuple[float, int, bytes, str | None]] = []
    lock = threading.Lock()
    purged = threading.Event()
    purged_at: list[float] = []
    steps: list[int] = []

    def replay() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if purged.is_set() and len(answers) >= 50:
                        return
                sent = time.monotonic()
                got = session.post(f"{live_api}/v1/jobs", data=body, headers=post, timeout=30)
                flag = got.headers.get("Idempotent-Replayed")
                with lock:
                    answers.append((sent, got.status_code, got.content, flag))

    def purge() -> None:
        try:
            while len(answers) < 10:  # purge in the middle of the replays
                time.sleep(0.001)
            with requests.Session() as session:
                url = f"{live_api}/v1/jobs/{job_id}"
                for target in (url, f"{url}?purge=true"):
                    steps.append(session.delete(target, headers=auth, timeout=30).status_code)
                purged_at.append(time.monotonic())
        finally:
            purged.set()

    threads = [threading.Thread(target=replay) for _ in range(10)]
    threads.append(threading.Thread(target=purge))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert steps == [202, 204]  # canceled (queued: it ends at once), then purged
    statuses = Counter(status for _, status, _, _ in answers)
    assert len(answers) >= 50 and statuses == {202: len(answers)}, statuses
    assert all(content == first.content and flag == "true" for _, _, content, flag in answers)
    after = sum(1 for sent, *_ in answers if sent > purged_at[0])
    assert after >= 1, "no replay was sent after the purge: the race was not run"
    assert requests.get(f"{live_api}/v1/jobs/{job_id}", headers=auth, timeout=10).status_code == 404
    assert r.zcard(redis_keys.tenant_jobs_key("acme")) == 0  # no replay made a job


def test_a_key_stored_before_first_answers_were_kept_replays_or_says_why(client, auth, spec, r):
    """A key written by the version that stored job ids only: replayed from the records while
    they exist; once its job is purged, a 409 that says why (never a 5xx)."""
    headers = {**auth("acme"), "Idempotency-Key": "legacy-1"}
    first = client.post("/v1/jobs", json=spec, headers=headers)
    job_id = first.json["id"]
    [key] = list(r.scan_iter(redis_keys.IDEMPOTENCY_PATTERN))
    body_hash = json.loads(r.get(key))["hash"]
    legacy = {"hash": body_hash, "state": "done", "status": 202, "ids": [job_id]}
    r.set(key, json.dumps(legacy), keepttl=True)
    again = client.post("/v1/jobs", json=spec, headers=headers)
    assert again.status_code == 202 and again.json["id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    client.delete(f"/v1/jobs/{job_id}", headers=auth("acme"))
    assert client.delete(f"/v1/jobs/{job_id}?purge=true", headers=auth("acme")).status_code == 204
    gone = client.post("/v1/jobs", json=spec, headers=headers)
    assert gone.status_code == 409
    assert gone.json["error"]["code"] == "idempotency_answer_gone"
