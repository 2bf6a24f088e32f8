"""Idempotency-Key: the same key and body give the first answer and queue nothing more, also
when the requests race; the same key with another body is a 422."""

from __future__ import annotations

import threading

from api.app import create_app


def test_same_key_same_body_gives_the_first_job_and_queues_nothing(client, auth, spec, depth):
    headers = {**auth("acme"), "Idempotency-Key": "k-1"}
    first = client.post("/v1/jobs", json=spec, headers=headers)
    again = client.post("/v1/jobs", json=spec, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"]
    assert again.json["spec"]["seed"] == first.json["spec"]["seed"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert depth() == 1


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


def test_a_bad_key_is_a_400(client, auth, spec):
    answer = client.post(
        "/v1/jobs", json=spec, headers={**auth("acme"), "Idempotency-Key": "x" * 300}
    )
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "invalid_idempotency_key"


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
