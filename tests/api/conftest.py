"""Fixtures of the API tests: settings on the test Redis, two tenants with keys, the app, specs,
and a real Celery worker process that records what it receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from api.app import create_app
from farm.keys import add_key
from schemas import Settings, encode_png_data_uri
from schemas.names import queue_for_model

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MODEL = "tiny-random"
WORKER_START_S = 60.0


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def keys(keys_file: Path) -> dict[str, str]:
    """Plain API keys of two tenants, written (as hashes) to the keys file."""
    return {tenant: add_key(keys_file, tenant) for tenant in ("acme", "globex")}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, keys_file: Path, keys: dict[str, str]) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        api_keys_file=keys_file,
        default_model=MODEL,
    )


@pytest.fixture
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(keys: dict[str, str]) -> Callable[[str], dict[str, str]]:
    """Headers of a tenant: ``client.get(url, headers=auth("acme"))``."""
    return lambda tenant: {"Authorization": f"Bearer {keys[tenant]}"}


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def three_region_spec(**overrides: Any) -> dict[str, Any]:
    """The benchmark's spec: 256x128, three regions with inline PNG masks."""
    masks = []
    for i in range(3):
        mask = np.zeros((128, 256), dtype=bool)
        mask[:, i * 85 : (i + 1) * 85 + 1] = True
        masks.append(encode_png_data_uri(mask))
    spec = {
        "kind": "regions",
        "model": MODEL,
        "width": 256,
        "height": 128,
        "background": {"prompt": "a clear sky"},
        "regions": [{"prompt": f"region {i}", "mask": m} for i, m in enumerate(masks)],
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def spec() -> dict[str, Any]:
    return three_region_spec()


def queue_length(client: redis.Redis, model: str = MODEL) -> int:
    from farm.broker import queue_depth

    return queue_depth(client, model)


class RecordingWorker:
    """A `celery worker` subprocess running tests/api/recording_worker.py on one model queue."""

    def __init__(self, settings: Settings, r: redis.Redis, name: str = "recorder") -> None:
        self.settings, self.r, self.name = settings, r, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(settings.data_dir) / f"worker-{name}.log"

    def start(self) -> RecordingWorker:
        env = {
            **os.environ,
            "REGIONFARM_REDIS_URL": self.settings.redis_url or "",
            "REGIONFARM_DATA_DIR": str(self.settings.data_dir),
            "TEST_WORKER_NAME": self.name,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
        if self.settings.s3_endpoint_url:
            env["REGIONFARM_S3_ENDPOINT_URL"] = self.settings.s3_endpoint_url
            env["REGIONFARM_S3_BUCKET"] = self.settings.s3_bucket
        self.r.delete("test:worker-ready")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "recording_worker",
                    "worker",
                    "-Q",
                    queue_for_model(MODEL),
                    "-P",
                    "solo",
                    "-c",
                    "1",
                    "--prefetch-multiplier",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"{self.name}@test",
                    "-l",
                    "warning",
                ],
                cwd=HERE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + WORKER_START_S
        while self.r.get("test:worker-ready") != self.name:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the recording worker did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def received(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.r.lrange("test:received", 0, -1)]

    def skipped(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.r.lrange("test:skipped", 0, -1)]


@pytest.fixture
def make_worker(r: redis.Redis) -> Iterator[Callable[[Settings], RecordingWorker]]:
    """Recording workers for other settings (S3 storage, say); all stopped at the end."""
    made: list[RecordingWorker] = []

    def make(settings: Settings) -> RecordingWorker:
        made.append(RecordingWorker(settings, r, name=f"recorder{len(made)}"))
        return made[-1]

    yield make
    for handle in made:
        handle.stop()


@pytest.fixture
def worker(settings: Settings, r: redis.Redis) -> Iterator[RecordingWorker]:
    """A recording worker, not started: call `.start()` when the test wants it consuming."""
    handle = RecordingWorker(settings, r)
    yield handle
    handle.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def make_spec() -> Callable[..., dict[str, Any]]:
    return three_region_spec


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def depth(r: redis.Redis) -> Callable[[], int]:
    """Messages waiting in the test model's queue."""
    return lambda: queue_length(r)
