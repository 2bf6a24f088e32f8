"""`regionfarm api` (the API alone) and `regionfarm up` (the local farm on embedded defaults)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from farm.embedded import EmbeddedRedis, EmbeddedRedisError
from farm.keys import KeyRing, KeysFileError
from farm.logs import configure_logging
from schemas import ModelsFileError, Settings

__all__ = ["add_parsers", "is_loopback", "serve"]

EXIT_ERROR, EXIT_BAD_INPUT = 1, 2
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_KEYS_FILE = "api-keys.json"
"""The keys file `regionfarm up` reads from its data dir when REGIONFARM_API_KEYS_FILE is unset."""
DEFAULT_WORKERS, DEFAULT_THREADS = 2, 16
"""gunicorn processes, and threads in each (an open events stream holds one thread)."""


def add_parsers(sub: Any) -> None:
    api = sub.add_parser("api", help="the REST API alone (gunicorn; Flask's server with --dev)")
    _common(api)
    api.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="gunicorn processes")
    api.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads per process")
    api.add_argument("--dev", action="store_true", help="Flask's development server instead")
    api.set_defaults(handler=run_api)

    up = sub.add_parser("up", help="the whole farm in one process tree on embedded defaults")
    _common(up)
    up.add_argument("--data-dir", type=Path, help="embedded Redis and local storage (default "
                    "REGIONFARM_DATA_DIR or ./.regionfarm)")  # fmt: skip
    up.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="start workers for this model (repeat for more; default: the farm's default "
        "model): one per visible GPU, or one on the CPU",
    )
    up.add_argument(
        "--no-worker", action="store_true", help="no render worker: jobs wait for one to connect"
    )
    up.add_argument("--device", help="device of those workers (default: CUDA when present)")
    up.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="API processes")
    up.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads per process")
    up.set_defaults(handler=run_up, dev=False)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8000)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address with auth off (no API keys configured)",
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _settings(**update: Any) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"REGIONFARM_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(_fail(f"bad configuration: {problems}", EXIT_BAD_INPUT)) from None
    return settings.model_copy(update={k: v for k, v in update.items() if v is not None})


def _fail(message: str, code: int) -> int:
    print(f"regionfarm: {message}", file=sys.stderr)
    return code


def _check_bind(settings: Settings, host: str, insecure: bool) -> int | None:
    try:
        keys = KeyRing.from_settings(settings.api_keys_file, settings.api_keys)
    except KeysFileError as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    if not keys.enabled and not is_loopback(host) and not insecure:
        return _fail(
            f"--host {host} is not a loopback address and no API keys are configured, so "
            "anyone who reaches it could submit jobs: make a key with `regionfarm keys add "
            "TENANT` and set REGIONFARM_API_KEYS_FILE, or pass --insecure",
            EXIT_BAD_INPUT,
        )
    return None


def run_api(args: argparse.Namespace) -> int:
    configure_logging()
    settings = _settings()
    refused = _check_bind(settings, args.host, args.insecure)
    if refused is not None:
        return refused
    return _with_redis(settings, args)


def run_up(args: argparse.Namespace) -> int:
    configure_logging()
    settings = _settings(data_dir=args.data_dir)
    keys_file = settings.data_dir / DEFAULT_KEYS_FILE
    if settings.api_keys_file is None and keys_file.is_file():
        # `regionfarm keys add` writes here by default: the local farm picks it up.
        settings = settings.model_copy(update={"api_keys_file": keys_file})
    refused = _check_bind(settings, args.host, args.insecure)
    if refused is not None:
        return refused
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return _with_redis(settings, args)


def _start_workers(settings: Settings, args: argparse.Namespace) -> list[subprocess.Popen]:
    """`regionfarm worker` for each --model, and the webhook worker, on this farm's settings."""
    if getattr(args, "no_worker", True):  # `regionfarm api` starts none either
        return []
    models = args.model or [settings.default_model]
    env = {**os.environ, "REGIONFARM_REDIS_URL": settings.redis_url or "",
           "REGIONFARM_DATA_DIR": str(settings.data_dir.resolve())}  # fmt: skip
    if settings.api_keys_file is not None:
        env["REGIONFARM_API_KEYS_FILE"] = str(settings.api_keys_file.resolve())
    command = [sys.executable, "-m", "cli.main", "worker"]
    procs = [subprocess.Popen([*command, "--webhooks"], env=env)]
    from cli.worker_cmd import visible_gpus

    placement = ["--device", args.device] if args.device else (
        ["--gpus", "all"] if visible_gpus() else ["--device", "cpu"])  # fmt: skip
    for model in models:
        procs.append(subprocess.Popen([*command, "--model", model, *placement], env=env))
    return procs


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the quick stop: a running job goes back in line
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _with_redis(settings: Settings, args: argparse.Namespace) -> int:
    """Serve, with the embedded Redis under the data dir when no REGIONFARM_REDIS_URL is set."""
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir)
            try:
                url = stack.enter_context(embedded)
            except EmbeddedRedisError as exc:
                return _fail(str(exc), EXIT_ERROR)
            settings = settings.model_copy(update={"redis_url": url})
        where = "local storage under " + str(settings.data_dir.resolve() / "storage")
        if settings.s3_endpoint_url:
            where = f"S3 at {settings.s3_endpoint_url} bucket {settings.s3_bucket}"
        print(f"regionfarm: API on http://{args.host}:{args.port} (Redis {settings.redis_url}, "
              f"{where}); Ctrl-C stops it", file=sys.stderr)  # fmt: skip
        workers = _start_workers(settings, args)
        stack.callback(_stop_workers, workers)
        try:
            serve(settings, args.host, args.port, workers=args.workers, threads=args.threads,
                  dev=args.dev)  # fmt: skip
        except (ModelsFileError, KeysFileError, ValueError) as exc:
            return _fail(str(exc), EXIT_BAD_INPUT)
    return 0


def serve(
    settings: Settings, host: str, port: int, *, workers: int, threads: int, dev: bool
) -> None:
    """Run the API until interrupted: gunicorn, or Flask's development server with `dev`."""
    if dev:
        from api.app import create_app  # keeps `regionfarm --help` light

        create_app(settings).run(host=host, port=port, threaded=True, use_reloader=False)
        return
    from gunicorn.app.base import BaseApplication

    metrics_dir = tempfile.mkdtemp(prefix="regionfarm-metrics-")
    # prometheus_client reads this in every gunicorn worker: their counters are merged.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Imported only now: prometheus_client picks multiprocess values when a metric is made.
    from api.app import create_app

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": threads,
                "timeout": 60,
                "graceful_timeout": 10,
                "keepalive": 5,
                "accesslog": None,
                # One farm per data dir, many per host: no shared control socket in $HOME.
                "control_socket_disable": True,
                "child_exit": child_exit,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Runs in each worker after the fork: its own Redis and Celery connections.
            _json_gunicorn_errors()
            return create_app(settings)

    try:
        Gunicorn().run()
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


_GUNICORN_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long",
                   417: "expectation_failed", 431: "request_header_fields_too_large",
                   500: "internal", 501: "not_implemented"}  # fmt: skip


def _json_gunicorn_errors() -> None:
    """gunicorn answers what never reaches the app (a request line over its limit, a malformed
    header) with an HTML page; the contract says every non-2xx answer is the JSON error body.
    gunicorn has no setting for that page, so its one writer is replaced in this process."""
    import json

    from gunicorn import util

    def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
        code = _GUNICORN_CODES.get(status_int, "http_error")
        message = f"{reason.lower()}: {mesg}" if mesg else reason.lower()
        body = json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()
        head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        util.write_nonblock(sock, head.encode("latin-1") + body)

    util.write_error = write_error
