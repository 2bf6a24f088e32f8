"""Signed webhooks that a receiver verifies and downloads from (a farm with keys, and
`regionfarm up` without), the per-job time limit, and a model that cannot load."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from api.app import create_app
from farm.keys import add_key, load_keys

BIN = Path(sys.executable).parent / "regionfarm"
pytestmark = pytest.mark.timeout(600)
TOLERANCE_S = 300
"""How old a signature's timestamp may be, as the contract's receivers are told."""


def signature_ok(secret: str, header: str, body: bytes) -> bool:
    """The receiver's check, written from the contract alone: `Regionfarm-Signature:
    t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the tenant's webhook secret>`."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.partition("=")
        fields.setdefault(name.strip(), []).append(value.strip())
    if len(fields.get("t", [])) != 1 or not fields["t"][0].isdigit() or not fields.get("v1"):
        return False
    t = int(fields["t"][0])
    if abs(time.time() - t) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v1) for v1 in fields["v1"])


@dataclass
class Delivery:
    event: str
    body: bytes
    header: str
    """`Regionfarm-Signature`."""
    job: dict[str, Any]
    signed: bool
    """The signature verified with the receiver's secret."""
    image: bytes | None = None
    """What `result.url` answered (succeeded jobs), fetched as the receiver would."""
    fetch_problem: str = ""


@dataclass
class Receiver:
    """A webhook receiver as a user writes one: it answers 204, checks the signature with its
    own HMAC code, and downloads the result of a succeeded job from `result.url`."""

    url: str = ""
    secret: str = ""
    api_key: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    def wait(self, events: set[str], timeout: float, logs: Any = "") -> dict[str, Delivery]:
        """The first delivery of each event, once every one of `events` has come. Delivery
        is at-least-once: an event may come more than once, each copy signed."""
        deadline = time.monotonic() + timeout
        while not events <= {d.event for d in self.deliveries}:
            if time.monotonic() > deadline:
                tail = logs() if callable(logs) else logs
                raise AssertionError(f"webhooks {self.deliveries} are not {events}:\n{tail}")
            time.sleep(0.1)
        firsts: dict[str, Delivery] = {}
        for delivery in self.deliveries:
            firsts.setdefault(delivery.event, delivery)
        return firsts

    def take(self, event: str, body: bytes, header: str) -> None:
        job = json.loads(body)
        delivery = Delivery(event, body, header, job, signature_ok(self.secret, header, body))
        if delivery.signed and job["status"] == "succeeded":
            auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            try:
                # requests drops the Authorization header on a redirect to storage.
                answer = requests.get(job["result"]["url"], headers=auth, timeout=30)
                answer.raise_for_status()
                delivery.image = answer.content
            except requests.RequestException as exc:
                delivery.fetch_problem = str(exc)
        self.deliveries.append(delivery)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()
        self.wfile.flush()
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        event = self.headers.get("Regionfarm-Event", "")
        receiver.take(event, body, self.headers.get("Regionfarm-Signature", ""))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_port}/hook")
    server.receiver = receiver  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, base: str) -> Iterator[None]:
    """A farm process (`api` or `up`), ready at `base`, stopped with Ctrl-C at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{base} not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check_succeeded(delivery: Delivery, job: dict[str, Any], base: str) -> None:
    """The webhook of a succeeded job: signed, its `result.url` the API's absolute result URL,
    and what that URL gives is the image the job says."""
    assert delivery.signed, delivery
    assert delivery.job["result"]["url"] == f"{base}/v1/jobs/{job['id']}/result"
    assert delivery.image is not None, delivery.fetch_problem
    assert len(delivery.image) == job["result"]["bytes"]
    assert hashlib.sha256(delivery.image).hexdigest() == job["result"]["sha256"]
    assert delivery.job == job  # the final job object, as the API answers it


def test_a_farm_with_keys_signs_webhooks_that_receivers_verify_and_fetch_results_from(
    farm_settings, child_env, workers, receiver, make_spec, tmp_path
):
    keys_file = tmp_path / "keys.json"
    key = add_key(keys_file, "acme")
    [acme] = load_keys(keys_file).values()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    update = {"api_keys_file": keys_file, "webhook_allowlist": ["127.0.0.1"], "public_url": base}
    workers.settings = farm_settings.model_copy(update=update)
    env = {
        **child_env,
        "REGIONFARM_API_KEYS_FILE": str(keys_file),
        "REGIONFARM_WEBHOOK_ALLOWLIST": "127.0.0.1",
    }
    receiver.secret, receiver.api_key = acme.webhook_secret, key
    headers = {"Authorization": f"Bearer {key}"}
    api_args = [str(BIN), "api", "--port", str(port), "--workers", "1"]
    with _process(api_args, env, tmp_path / "api.log", base):
        spec = make_spec(webhook={"url": receiver.url})
        canceled = requests.post(f"{base}/v1/jobs", json=spec, headers=headers, timeout=30).json()
        requests.delete(f"{base}/v1/jobs/{canceled['id']}", headers=headers, timeout=30)
        workers.start(1)
        workers.start_webhooks()  # beside the render worker, as `up` starts it
        done = requests.post(f"{base}/v1/jobs", json=spec, headers=headers, timeout=30).json()
        events = {"job.canceled", "job.succeeded"}
        by_event = receiver.wait(events, timeout=180, logs=workers.log_tail)
        final = requests.get(f"{base}/v1/jobs/{done['id']}", headers=headers, timeout=30).json()
    assert set(by_event) == events
    assert all(d.signed for d in receiver.deliveries)
    assert by_event["job.canceled"].job["id"] == canceled["id"]
    assert by_event["job.canceled"].job["status"] == "canceled"
    _check_succeeded(by_event["job.succeeded"], final, base)
    # The receiver's check is a real one: another secret, or one changed byte, fails it.
    for delivery in by_event.values():
        assert not signature_ok("whsec_another", delivery.header, delivery.body)
        assert not signature_ok(acme.webhook_secret, delivery.header, delivery.body + b" ")


def test_up_without_keys_signs_webhooks_with_the_local_secret_and_results_are_fetchable(
    receiver, make_spec, model_cache, tmp_path
):
    data = tmp_path / "farm"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env["REGIONFARM_MODEL_CACHE"] = str(model_cache)
    env["REGIONFARM_WEBHOOK_ALLOWLIST"] = "127.0.0.1"
    env["HF_HUB_OFFLINE"] = "1"
    log = tmp_path / "up.log"
    args = [str(BIN), "up", "--data-dir", str(data), "--port", str(port), "--workers", "1"]
    with _process([*args, "--model", "tiny-random"], env, log, base):
        show = [str(BIN), "keys", "webhook-secret", "--data-dir", str(data)]
        shown = subprocess.run(show, env=env, capture_output=True, text=True, check=True)
        receiver.secret = shown.stdout.strip()
        spec = make_spec(webhook={"url": receiver.url})
        job = requests.post(f"{base}/v1/jobs", json=spec, timeout=30).json()
        events = receiver.wait({"job.succeeded"}, timeout=240, logs=lambda: log.read_text())
        delivery = events["job.succeeded"]
        final = requests.get(f"{base}/v1/jobs/{job['id']}", timeout=30).json()
    assert final["status"] == "succeeded" and delivery.event == "job.succeeded"
    _check_succeeded(delivery, final, base)
    # `up` printed the secret once at start; it is the data dir's, readable by its owner only.
    printed = log.read_text()
    assert printed.count(receiver.secret) == 1
    secret_file = data / "webhook-secret"
    assert secret_file.read_text().strip() == receiver.secret
    assert secret_file.stat().st_mode & 0o777 == 0o600


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
    done = subprocess.run(
        [str(BIN), "worker", "--model", "sd15-lcm", "--device", "cpu"],
        env=child_env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "unavailable" in done.stderr and "takes no jobs" in done.stderr
    assert api.get(f"/v1/jobs/{job['id']}").json["status"] == "queued"
    models = {m["name"]: m for m in api.get("/v1/models").json["models"]}
    assert models["sd15-lcm"]["workers"] == 0
