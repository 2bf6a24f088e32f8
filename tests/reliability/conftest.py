"""The reliability suite's farm and its figures.

Every scenario runs the farm as real processes on loopback: its own redis-server (with or
without AOF, so a test may kill and restart it), moto's S3 server (the session's, one fresh
versioned bucket per farm, optionally behind a proxy the test can take down or make hang), the
API under gunicorn (`regionfarm api`) with two tenants' keys, and render workers on `tiny-random`
started by tests/harness/stand_in_worker.py: `regionfarm worker`'s supervisor and worker
processes, whose runner renders with a stand-in for the engine (a sleep per step, a noise image),
so that hundreds of jobs cost little.

Each scenario records one row (scenario, inputs or jobs, succeeded, failed by code, duplicated,
lost, 5xx); the session prints them as one table and writes it to
``test-artifacts/reliability/table.{md,json}``. ``REGIONFARM_RELIABILITY=full`` runs the full
sizes (`make reliability`); anything else runs the bounded sizes that CI runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import requests

from farm import redis_keys
from farm.embedded import redis_server_binary, wait_for_redis
from farm.keys import add_key, load_keys

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "regionfarm"
STAND_IN_WORKER = ROOT / "tests" / "harness" / "stand_in_worker.py"
"""`regionfarm worker` with the stand-in renderer (see there)."""
MODEL = "tiny-random"
FULL = os.environ.get("REGIONFARM_RELIABILITY", "").lower() == "full"
"""`make reliability` sets REGIONFARM_RELIABILITY=full; CI runs the bounded sizes."""
ARTIFACTS = ROOT / "test-artifacts" / "reliability"
FINAL = ("succeeded", "failed", "canceled")
TENANTS = ("acme", "globex")
AWS_SECRET = "rf-test-aws-secret-" + uuid.uuid4().hex
"""The S3 secret the farm's processes get (moto accepts any): distinctive, so the security
scenario can look for it in logs and records."""
LEASE_SECONDS = 3.0
START_TIMEOUT = 120.0


def pick(bounded: Any, full: Any) -> Any:
    """The bounded (CI) or the full (`make reliability`) size of something."""
    return full if FULL else bounded


# -- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    inputs: int
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    duplicated: int = 0
    lost: int = 0
    errors_5xx: int = 0
    seconds: float = 0.0
    notes: str = ""

    def failed_text(self) -> str:
        if not self.failed:
            return "0"
        total = sum(self.failed.values())
        return f"{total} (" + ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) + ")"


ROWS: list[Row] = []


@pytest.fixture
def record_row() -> Callable[[Row], Row]:
    """Adds a scenario's row to the session's table."""

    def add(row: Row) -> Row:
        ROWS.append(row)
        _write_table()
        return row

    return add


HEAD = (
    "scenario",
    "inputs/jobs",
    "succeeded",
    "failed (by code)",
    "duplicated",
    "lost",
    "5xx",
    "seconds",
)


def _cells(row: Row) -> list[str]:
    return [
        row.scenario,
        str(row.inputs),
        str(row.succeeded),
        row.failed_text(),
        str(row.duplicated),
        str(row.lost),
        str(row.errors_5xx),
        f"{row.seconds:.0f}",
    ]


def table_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def table_text(rows: list[Row]) -> str:
    cells = [list(HEAD)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    out = []
    for k, c in enumerate(cells):
        out.append(
            "  ".join(
                v.ljust(w) if i == 0 or i == 3 else v.rjust(w)
                for i, (v, w) in enumerate(zip(c, widths, strict=True))
            )
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _write_table() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    mode = "full" if FULL else "bounded"
    (ARTIFACTS / "table.md").write_text(f"Reliability suite ({mode})\n\n{table_markdown(ROWS)}\n")
    data = [{**r.__dict__, "failed": dict(r.failed)} for r in ROWS]
    (ARTIFACTS / "table.json").write_text(json.dumps({"mode": mode, "rows": data}, indent=2))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not ROWS:
        return
    terminalreporter.section(f"reliability ({'full' if FULL else 'bounded'})")
    for line in table_text(ROWS).splitlines():
        terminalreporter.write_line(line)
    notes = [f"{r.scenario}: {r.notes}" for r in ROWS if r.notes]
    for note in notes:
        terminalreporter.write_line(f"  note: {note}")
    terminalreporter.write_line(f"written to {ARTIFACTS}/table.md and table.json")


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProc:
    """A redis-server of one farm: with `aof`, every write is fsynced to its append-only file
    before it is answered (as deploy/ configures it), so a kill -9 loses nothing."""

    def __init__(self, workdir: Path, *, aof: bool) -> None:
        self.workdir, self.aof, self.port = workdir, aof, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.aof
            else ["--appendonly", "no"]
        )
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("redis-server") or redis_server_binary(),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    str(self.workdir),
                    *persistence,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_for_redis(self.url, lambda: proc.poll() is None)

    def kill(self) -> None:
        """kill -9: what a crash or an OOM kill does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, down_s: float) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()


class S3Proxy:
    """A TCP proxy in front of moto that a test can take down (`refuse`: connections are
    refused) or make hang (`hang`: connections are accepted and never answered)."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, free_port()
        self.mode = "forward"
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.listener = sock
        self.thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self.thread.start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(client)
            if self.mode == "hang":
                continue  # accepted, read by nobody, never answered
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        with self.lock:
            self.conns.append(upstream)
        pair = {client: upstream, upstream: client}
        try:
            while True:
                ready, _, _ = select.select(list(pair), [], [], 1.0)
                if self.mode != "forward":
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.close()

    def _drop_all(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def set(self, mode: str) -> None:
        """forward | refuse | hang. Open connections are cut whenever the mode changes."""
        assert mode in ("forward", "refuse", "hang")
        old, self.mode = self.mode, mode
        if mode == "refuse" and self.listener is not None:
            self._close_listener()
        self._drop_all()
        if mode != "refuse" and self.listener is None:
            self._listen()
        del old

    def _close_listener(self) -> None:
        # shutdown first: close alone leaves a socket that a thread is in accept() on listening.
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.listener = None

    def close(self) -> None:
        self.mode = "refuse"
        if self.listener is not None:
            self._close_listener()
        self._drop_all()


class Counted:
    """Every API answer of a farm, checked against the contract's error shape."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.by_status: Counter[int] = Counter()
        self.contract_breaks: list[str] = []
        self.outage = False
        """While True, a 503 is the contract's answer (broker or storage down), not a fault."""
        self.expected_503 = 0

    def note(self, method: str, path: str, response: requests.Response) -> None:
        problem = contract_problem(response)
        with self.lock:
            self.count += 1
            if response.status_code == 503 and self.outage:
                self.expected_503 += 1
            else:
                self.by_status[response.status_code] += 1
            if problem:
                self.contract_breaks.append(f"{method} {path} -> {response.status_code}: {problem}")

    @property
    def errors_5xx(self) -> int:
        return sum(n for s, n in self.by_status.items() if s >= 500)


def contract_problem(response: requests.Response) -> str | None:
    """What about an answer breaks the REST contract's error rules, or None."""
    status = response.status_code
    if status < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"non-JSON error body {response.text[:200]!r}"
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or not {"code", "message", "details"} <= err.keys():
        return f"error body without code, message and details: {str(body)[:200]}"
    if not isinstance(err["code"], str) or not err["code"].replace("_", "").isalnum():
        return f"error code is not snake_case: {err['code']!r}"
    text = json.dumps(body)
    if "Traceback" in text or 'File "' in text:
        return "a stack trace in the answer"
    for d in err["details"]:
        if not isinstance(d, dict) or not isinstance(d.get("loc"), list) or "msg" not in d:
            return f"a detail without loc and msg: {d}"
    return None


class Farm:
    """One farm of real processes. `workers(n)` starts render workers; `api` is gunicorn."""

    def __init__(
        self,
        tmp: Path,
        s3_url: str,
        model_cache: Path,
        *,
        aof: bool,
        step_ms: float,
        proxy: bool,
        env: dict[str, str],
    ) -> None:
        self.tmp, self.logs = tmp, tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis = RedisProc(tmp / "redis", aof=aof)
        self.redis.start()
        self.moto_url = s3_url
        self.proxy = S3Proxy(int(s3_url.rsplit(":", 1)[1])) if proxy else None
        self.bucket = f"rel-{uuid.uuid4().hex[:12]}"
        self.s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        self.s3.create_bucket(Bucket=self.bucket)
        # Versioned: every write of an object is kept, so a result written twice shows.
        self.s3.put_bucket_versioning(
            Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        self.keys_file = tmp / "keys.json"
        self.keys = {t: add_key(self.keys_file, t) for t in TENANTS}
        self.secrets = {v.name: v.webhook_secret for v in load_keys(self.keys_file).values()}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
        self.env.update(
            {
                "REGIONFARM_REDIS_URL": self.redis.url,
                "REGIONFARM_S3_ENDPOINT_URL": self.proxy.url if self.proxy else s3_url,
                "REGIONFARM_S3_BUCKET": self.bucket,
                "REGIONFARM_DATA_DIR": str(tmp / "data"),
                "REGIONFARM_DEFAULT_MODEL": MODEL,
                "REGIONFARM_LEASE_SECONDS": str(LEASE_SECONDS),
                "REGIONFARM_STORAGE_RETRY_SECONDS": "60",
                "REGIONFARM_TORCH_THREADS": "1",
                "REGIONFARM_MODEL_CACHE": str(model_cache),
                "REGIONFARM_API_KEYS_FILE": str(self.keys_file),
                "REGIONFARM_MAX_QUEUED_JOBS": "100000",
                "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
                "HF_HUB_OFFLINE": "1",
            }
        )
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.update(env)
        self.step_ms = step_ms
        """Milliseconds per step of the workers' stand-in renders."""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_procs: list[subprocess.Popen[bytes]] = []
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.api_proc = self._spawn(
            "api",
            [
                str(BIN),
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--workers",
                "2",
            ],
        )
        self.counted = Counted()
        self._local = threading.local()
        self.r = redis.Redis.from_url(
            self.redis.url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
        )
        self._wait_api()

    # -- processes ----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def _wait_api(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api_proc.poll() is not None:
                break
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the API did not start:\n{self.log_tail()}")

    def start_workers(
        self, count: int, *, env: dict[str, str] | None = None, wait: bool = True
    ) -> None:
        for _ in range(count):
            n = len(self.worker_procs)
            argv = [
                sys.executable,
                str(STAND_IN_WORKER),
                "--step-ms",
                str(self.step_ms),
                "--model",
                MODEL,
                "--device",
                "cpu",
                "--name",
                f"w{n}",
            ]
            proc = self._spawn(f"worker{n}", argv, env={**self.env, **(env or {})})
            self.worker_procs.append(proc)
        if wait:
            self.wait_live(sum(p.poll() is None for p in self.worker_procs))

    def start_webhooks(self) -> None:
        self._spawn("webhooks", [str(BIN), "worker", "--webhooks"])

    def live(self) -> list[dict[str, Any]]:
        from farm.workers import live_workers

        try:
            return [w for w in live_workers(self.r) if w["model"] == MODEL]
        except redis.RedisError:
            return []

    def wait_live(self, count: int, timeout: float = START_TIMEOUT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.live()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} workers not live in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)
        return found

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"== {p.name}\n" + p.read_text(errors="replace")[-chars:]
            for p in sorted(self.logs.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(
                        proc.pid, signal.SIGINT if proc in self.worker_procs else signal.SIGTERM
                    )
        deadline = time.monotonic() + 40
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.proxy is not None:
            self.proxy.close()
        self.redis.kill()
        self.r.close()

    # -- the API ------------------------------------------------------------------------

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def headers(self, tenant: str | None = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}

    def call(
        self, method: str, path: str, *, tenant: str | None = "acme", **kwargs: Any
    ) -> requests.Response:
        headers = {**self.headers(tenant), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        response = self.session().request(method, self.url + path, headers=headers, **kwargs)
        self.counted.note(method, path, response)
        return response

    def submit(self, spec: dict[str, Any], tenant: str = "acme", **kwargs: Any) -> str | None:
        """The new job's id, or None when the API did not accept it."""
        answer = self.call("POST", "/v1/jobs", tenant=tenant, json=spec, **kwargs)
        return answer.json()["id"] if answer.status_code == 202 else None

    def job(self, job_id: str, tenant: str = "acme") -> tuple[int, dict[str, Any]]:
        answer = self.call("GET", f"/v1/jobs/{job_id}", tenant=tenant)
        return answer.status_code, answer.json()

    # -- waiting and counting -----------------------------------------------------------

    def statuses(self, ids: list[str]) -> dict[str, str | None]:
        """Each job's status as Redis has it now (None: no record)."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(redis_keys.job_key(job_id), "status")
        return dict(zip(ids, pipe.execute(), strict=True))

    def wait_final(self, ids: list[str], timeout: float) -> dict[str, str | None]:
        """Wait until every job is final or has no record; what each is at the end."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                now = self.statuses(ids)
            except redis.RedisError:
                now = {}
            if now and all(s in FINAL or s is None for s in now.values()):
                return now
            if time.monotonic() > deadline:
                return now
            time.sleep(0.25)

    def versions(self, job_id: str, tenant: str = "acme") -> dict[str, list[dict[str, Any]]]:
        """Every stored version of each of a job's objects, by object name."""
        out: dict[str, list[dict[str, Any]]] = {}
        pages = self.s3.get_paginator("list_object_versions")
        for page in pages.paginate(Bucket=self.bucket, Prefix=f"{tenant}/{job_id}/"):
            for v in page.get("Versions", []):
                out.setdefault(v["Key"].rsplit("/", 1)[1], []).append(v)
        return out

    def tally(
        self,
        scenario: str,
        ids: list[str],
        *,
        started: float,
        tenant: str = "acme",
        redis_kept: bool = True,
        rejected_5xx: int = 0,
        notes: str = "",
    ) -> Row:
        """The row of a scenario whose accepted jobs are `ids`, from the API's answers, the
        stored objects (versions) and the records' counters."""
        row = Row(scenario, len(ids), notes=notes)
        rewritten = 0
        for job_id in ids:
            status, job = self.job(job_id, tenant)
            if status == 404:
                if redis_kept:
                    row.lost += 1
                else:
                    row.failed["forgotten by Redis (404)"] += 1
                continue
            assert status == 200, job
            if job["status"] not in FINAL:
                row.lost += 1  # still not final at the end of the bound
                continue
            if job["status"] == "failed":
                row.failed[job["error"]["code"]] += 1
                continue
            if job["status"] == "canceled":
                row.failed["canceled"] += 1
                continue
            versions = self.versions(job_id, tenant)
            image = next((v for k, v in versions.items() if k.startswith("image.")), [])
            latest = [v for v in image if v["IsLatest"]]
            stored = latest[0]["Size"] if latest else None
            if stored != job["result"]["bytes"] or "job.json" not in versions:
                row.lost += 1  # succeeded without its verified object: the result is lost
                continue
            row.succeeded += 1
            if len({v["ETag"] for v in image}) > 1:
                row.duplicated += 1  # rendered twice, with different results
            elif len(image) > 1:
                rewritten += 1
        if redis_kept:
            transitions = int(self.r.hget(redis_keys.STATS_KEY, "succeeded") or 0)
            succeeded_all = sum(
                1 for s in self.statuses(self._all_ids()).values() if s == "succeeded"
            )
            row.duplicated += max(0, transitions - succeeded_all)
        row.errors_5xx = self.counted.errors_5xx + rejected_5xx
        row.seconds = time.monotonic() - started
        if rewritten:
            row.notes = (row.notes + "; " if row.notes else "") + (
                f"{rewritten} image(s) written twice with the same bytes (a worker died between "
                "storing the image and its job.json)"
            )
        return row

    def _all_ids(self) -> list[str]:
        ids: list[str] = []
        for tenant in TENANTS:
            ids += self.r.zrange(redis_keys.tenant_jobs_key(tenant), 0, -1)
        return ids

    def orphaned_uploads(self) -> list[dict[str, Any]]:
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])


@pytest.fixture(scope="session")
def spec_factory() -> Callable[..., dict[str, Any]]:
    """``spec(seed=1, steps=5, ...)``: a small two-region job (256x256, PNG masks)."""
    import numpy as np

    from schemas import encode_png_data_uri

    left = np.zeros((256, 256), dtype=bool)
    left[:, :128] = True
    masks = [encode_png_data_uri(left), encode_png_data_uri(~left)]

    def make(**overrides: Any) -> dict[str, Any]:
        spec = {
            "kind": "regions",
            "model": MODEL,
            "width": 256,
            "height": 256,
            "steps": 5,
            "background": {"prompt": "a clear sky"},
            "regions": [
                {"prompt": "a red house", "mask": masks[0]},
                {"prompt": "a green tree", "mask": masks[1]},
            ],
        }
        spec.update(overrides)
        return spec

    return make


@pytest.fixture
def make_farm(s3_server: str, model_cache: Path, tmp_path: Path) -> Iterator[Callable[..., Farm]]:
    """``make_farm(aof=True, step_ms=50, proxy=False, env={})``: a farm, stopped at the end."""
    farms: list[Farm] = []

    def make(
        *,
        aof: bool = True,
        step_ms: float = 50,
        proxy: bool = False,
        env: dict[str, str] | None = None,
    ) -> Farm:
        farm = Farm(
            tmp_path / f"farm{len(farms)}",
            s3_server,
            model_cache,
            aof=aof,
            step_ms=step_ms,
            proxy=proxy,
            env=env or {},
        )
        farms.append(farm)
        return farm

    yield make
    for farm in farms:
        farm.stop()


@pytest.fixture(scope="session")
def rel() -> Any:
    """The suite's helpers for test modules (which cannot import this conftest):
    ``rel.pick(bounded, full)``, ``rel.Row``, ``rel.FULL``, ``rel.MODEL``, ``rel.FINAL``."""
    from types import SimpleNamespace

    return SimpleNamespace(
        pick=pick,
        Row=Row,
        FULL=FULL,
        MODEL=MODEL,
        FINAL=FINAL,
        contract_problem=contract_problem,
        free_port=free_port,
        AWS_SECRET=AWS_SECRET,
        ROOT=ROOT,
        BIN=BIN,
        ARTIFACTS=ARTIFACTS,
    )
