"""Submit-to-start latency on an idle farm: `regionfarm up --model tiny-random`, then jobs one
at a time; prints how long each waited between its submit and its worker starting it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import redis

from farm import redis_keys

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "regionfarm"
SPEC = {
    "kind": "image",
    "model": "tiny-random",
    "width": 256,
    "height": 256,
    "background": {"prompt": "a lighthouse at dusk"},
}


def _call(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.loads(answer.read())


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()  # 3.11 reads the Z


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="regionfarm-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env["REGIONFARM_MODEL_CACHE"] = os.environ.get("REGIONFARM_MODEL_CACHE", str(data / "models"))
    farm = subprocess.Popen(
        [str(BIN), "up", "--data-dir", str(data), "--port", str(port), "--model", "tiny-random"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                models = _call(f"{base}/v1/models")["models"]
                if any(m["name"] == "tiny-random" and m["live"] for m in models):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or farm.poll() is not None:
                print("the farm did not come up", file=sys.stderr)
                return 1
            time.sleep(0.2)
        waits, totals = [], []
        for i in range(args.jobs):
            sent = time.time()
            job = _call(f"{base}/v1/jobs", {**SPEC, "seed": i})
            while job["status"] not in ("succeeded", "failed", "canceled"):
                time.sleep(0.02)
                job = _call(f"{base}/v1/jobs/{job['id']}")
            waits.append(_time(job["started_at"]) - _time(job["created_at"]))
            totals.append(time.time() - sent)
        client = redis.Redis.from_url((data / "redis" / "url").read_text().strip())
        heartbeats = client.keys(redis_keys.WORKER_PATTERN)
        loads = [json.loads(client.hget(k, "info"))["loads"] for k in heartbeats]
        ms = sorted(w * 1000 for w in waits)
        print(f"idle farm, {args.jobs} jobs one at a time (tiny-random 256x256 on the CPU)")
        print(
            f"submit -> started: p50 {statistics.median(ms):.0f} ms, "
            f"p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms, max {ms[-1]:.0f} ms"
        )
        print(f"submit -> succeeded (client view): p50 {statistics.median(totals):.2f} s")
        print(f"model loads per worker process: {loads}")
        return 0
    finally:
        farm.send_signal(signal.SIGINT)
        try:
            farm.wait(120)
        except subprocess.TimeoutExpired:
            farm.kill()


if __name__ == "__main__":
    sys.exit(main())
