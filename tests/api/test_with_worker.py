"""With a real Celery worker process on the queue: what it receives (by name, on the model's
queue, in priority order), cancel in every state, results and the events stream."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
import uuid

import pytest

from api.app import create_app
from farm import redis_keys


def _events(response):
    """Parse a text/event-stream body into (event, data) pairs as the chunks arrive."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            name, data = None, []
            for line in block.splitlines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
            if name is not None:
                yield name, json.loads("\n".join(data))


def _until(client, auth, jid: str, status: str, wait_for) -> dict:
    """The job once it reaches `status` (polled as a client would)."""
    return wait_for(
        lambda: (
            (j := client.get(f"/v1/jobs/{jid}", headers=auth("acme")).json)["status"] == status
            and j
        ),
        what=f"job {jid} to be {status}",
    )


def test_the_worker_receives_the_job_by_task_name_on_its_models_queue(
    client, auth, spec, worker, wait_for
):
    worker.start()
    job = client.post("/v1/jobs", json=spec, headers=auth("acme")).json
    got = wait_for(worker.received, what="the worker to receive the job")
    assert got[0]["job_id"] == job["id"]
    assert got[0]["queue"] == "render.tiny-random"
    _until(client, auth, job["id"], "succeeded", wait_for)


def test_higher_priority_jobs_start_first(client, auth, make_spec, worker, wait_for):
    priorities = [0, 5, 9, 3, 9, 7, 1]
    ids = {}
    for i, p in enumerate(priorities):
        spec = make_spec(priority=p, seed=i, metadata={"test_steps": 0})
        ids[client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]] = p
    worker.start()
    received = wait_for(
        lambda: len(worker.received()) == len(priorities) and worker.received(),
        what="every job to arrive",
    )
    order = [ids[m["job_id"]] for m in received]
    assert order == sorted(priorities, reverse=True)
    # Among equal priorities, the first submitted starts first.
    nines = [m["job_id"] for m in received if ids[m["job_id"]] == 9]
    assert nines == sorted(nines)


def test_cancel_of_a_queued_job_means_it_never_starts(client, auth, spec, worker, wait_for):
    job = client.post("/v1/jobs", json=spec, headers=auth("acme")).json
    answer = client.delete(f"/v1/jobs/{job['id']}", headers=auth("acme"))
    assert answer.status_code == 202 and answer.json["status"] == "canceled"
    assert answer.json["finished_at"] is not None
    worker.start()
    skipped = wait_for(worker.skipped, what="the worker to drop the canceled job")
    assert skipped == [{"job_id": job["id"], "status": "ended:canceled"}]
    final = client.get(f"/v1/jobs/{job['id']}", headers=auth("acme")).json
    assert final["status"] == "canceled" and final["attempts"] == 0 and final["started_at"] is None


def test_cancel_of_a_running_job_sets_the_flag_and_the_worker_stops(
    client, auth, make_spec, worker, wait_for, r
):
    spec = make_spec(metadata={"test_steps": 200, "test_step_seconds": 0.05})
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    worker.start()
    wait_for(
        lambda: client.get(f"/v1/jobs/{jid}", headers=auth("acme")).json["progress"],
        what="the job to make progress",
    )
    answer = client.delete(f"/v1/jobs/{jid}", headers=auth("acme"))
    assert answer.status_code == 202 and answer.json["status"] in ("canceling", "canceled")
    final = _until(client, auth, jid, "canceled", wait_for)
    assert final["progress"]["step"] < 200 and final["result"] is None
    assert not r.exists(redis_keys.cancel_key(jid))  # the flag goes with the job's end


def test_cancel_after_success_is_a_409_and_purge_deletes_record_and_image(
    client, auth, spec, worker, wait_for, settings
):
    worker.start()
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    job = _until(client, auth, jid, "succeeded", wait_for)
    answer = client.delete(f"/v1/jobs/{jid}", headers=auth("acme"))
    assert answer.status_code == 409 and answer.json["error"]["code"] == "job_finished"
    image = settings.data_dir / "storage" / job["result"]["key"]
    assert image.is_file()
    assert client.delete(f"/v1/jobs/{jid}?purge=true", headers=auth("acme")).status_code == 204
    assert client.get(f"/v1/jobs/{jid}", headers=auth("acme")).status_code == 404
    assert not image.exists()


def test_purge_of_an_active_job_is_a_409(client, auth, spec):
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    answer = client.delete(f"/v1/jobs/{jid}?purge=true", headers=auth("acme"))
    assert answer.status_code == 409 and answer.json["error"]["code"] == "job_active"


def test_result_is_409_before_success_then_the_image_bytes(client, auth, spec, worker, wait_for):
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    early = client.get(f"/v1/jobs/{jid}/result", headers=auth("acme"))
    assert early.status_code == 409 and early.json["error"]["code"] == "result_not_ready"
    worker.start()
    job = _until(client, auth, jid, "succeeded", wait_for)
    assert job["result"]["url"].endswith(f"/v1/jobs/{jid}/result")
    with client.get(f"/v1/jobs/{jid}/result", headers=auth("acme")) as image:
        assert image.status_code == 200 and image.mimetype == "image/png"
        assert image.data.startswith(b"\x89PNG") and len(image.data) == job["result"]["bytes"]


def test_result_of_a_failed_job_is_409(client, auth, make_spec, worker, wait_for):
    worker.start()
    jid = client.post(
        "/v1/jobs", json=make_spec(metadata={"test_fail": True}), headers=auth("acme")
    ).json["id"]
    job = _until(client, auth, jid, "failed", wait_for)
    assert job["error"] == {"code": "internal", "message": "test failure"}
    assert client.get(f"/v1/jobs/{jid}/result", headers=auth("acme")).status_code == 409


def test_events_stream_progress_and_status_then_the_final_job(
    client, auth, make_spec, worker, wait_for
):
    spec = make_spec(metadata={"test_steps": 5, "test_step_seconds": 0.1})
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    stream = client.get(f"/v1/jobs/{jid}/events", headers=auth("acme"), buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    events = _events(stream)
    assert next(events) == ("status", {"status": "queued"})
    worker.start()
    rest = list(events)
    names = [name for name, _ in rest]
    assert ("status", {"status": "running"}) in rest
    steps = [data["step"] for name, data in rest if name == "progress"]
    assert steps == [1, 2, 3, 4, 5]
    assert names[-1] == "job" and rest[-1][1]["status"] == "succeeded"
    assert rest[-1][1]["id"] == jid and rest[-1][1]["result"]["bytes"] > 0


def test_events_after_the_end_give_the_final_job_at_once(client, auth, spec):
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    client.delete(f"/v1/jobs/{jid}", headers=auth("acme"))
    events = list(_events(client.get(f"/v1/jobs/{jid}/events", headers=auth("acme"))))
    assert len(events) == 1
    assert events[0][0] == "job" and events[0][1]["status"] == "canceled"


@pytest.mark.parametrize("status", ["queued"])
def test_events_of_a_job_canceled_while_watched_end_with_it(client, auth, spec, status):
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    events = _events(client.get(f"/v1/jobs/{jid}/events", headers=auth("acme"), buffered=False))
    assert next(events) == ("status", {"status": status})
    client.delete(f"/v1/jobs/{jid}", headers=auth("acme"))
    name, job = next(events)
    assert name == "job" and job["status"] == "canceled"
    assert list(events) == []


def test_result_from_s3_is_a_302_to_a_fresh_presigned_url(
    settings, s3_server, auth, spec, make_worker, wait_for
):
    s3 = settings.model_copy(
        update={"s3_endpoint_url": s3_server, "s3_bucket": f"t-{uuid.uuid4().hex[:12]}"}
    )
    client = create_app(s3).test_client()
    make_worker(s3).start()
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    job = _until(client, auth, jid, "succeeded", wait_for)
    first = client.get(f"/v1/jobs/{jid}/result", headers=auth("acme"))
    assert first.status_code == 302
    url = first.headers["Location"]
    assert url.startswith(s3_server) and "Signature" in url
    with urllib.request.urlopen(url, timeout=10) as answer:
        data = answer.read()
    assert len(data) == job["result"]["bytes"] and data.startswith(b"\x89PNG")
    assert hashlib.sha256(data).hexdigest() == job["result"]["sha256"]
    time.sleep(1.1)  # signatures carry the time in seconds: a later call signs anew
    assert client.get(f"/v1/jobs/{jid}/result", headers=auth("acme")).headers["Location"] != url
