"""`regionfarm api` under gunicorn and `regionfarm up` with its embedded Redis, as processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli.api_cmd import public_url
from farm.keys import add_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "regionfarm"
SPEC = ROOT / "examples" / "street.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env["REGIONFARM_MODEL_CACHE"] = os.environ.get("REGIONFARM_MODEL_CACHE", "")
    env.update(extra)
    return env


def _request(url: str, *, method: str = "GET", body: dict | None = None, key: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A farm process whose output goes to `log` (a pipe nobody reads would fill and stall)."""
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if _request(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} did not become ready")


def _farm_processes() -> set[int]:
    """PIDs of farm processes on this machine: workers, their supervisors, embedded Redis."""
    found = set()
    for pattern in ("worker.main", "cli.main worker", "redis-server"):
        done = subprocess.run(["pgrep", "-f", pattern], check=False, capture_output=True, text=True)
        found |= {int(pid) for pid in done.stdout.split()}
    return found


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_api_refuses_a_public_address_with_auth_off(tmp_path):
    done = subprocess.run(
        [str(BIN), "api", "--host", "0.0.0.0"],
        env=_env(REGIONFARM_DATA_DIR=str(tmp_path)),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--insecure" in done.stderr and "Traceback" not in done.stderr


def test_api_under_gunicorn_serves_with_keys_and_merges_worker_metrics(redis_url, tmp_path):
    keys_file = tmp_path / "keys.json"
    key = add_key(keys_file, "acme")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(
        REGIONFARM_REDIS_URL=redis_url,
        REGIONFARM_API_KEYS_FILE=str(keys_file),
        REGIONFARM_DATA_DIR=str(tmp_path / "data"),
        REGIONFARM_DEFAULT_MODEL="tiny-random",
    )
    log = tmp_path / "api.log"
    proc = _start([str(BIN), "api", "--port", str(port), "--workers", "2"], env, log)
    try:
        _wait_ready(base, proc, log)
        spec = json.loads(SPEC.read_text())
        assert _request(f"{base}/v1/jobs", method="POST", body=spec)[0] == 401
        for _ in range(6):  # several connections: both gunicorn workers answer some
            status, body = _request(f"{base}/v1/jobs", method="POST", body=spec, key=key)
            assert status == 202, body
        text = _request(f"{base}/metrics")[1].decode()
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith("regionfarm_api_requests_total") and 'status="202"' in ln
        )
        assert float(line.rsplit(" ", 1)[1]) == 6.0
        assert 'regionfarm_queue_depth{model="tiny-random"} 6.0' in text
    finally:
        code = _stop(proc)
    assert code == 0


@pytest.mark.timeout(300)
def test_up_keeps_jobs_across_a_restart_and_finishes_the_queued_ones(tmp_path, model_cache):
    data = tmp_path / "farm"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        str(BIN),
        "up",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-worker",
    ]
    env = _env()
    log = tmp_path / "up.log"
    first = _start(args, env, log)
    try:
        _wait_ready(base, first, log)
        url = (data / "redis" / "url").read_text().strip()
        submitted = subprocess.run(
            [str(BIN), "submit", str(SPEC), "--url", base, "--model", "tiny-random"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split()[0]
        assert job_id.startswith("job_")
    finally:
        assert _stop(first) == 0
    # The local tenant's webhook secret was made at the first start, private to its owner.
    secret_file = data / "webhook-secret"
    secret = secret_file.read_text().strip()
    assert secret.startswith("whsec_") and secret_file.stat().st_mode & 0o777 == 0o600
    port_of_redis = url.rsplit(":", 1)[1].split("/")[0]
    pgrep = ["pgrep", "-f", f"redis-server.*{port_of_redis}"]
    assert subprocess.run(pgrep, check=False, capture_output=True, text=True).stdout == ""
    # The second time with a worker: the job is still listed, still queued, and then done.
    second = _start([*args[:-1], "--model", "tiny-random"], env, log)
    try:
        _wait_ready(base, second, log)
        status, body = _request(f"{base}/v1/jobs")
        assert status == 200 and [j["id"] for j in json.loads(body)["jobs"]] == [job_id]
        deadline = time.monotonic() + 240
        while (job := json.loads(_request(f"{base}/v1/jobs/{job_id}")[1]))["status"] != "succeeded":
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.3)
    finally:
        assert _stop(second) == 0
    # Kept across the restart, and printed once: by the start that made it (the second start
    # names the file instead); each start prints the result URLs' base.
    assert secret_file.read_text().strip() == secret
    printed = log.read_text()
    assert printed.count(secret) == 1
    assert printed.count(f"signed with the secret (kept in {secret_file}") == 1
    assert printed.count(f"result URLs (webhooks, job.json) point at {base}") == 2
    assert job["result"]["url"] == f"{base}/v1/jobs/{job_id}/result"


def test_up_makes_its_public_url_from_the_bind_address():
    assert public_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert public_url("localhost", 80) == "http://localhost:80"
    assert public_url("::1", 8000) == "http://[::1]:8000"
    assert public_url("[::1]", 8000) == "http://[::1]:8000"
    # A wildcard address is no address to reach: this machine's name instead.
    assert public_url("0.0.0.0", 8000) == f"http://{socket.gethostname()}:8000"
    assert public_url("::", 9) == f"http://{socket.gethostname()}:9"


def test_readme_farm_commands_run_as_written(tmp_path, model_cache):
    text = (ROOT / "README.md").read_text()
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines()
        if line.startswith(".venv/bin/regionfarm") and line.split()[1] in ("up", "submit")
    ]
    up = [line for line in lines if line.split()[1] == "up"]
    assert len(up) == 1 and up[0].endswith("&") and len(lines) >= 2
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(BIN), *up[0].rstrip("&").split()[1:], "--port", str(port)]
    before = _farm_processes()
    log = tmp_path / "up.log"
    with log.open("ab") as out:
        server = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=out, stderr=out)
    try:
        _wait_ready(base, server, log)
        for line in lines[1:]:
            done = subprocess.run(
                [str(BIN), *line.split()[1:], "--url", base],
                cwd=tmp_path,
                env=_env(),
                check=False,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{line}\n{done.stderr}\n{log.read_text()[-3000:]}"
        assert (tmp_path / "street.png").read_bytes().startswith(b"\x89PNG")
    finally:
        assert _stop(server) == 0
    # Ctrl-C stopped the whole tree: API, Redis, the render and webhook workers.
    assert _farm_processes() <= before
    # The job records were kept in Redis's append-only log (a file up to Redis 6, a dir after).
    redis_dir = tmp_path / ".regionfarm" / "redis"
    assert any(p.name.startswith("appendonly") for p in redis_dir.iterdir())
