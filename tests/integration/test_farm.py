"""The farm's guarantees with real processes: results once each, never lost, cancel, limits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from farm import redis_keys
from farm.storage import job_object_key, make_storage

BIN = Path(sys.executable).parent / "regionfarm"
pytestmark = pytest.mark.timeout(600)


def _download(api, job_id: str) -> bytes:
    answer = api.get(f"/v1/jobs/{job_id}/result")
    assert answer.status_code == 302, answer.json
    with urllib.request.urlopen(answer.headers["Location"], timeout=30) as response:
        return response.read()


def _objects(settings, job_id: str) -> list[str]:
    storage = make_storage(settings)
    return sorted(
        key.rsplit("/", 1)[1]
        for key, _ in storage.list_keys(storage.prefix)
        if f"/{job_id}/" in key
    )


def test_submit_to_success_with_progress_and_the_same_bytes_as_render(
    api, workers, make_spec, wait_status, read_events, farm_settings, child_env, tmp_path
):
    workers.start(1)
    started = time.monotonic()
    job = api.post("/v1/jobs", json=make_spec(steps=8)).json
    events = read_events(api, job["id"])
    names = [name for name, _ in events]
    assert ("status", {"status": "running"}) in events
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps and steps[-1] == 8 and steps == sorted(steps)
    assert any("preview" in data for name, data in events if name == "progress")
    assert names[-1] == "job" and events[-1][1]["status"] == "succeeded"
    final = wait_status(api, job["id"], ("succeeded",), timeout=5)
    print(f"submit to success: {time.monotonic() - started:.1f} s")
    assert final["attempts"] == 1 and final["worker"].startswith("w0@")
    image = _download(api, job["id"])
    assert len(image) == final["result"]["bytes"]
    assert _objects(farm_settings, job["id"]) == ["image.png", "job.json"]
    # The same normalized spec and seed through `regionfarm render` gives the same bytes.
    spec_path, out = tmp_path / "spec.json", tmp_path / "local.png"
    spec_path.write_text(json.dumps(final["spec"]))
    done = subprocess.run(
        [str(BIN), "render", str(spec_path), "-o", str(out), "--device", "cpu", "--quiet"],
        env=child_env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == image


def test_ten_jobs_over_two_workers_each_rendered_once_model_loaded_once_per_process(
    api, workers, make_spec, wait_status, farm_settings
):
    live = workers.start(2)
    ids = [api.post("/v1/jobs", json=make_spec(seed=i)).json["id"] for i in range(10)]
    finals = [wait_status(api, jid, ("succeeded",), timeout=240) for jid in ids]
    assert all(job["attempts"] == 1 for job in finals)
    assert {job["worker"].split("@")[0] for job in finals} == {"w0", "w1"}
    for jid in ids:
        assert _objects(farm_settings, jid) == ["image.png", "job.json"]
    # Each worker process loaded its model once, at start, and kept it for every job.
    after = workers.live()
    assert sorted(w["info"]["pid"] for w in after) == sorted(w["info"]["pid"] for w in live)
    assert [w["info"]["loads"] for w in after] == [1, 1]


def test_kill_9_mid_render_runs_the_job_again_and_it_succeeds(
    api, workers, make_spec, wait_status, farm_settings
):
    # The API as this test's client reaches it (Flask's test client calls it http://localhost).
    workers.settings = farm_settings.model_copy(update={"public_url": "http://localhost"})
    (worker,) = workers.start(1)
    job = api.post("/v1/jobs", json=make_spec(width=768, height=512, steps=30, regions=[])).json
    wait_status(api, job["id"], ("running",), timeout=60)
    deadline = time.monotonic() + 60
    while not (api.get(f"/v1/jobs/{job['id']}").json["progress"] or {}).get("step"):
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    os.kill(worker["info"]["pid"], signal.SIGKILL)  # the process that is rendering
    killed = time.monotonic()
    while api.get(f"/v1/jobs/{job['id']}").json["attempts"] < 2:
        assert time.monotonic() - killed < 60, "the job did not run again within 60 s"
        time.sleep(0.1)
    print(f"killed to running again: {time.monotonic() - killed:.1f} s")
    final = wait_status(api, job["id"], ("succeeded", "failed"), timeout=240)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    restarted = api.get(f"/v1/jobs/{job['id']}").json
    assert _objects(farm_settings, job["id"]) == ["image.png", "job.json"]
    assert restarted["started_at"] is not None
    print(f"killed to succeeded: {time.monotonic() - killed:.1f} s")
    # job.json is the final job as the API answers it (this second attempt, the absolute
    # result URL), plus the library versions and timings.
    storage = make_storage(farm_settings)
    key = job_object_key(storage.prefix, "local", job["id"], "job.json")
    stored = json.loads(storage.get_bytes(key))
    extras = {n: stored.pop(n) for n in ("versions", "timings", "unet_calls", "unet_samples")}
    assert stored == restarted
    assert stored["attempts"] == 2
    assert stored["result"]["url"] == f"http://localhost/v1/jobs/{job['id']}/result"
    assert extras["versions"]["torch"] and extras["timings"]["render_seconds"] > 0


def test_a_rerun_whose_result_is_already_stored_keeps_it_and_job_json_says_the_rerun(
    api, workers, make_spec, wait_status, farm_settings, r
):
    workers.settings = farm_settings.model_copy(update={"public_url": "http://localhost"})
    job = api.post("/v1/jobs", json=make_spec()).json
    # What a first attempt leaves when its worker dies after storing the result and before
    # recording it: the image, its job.json, and the attempt counted in the record.
    storage = make_storage(farm_settings)
    image_key = job_object_key(storage.prefix, "local", job["id"], "image.png")
    image = storage.put_bytes(image_key, b"stored by the first attempt", "image/png")
    result = {"url": "", "key": image.key, "format": "png", "width": 256, "height": 256}
    result.update(bytes=image.size, sha256=image.sha256, seed=1, render_seconds=0.5)
    first = {**job, "status": "succeeded", "attempts": 1, "worker": "gone@host"}
    first.update(result=result, versions={"torch": "first"}, timings={"render_seconds": 0.5})
    json_key = job_object_key(storage.prefix, "local", job["id"], "job.json")
    storage.put_bytes(json_key, json.dumps(first).encode(), "application/json")
    r.hset(redis_keys.job_key(job["id"]), "attempts", 1)
    workers.start(1)
    final = wait_status(api, job["id"], ("succeeded", "failed"), timeout=120)
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
    assert final["worker"].startswith("w0@")
    assert final["result"]["sha256"] == image.sha256  # recorded from storage, not rendered
    stored = json.loads(storage.get_bytes(json_key))
    extras = {n: stored.pop(n) for n in ("versions", "timings")}
    assert stored == final
    assert stored["result"]["url"] == f"http://localhost/v1/jobs/{job['id']}/result"
    assert extras == {"versions": {"torch": "first"}, "timings": {"render_seconds": 0.5}}


def test_storage_down_for_10_s_during_uploads_every_job_still_succeeds(
    api, workers, make_spec, wait_status, farm_settings, s3_server_process
):
    workers.start(1)
    ids = [api.post("/v1/jobs", json=make_spec(seed=i)).json["id"] for i in range(3)]
    wait_status(api, ids[0], ("running",), timeout=60)
    s3_server_process.send_signal(signal.SIGSTOP)  # moto keeps its data in memory: freeze it
    try:
        frozen_until = time.monotonic() + 10
        while time.monotonic() < frozen_until:
            # While storage is down, nothing is succeeded without its object.
            for jid in ids:
                assert api.get(f"/v1/jobs/{jid}").json["status"] != "succeeded"
            time.sleep(0.5)
    finally:
        s3_server_process.send_signal(signal.SIGCONT)
    for jid in ids:
        final = wait_status(api, jid, ("succeeded", "failed"), timeout=180)
        assert final["status"] == "succeeded", final
        assert _objects(farm_settings, jid) == ["image.png", "job.json"]


def test_cancel_while_queued_running_and_after_success(api, workers, make_spec, wait_status):
    queued = api.post("/v1/jobs", json=make_spec()).json["id"]
    assert api.delete(f"/v1/jobs/{queued}").json["status"] == "canceled"
    workers.start(1)
    long = api.post("/v1/jobs", json=make_spec(width=768, height=512, steps=40, regions=[]))
    long = long.json["id"]
    deadline = time.monotonic() + 120
    while not (api.get(f"/v1/jobs/{long}").json["progress"] or {}).get("step"):
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    answer = api.delete(f"/v1/jobs/{long}")
    assert answer.status_code == 202 and answer.json["status"] in ("canceling", "canceled")
    stopped = wait_status(api, long, ("canceled", "succeeded"), timeout=60)
    assert stopped["status"] == "canceled" and stopped["result"] is None
    assert stopped["progress"]["step"] < 40
    done = api.post("/v1/jobs", json=make_spec()).json["id"]
    wait_status(api, done, ("succeeded",), timeout=120)
    assert api.delete(f"/v1/jobs/{done}").status_code == 409
    # The job canceled while queued never started.
    never = api.get(f"/v1/jobs/{queued}").json
    assert never["status"] == "canceled" and never["attempts"] == 0 and never["worker"] is None


def test_a_job_that_kills_its_worker_every_time_fails_with_worker_lost(
    api, workers, make_spec, wait_status
):
    workers.start(1)
    job = api.post("/v1/jobs", json=make_spec(width=512, height=512, steps=30, regions=[]))
    job = job.json["id"]
    kills = 0
    deadline = time.monotonic() + 400
    while True:
        current = api.get(f"/v1/jobs/{job}").json
        if current["status"] in ("succeeded", "failed", "canceled"):
            break
        assert time.monotonic() < deadline, current
        if current["status"] == "running" and current["attempts"] > kills:
            pid = next(w["info"]["pid"] for w in workers.wait_live(1))
            os.kill(pid, signal.SIGKILL)  # what a job that crashes its worker does
            kills += 1
        time.sleep(0.1)
    assert current["status"] == "failed", current
    assert current["error"]["code"] == "worker_lost" and current["attempts"] == 3
    assert kills == 3


def test_queued_jobs_start_in_priority_order_and_the_worker_reports_metrics(
    api, workers, make_spec, wait_status
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    priorities = [1, 9, 5, 0, 7]
    ids = {
        api.post("/v1/jobs", json=make_spec(priority=p, seed=p)).json["id"]: p for p in priorities
    }
    workers.start(1, metrics_port=port)
    finals = [wait_status(api, jid, ("succeeded",), timeout=180) for jid in ids]
    order = [ids[j["id"]] for j in sorted(finals, key=lambda j: j["started_at"])]
    assert order == sorted(priorities, reverse=True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert 'regionfarm_worker_jobs_total{status="succeeded"} 5.0' in text
    assert 'regionfarm_worker_render_seconds_count{model="tiny-random"} 5.0' in text
