"""Shared fixtures: one model cache for the whole session, built-in tiny models loaded once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from farm.embedded import EmbeddedRedisError, redis_server_binary, wait_for_redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """The cache every test and every subprocess shares (REGIONFARM_MODEL_CACHE), so the tiny
    models are built once per session, as they are once per machine in real use."""
    path = Path(os.environ.get("REGIONFARM_TEST_MODEL_CACHE") or tmp_path_factory.mktemp("models"))
    os.environ["REGIONFARM_MODEL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A Redis of the tests' own (the system binary) on a free port, for the whole session:
    tests flush it freely and may stop it, and nothing else on the machine is touched."""
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, lambda: proc.poll() is None)
    except EmbeddedRedisError:
        proc.kill()
        raise
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_START_S = 30.0
"""Seconds moto's server may take to answer before the session gives up on it."""


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Test credentials and region for boto3, and no ~/.aws files: restored at the end."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def s3_server(s3_service: tuple[str, subprocess.Popen[bytes]]) -> str:
    """The endpoint URL of a moto S3 server running in a subprocess for the whole session."""
    return s3_service[0]


@pytest.fixture(scope="session")
def s3_server_process(s3_service: tuple[str, subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """The moto server's process (tests freeze it with SIGSTOP to take storage down)."""
    return s3_service[1]


@pytest.fixture(scope="session")
def s3_service(
    aws_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """moto's S3 server in a subprocess: its URL and its process."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    # moto logs every request: to a file, since an unread pipe would fill and stall it.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(url, proc, log_path)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"moto server at {url} did not start (exit code {proc.poll()}):\n{tail}")


# -- time budget per suite ----------------------------------------------------------------
# CI must stay well under 30 minutes on a 2-core machine. Each suite (tests/<suite>/) has a
# budget in seconds, about twice what it takes on a busy machine today; the session prints the
# time of every suite and fails when one is over, so a slow test is noticed when it lands.
SUITE_BUDGETS = {
    "api": 240,
    "bench": 300,
    "cli": 420,
    "deploy": 60,
    "examples": 120,
    "farm": 90,
    "integration": 600,
    "reliability": 600,
    "schemas": 90,
    "toy": 420,
    "web": 180,
    "worker": 600,
}
if os.environ.get("REGIONFARM_RELIABILITY", "").lower() == "full":  # `make reliability`
    SUITE_BUDGETS["reliability"] = 3600
_suite_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    parts = Path(report.nodeid.split("::")[0]).parts
    suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _suite_seconds[suite] = _suite_seconds.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _suite_seconds:
        return
    terminalreporter.section("time per suite (budget)")
    over = []
    for suite, seconds in sorted(_suite_seconds.items()):
        budget = SUITE_BUDGETS.get(suite)
        mark = ""
        if budget is not None and seconds > budget:
            over.append(suite)
            mark = "  OVER BUDGET"
        terminalreporter.write_line(f"{suite:12s} {seconds:7.1f} s  ({budget or '-'} s){mark}")
    if over:
        terminalreporter.write_line(f"suites over their time budget: {', '.join(over)}")


def pytest_sessionfinish(session, exitstatus) -> None:
    # Summary hooks run after this one; check the sums here so that an over-budget suite
    # fails the run (exit status 1) instead of only being printed.
    over = [s for s, t in _suite_seconds.items() if t > SUITE_BUDGETS.get(s, float("inf"))]
    if over and exitstatus == 0:
        session.exitstatus = 1
