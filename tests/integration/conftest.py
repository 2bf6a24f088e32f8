"""The farm as real processes: the test Redis, moto's S3 server over HTTP, the API (in this
process), and `regionfarm worker` processes rendering `tiny-random` on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from api.app import create_app
from farm.storage import make_storage
from farm.workers import live_workers
from schemas import Settings

BIN = Path(sys.executable).parent / "regionfarm"
MODEL = "tiny-random"
LEASE_SECONDS = 3.0
"""Short leases, so a killed worker's job is re-queued within seconds."""
START_TIMEOUT = 120.0


@pytest.fixture
def farm_settings(redis_url: str, s3_server: str, tmp_path: Path, model_cache: Path) -> Settings:
    settings = Settings(
        redis_url=redis_url,
        s3_endpoint_url=s3_server,
        s3_bucket=f"farm-{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path / "data",
        default_model=MODEL,
        lease_seconds=LEASE_SECONDS,
        storage_retry_seconds=60,
        torch_threads=1,
        model_cache=model_cache,
    )
    make_storage(settings).ensure_bucket()
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(value)
        env[f"REGIONFARM_{name.upper()}"] = str(value)
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture
def child_env(farm_settings: Settings) -> dict[str, str]:
    """The environment of a child process with the farm's settings."""
    return settings_env(farm_settings)


@pytest.fixture
def api(farm_settings: Settings):
    return create_app(farm_settings).test_client()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


class Workers:
    """`regionfarm worker` processes (each a supervisor with one worker child)."""

    def __init__(self, settings: Settings, r: redis.Redis, logs: Path) -> None:
        self.settings, self.r, self.logs = settings, r, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, count: int = 1, *, wait: bool = True, metrics_port: int | None = None
    ) -> list[dict[str, Any]]:
        env = settings_env(self.settings)
        self.logs.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            n = len(self.procs)
            with (self.logs / f"worker{n}.log").open("ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [
                            str(BIN),
                            "worker",
                            "--model",
                            MODEL,
                            "--device",
                            "cpu",
                            "--name",
                            f"w{n}",
                            *(["--metrics-port", str(metrics_port)] if metrics_port else []),
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        return self.wait_live(len(self.procs)) if wait else []

    def start_webhooks(self) -> subprocess.Popen[bytes]:
        """The webhook delivery worker (`regionfarm worker --webhooks`)."""
        with (self.logs / "webhooks.log").open("ab") as log:
            proc = subprocess.Popen(
                [str(BIN), "worker", "--webhooks"],
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def live(self) -> list[dict[str, Any]]:
        return [w for w in live_workers(self.r) if w["model"] == MODEL]

    def wait_live(self, count: int, timeout: float = START_TIMEOUT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.live()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} workers not live in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)
        return found

    def log_tail(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(farm_settings: Settings, r: redis.Redis, tmp_path: Path) -> Iterator[Workers]:
    handle = Workers(farm_settings, r, tmp_path / "logs")
    yield handle
    handle.stop()


def _wait_status(
    api, job_id: str, statuses: tuple[str, ...], timeout: float, headers: dict | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/v1/jobs/{job_id}", headers=headers).json
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['status']}, not {statuses}: {job}")
        time.sleep(0.1)


@pytest.fixture
def wait_status() -> Callable[..., dict[str, Any]]:
    """``wait_status(api, job_id, ("succeeded",), timeout=60)``."""
    return _wait_status


def small_spec(**overrides: Any) -> dict[str, Any]:
    """A quick job on tiny-random: two regions of a 256x256 canvas."""
    import numpy as np

    from schemas import encode_png_data_uri

    left = np.zeros((256, 256), dtype=bool)
    left[:, :128] = True
    spec = {
        "kind": "regions",
        "model": MODEL,
        "width": 256,
        "height": 256,
        "background": {"prompt": "a clear sky"},
        "regions": [
            {"prompt": "a red house", "mask": encode_png_data_uri(left)},
            {"prompt": "a green tree", "mask": encode_png_data_uri(~left)},
        ],
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def make_spec() -> Callable[..., dict[str, Any]]:
    return small_spec


def read_events(api, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the job's stream until it ends."""
    events, buffer = [], ""
    for chunk in api.get(f"/v1/jobs/{job_id}/events", buffered=False).response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            lines = block.splitlines()
            name = next((ln[7:] for ln in lines if ln.startswith("event: ")), None)
            data = "\n".join(ln[6:] for ln in lines if ln.startswith("data: "))
            if name:
                events.append((name, json.loads(data)))
    return events


@pytest.fixture(name="read_events")
def read_events_fixture() -> Callable[..., list[tuple[str, dict[str, Any]]]]:
    return read_events
