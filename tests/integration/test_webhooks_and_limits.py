"""Signed webhooks from the farm, the per-job time limit, and a model that cannot load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from api.app import create_app
from farm.keys import add_key, load_keys
from worker.webhooks import verify

BIN = Path(sys.executable).parent / "regionfarm"
pytestmark = pytest.mark.timeout(600)


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"headers": dict(self.headers), "body": body})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver.received
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_webhooks_are_signed_with_the_tenants_secret(
    farm_settings, workers, receiver, make_spec, wait_status, tmp_path
):
    keys_file = tmp_path / "keys.json"
    key = add_key(keys_file, "acme")
    secret = next(iter(load_keys(keys_file).values())).webhook_secret
    workers.settings = farm_settings.model_copy(
        update={"api_keys_file": keys_file, "webhook_allowlist": ["127.0.0.1"]}
    )
    api = create_app(workers.settings).test_client()
    headers = {"Authorization": f"Bearer {key}"}
    url, received = receiver
    canceled = api.post("/v1/jobs", json=make_spec(webhook={"url": url}), headers=headers).json
    api.delete(f"/v1/jobs/{canceled['id']}", headers=headers)
    workers.start(1)
    hooks = workers.start_webhooks()  # beside the render worker, as `up` starts it
    done = api.post("/v1/jobs", json=make_spec(webhook={"url": url}), headers=headers).json
    wait_status(api, done["id"], ("succeeded",), timeout=120, headers=headers)
    deadline = time.monotonic() + 60
    while len(received) < 2:
        assert time.monotonic() < deadline, f"webhooks not delivered:\n{workers.log_tail()}"
        time.sleep(0.1)
    by_event = {r["headers"]["Regionfarm-Event"]: r for r in received}
    assert set(by_event) == {"job.canceled", "job.succeeded"}
    for event, delivery in by_event.items():
        assert verify(secret, delivery["body"], delivery["headers"]["Regionfarm-Signature"])
        job = json.loads(delivery["body"])
        assert job["status"] == event.split(".")[1]
    assert json.loads(by_event["job.succeeded"]["body"])["id"] == done["id"]
    assert hooks


def test_a_render_over_the_time_limit_fails_with_timeout(
    farm_settings, workers, make_spec, wait_status
):
    workers.settings = farm_settings.model_copy(update={"job_time_limit": 1.0})
    api = create_app(workers.settings).test_client()
    workers.start(1)
    job = api.post("/v1/jobs", json=make_spec(width=768, height=768, steps=50, regions=[])).json
    final = wait_status(api, job["id"], ("failed", "succeeded"), timeout=120)
    assert final["status"] == "failed" and final["error"]["code"] == "timeout"
    assert "REGIONFARM_JOB_TIME_LIMIT" in final["error"]["message"]


def test_a_worker_whose_model_cannot_load_takes_no_jobs(api, child_env, make_spec, r):
    job = api.post("/v1/jobs", json=make_spec(model="sd15-lcm")).json  # no weights offline
    done = subprocess.run([str(BIN), "worker", "--model", "sd15-lcm", "--device", "cpu"],
                          env=child_env, check=False, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert "unavailable" in done.stderr and "takes no jobs" in done.stderr
    assert api.get(f"/v1/jobs/{job['id']}").json["status"] == "queued"
    models = {m["name"]: m for m in api.get("/v1/models").json["models"]}
    assert models["sd15-lcm"]["workers"] == 0
