"""Sustained load on the whole farm: the API under gunicorn takes `POST /v1/jobs` at its measured
capacity for a while (open loop) while 2 `regionfarm worker` processes drain the queue; then
every accepted job is accounted for. Prints a table and plots the queue depth over time.

The workers are the test suite's stand-in workers (tests/harness/stand_in_worker.py, run from
this checkout: `regionfarm worker` whose runner renders with a stand-in, a sleep per step and a
small noise image), so the figures are the farm's: API, Redis, Celery, records, storage.
The load generator, Redis and server plumbing are bench/api.py's; results go to the farm's
local storage (API and workers share its data dir).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path and its api.py would shadow the `api`
# package: the repository root goes first instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from bench.api import (
    MODEL,
    TENANT,
    BenchError,
    Meter,
    Proc,
    Target,
    _post,
    _server_env,
    closed_loop,
    job_spec,
    machine_facts,
    open_loop,
    start_redis,
    start_server,
    wait_ready,
)
from bench.api import _free_port as free_port

STAND_IN_WORKER = ROOT / "tests" / "harness" / "stand_in_worker.py"
"""`regionfarm worker` with a stand-in renderer: the test suite's, used here as it is."""
SAMPLE_S = 0.5
"""Seconds between two samples of the queue depth."""
FINAL = ("succeeded", "failed", "canceled")


def _progress(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def start_workers(
    count: int, redis_url: str, workdir: Path, args: argparse.Namespace
) -> list[Proc]:
    env = _server_env(redis_url, workdir / "data")
    env.update(REGIONFARM_TORCH_THREADS="1", HF_HUB_OFFLINE="1", REGIONFARM_LEASE_SECONDS="10")
    if args.model_cache:
        env["REGIONFARM_MODEL_CACHE"] = str(args.model_cache)
    procs = []
    for n in range(count):
        argv = [
            sys.executable,
            str(STAND_IN_WORKER),
            "--step-ms",
            str(args.step_ms),
            "--model",
            MODEL,
            "--device",
            "cpu",
            "--name",
            f"load{n}",
        ]
        procs.append(Proc(f"worker{n}", argv, workdir / f"worker{n}.log", env=env, cwd=ROOT))
    return procs


class Sampler(threading.Thread):
    """Queue depth and jobs by status, every SAMPLE_S seconds, until stopped."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.samples: list[dict[str, float]] = []
        self.t0 = time.monotonic()
        self.stopping = threading.Event()

    def sample(self) -> dict[str, float]:
        from farm import redis_keys
        from farm.broker import queue_depth

        pipe = self.client.pipeline(transaction=False)
        for status in ("queued", "running"):
            pipe.scard(redis_keys.active_key(status))
        pipe.hget(redis_keys.STATS_KEY, "succeeded")
        queued, running, done = pipe.execute()
        return {
            "t": time.monotonic() - self.t0,
            "depth": queue_depth(self.client, MODEL),
            "queued": queued,
            "running": running,
            "succeeded": int(done or 0),
        }

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(self.sample())
            self.stopping.wait(SAMPLE_S)


def wait_live(redis_url: str, count: int, procs: list[Proc], timeout: float = 180) -> None:
    import redis

    from farm.workers import live_workers

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while len([w for w in live_workers(client) if w["model"] == MODEL]) < count:
        if time.monotonic() > deadline or not all(p.alive() for p in procs):
            tails = "\n".join(p.tail() for p in procs)
            raise BenchError(f"{count} workers not live in {timeout:g} s:\n{tails}")
        time.sleep(0.2)


def account(redis_url: str, accepted: int, workdir: Path, args: argparse.Namespace) -> dict:
    """Every accepted job against the records, the results and the counters."""
    import redis

    from farm import redis_keys
    from farm.broker import queue_depth

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = client.zrange(redis_keys.tenant_jobs_key(TENANT), 0, -1)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(redis_keys.job_key(job_id), "status", "error", "attempts")
    statuses: dict[str, int] = {}
    failed: dict[str, int] = {}
    reruns = 0
    for status, error, attempts in pipe.execute():
        statuses[status] = statuses.get(status, 0) + 1
        if status == "failed":
            code = json.loads(error)["code"]
            failed[code] = failed.get(code, 0) + 1
        reruns += int(attempts or 0) > 1
    transitions = int(client.hget(redis_keys.STATS_KEY, "succeeded") or 0)
    stored = _count_results(workdir, args)
    succeeded = statuses.get("succeeded", 0)
    return {
        "accepted": accepted,
        "records": len(ids),
        "by_status": statuses,
        "succeeded": succeeded,
        "failed": failed,
        "unfinished": sum(n for s, n in statuses.items() if s not in FINAL),
        "lost": max(0, accepted - len(ids)) + max(0, succeeded - stored),
        "duplicated": max(0, transitions - succeeded),
        "results_stored": stored,
        "rerun": reruns,
        "queue_depth_at_end": queue_depth(client, MODEL),
    }


def _count_results(workdir: Path, args: argparse.Namespace) -> int:
    """Images stored for the tenant (one per succeeded job), in the farm's local storage."""
    root = workdir / "data" / "storage" / TENANT
    return sum(1 for _ in root.glob("job_*/image.*")) if root.is_dir() else 0


def plot(path: Path, samples: list[dict[str, float]], marks: dict[str, float]) -> str:
    """Queue depth over time, with matplotlib when installed, else with Pillow; says which."""
    ts = [s["t"] for s in samples]
    series = [
        ("messages in the queue", [s["depth"] for s in samples], (31, 119, 180)),
        ("jobs running", [s["running"] for s in samples], (214, 39, 40)),
    ]
    title = (
        "queue depth over time (load " + ", ".join(f"{k} {v:.0f} s" for k, v in marks.items()) + ")"
    )
    try:
        import matplotlib
    except ImportError:
        _plot_pillow(path, title, ts, series, marks)
        return "Pillow"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, ys, color in series:
        ax.plot(ts, ys, label=label, color=[c / 255 for c in color])
    for label, t in marks.items():
        ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
        ax.text(t, ax.get_ylim()[1] * 0.95, label, rotation=90, va="top", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("jobs")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "matplotlib"


def _plot_pillow(path: Path, title: str, ts: list[float], series: list, marks: dict) -> None:
    from PIL import Image, ImageDraw, ImageFont

    w, h, left, right, top, bottom = 900, 450, 70, 20, 50, 50
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:
        font = ImageFont.load_default()
    x_top = max(ts) if ts and max(ts) > 0 else 1.0
    y_top = max([max(ys) for _, ys, _ in series if ys] + [1]) * 1.1

    def px(t: float) -> float:
        return left + (w - left - right) * t / x_top

    def py(y: float) -> float:
        return h - bottom - (h - top - bottom) * y / y_top

    draw.text((10, 10), title, fill="black", font=font)
    draw.line([(left, h - bottom), (w - right, h - bottom)], fill="black", width=2)
    draw.line([(left, h - bottom), (left, top)], fill="black", width=2)
    for k in range(6):
        y = y_top * k / 5
        draw.text((5, py(y) - 7), f"{y:.0f}", fill="black", font=font)
        draw.line([(left, py(y)), (w - right, py(y))], fill=(230, 230, 230))
        t = x_top * k / 5
        draw.text((px(t) - 10, h - bottom + 8), f"{t:.0f} s", fill="black", font=font)
    for label, t in marks.items():
        draw.line([(px(t), top), (px(t), h - bottom)], fill=(150, 150, 150))
        draw.text((px(t) + 3, top), label, fill=(100, 100, 100), font=font)
    for n, (label, ys, color) in enumerate(series):
        if len(ts) > 1:
            draw.line([(px(t), py(y)) for t, y in zip(ts, ys, strict=True)], fill=color, width=2)
        draw.text((w - 220, top + 5 + 16 * n), label, fill=color, font=font)
    image.save(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_facts()}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rf-load-")))
        redis_url, redis_proc = start_redis(workdir, stack)
        port = free_port()
        api_size = (args.api_workers, args.api_connections)
        _progress(f"API: gunicorn {api_size[0]} x {api_size[1]} connections on :{port}")
        server = start_server("api", port, *api_size, redis_url, workdir)
        stack.callback(server.stop)
        workers = start_workers(args.workers, redis_url, workdir, args)
        for proc in workers:
            stack.callback(proc.stop)
        wait_ready(server, port)
        _progress(f"waiting for {args.workers} workers")
        wait_live(redis_url, args.workers, workers)
        body = json.dumps({**job_spec(), "steps": args.steps}, separators=(",", ":")).encode()
        target = Target("127.0.0.1", port, "/v1/jobs", body)
        status, conn = _post(target, None)
        if conn is not None:
            conn.close()
        if status != 202:
            raise BenchError(f"the probe answered {status}:\n{server.tail()}")
        accepted = 1
        sampler = Sampler(redis_url)
        sampler.start()
        meter = Meter(server, redis_proc)
        _progress(f"measuring capacity: closed loop, {args.clients} clients, {args.measure:g} s")
        capacity = closed_loop(target, args.clients, args.measure, 0.5, 1, meter, stack)
        accepted += sum(
            int(m["status_counts"].get("202", 0)) for m in (capacity, capacity["warmup"])
        )
        rate = args.rate or max(1.0, capacity["rps"] * args.load)
        load_start = sampler.samples[-1]["t"] if sampler.samples else 0.0
        _progress(f"load: open loop at {rate:.0f} req/s for {args.duration:g} s")
        loaded = open_loop(target, rate, args.duration, min(64, max(4, int(rate))), 0.0, meter)
        accepted += sum(int(m["status_counts"].get("202", 0)) for m in (loaded, loaded["warmup"]))
        load_end = time.monotonic() - sampler.t0
        _progress(f"draining (at most {args.drain_timeout:g} s)")
        drained_at = None
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            s = sampler.sample()
            if s["depth"] == 0 and s["queued"] == 0 and s["running"] == 0:
                drained_at = s["t"]
                break
            time.sleep(SAMPLE_S)
        time.sleep(2 * SAMPLE_S)
        sampler.stopping.set()
        sampler.join()
        results["accounting"] = account(redis_url, accepted, workdir, args)
        errors_5xx = sum(
            n for k, n in loaded["status_counts"].items() if k.isdigit() and int(k) >= 500
        )
        results.update(
            capacity={k: capacity[k] for k in ("rps", "sent", "errors", "p50_ms", "p99_ms")},
            load=loaded,
            rate=rate,
            errors_5xx=errors_5xx,
            samples=sampler.samples,
            marks={"start": load_start, "end": load_end},
            drained_at=drained_at,
            drain_seconds=None if drained_at is None else drained_at - load_end,
            max_depth=max((s["depth"] for s in sampler.samples), default=0),
        )
        if args.plot:
            results["plot"] = str(args.plot)
            results["plotted_with"] = plot(args.plot, sampler.samples, results["marks"])
        if not server.alive():
            raise BenchError(f"the API died during the run:\n{server.tail()}")
    return results


def print_report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    cap, load, acc = r["capacity"], r["load"], r["accounting"]
    print(
        f"farm load benchmark: POST /v1/jobs ({len(json.dumps(job_spec()))} B spec), API "
        f"gunicorn {args.api_workers}x{args.api_connections}, {args.workers} workers "
        f"(stand-in renders, {args.steps} steps x {args.step_ms:g} ms)"
    )
    m = r["machine"]
    print(f"machine: {m['cpu_count']} CPUs, Python {m['python']}, redis {m['redis']}")
    print()
    print(f"{'measure':<34}{'value':>12}")
    rows = [
        ("capacity (closed loop, req/s)", f"{cap['rps']:.1f}"),
        ("load rate scheduled (req/s)", f"{r['rate']:.1f}"),
        ("load rate achieved (req/s)", f"{load['achieved_rate']:.1f}"),
        ("load seconds", f"{args.duration:g}"),
        ("requests", f"{load['sent']}"),
        ("errors (non-2xx or no answer)", f"{load['errors']}"),
        ("5xx", f"{r['errors_5xx']}"),
        ("submit p50 (ms)", f"{load['p50_ms']:.1f}"),
        ("submit p99 (ms)", f"{load['p99_ms']:.1f}"),
        ("max queue depth (jobs)", f"{r['max_depth']}"),
        (
            "drained after load (s)",
            "not drained" if r["drain_seconds"] is None else f"{r['drain_seconds']:.1f}",
        ),
        ("jobs accepted (202)", f"{acc['accepted']}"),
        ("job records", f"{acc['records']}"),
        ("succeeded", f"{acc['succeeded']}"),
        ("failed", f"{sum(acc['failed'].values())} {acc['failed'] or ''}".strip()),
        ("unfinished at the end", f"{acc['unfinished']}"),
        ("results stored", f"{acc['results_stored']}"),
        ("duplicated", f"{acc['duplicated']}"),
        ("lost", f"{acc['lost']}"),
    ]
    for label, value in rows:
        print(f"{label:<34}{value:>12}")
    if r.get("plot"):
        print(f"queue depth plot: {r['plot']} ({r['plotted_with']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument(
        "--measure",
        type=float,
        default=5.0,
        help="seconds of the closed loop that measures capacity (default 5)",
    )
    p.add_argument(
        "--load",
        type=float,
        default=1.0,
        help="fraction of the measured capacity to submit at (default 1)",
    )
    p.add_argument("--rate", type=float, help="submit at this many req/s instead")
    p.add_argument("--clients", type=int, default=16, help="closed-loop clients (default 16)")
    p.add_argument("--workers", type=int, default=2, help="render workers (default 2)")
    p.add_argument("--steps", type=int, default=5, help="steps per job (default 5)")
    p.add_argument("--step-ms", type=float, default=0.0, help="render sleep per step (default 0)")
    p.add_argument("--api-workers", type=int, default=2, help="gunicorn processes (default 2)")
    p.add_argument(
        "--api-connections", type=int, default=1000, help="connections per process (1000)"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for the queue to drain (default 900)",
    )
    p.add_argument("--model-cache", type=Path, help="REGIONFARM_MODEL_CACHE of the workers")
    p.add_argument("--plot", type=Path, help="write the queue-depth plot (PNG) here")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("load: interrupted; stopping what it started", file=sys.stderr)
        return 130
    print_report(args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    acc = results["accounting"]
    ok = results["load"]["errors"] == 0 and acc["lost"] == 0 and acc["duplicated"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
