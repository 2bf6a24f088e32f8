"""`regionfarm api` (the API alone) and `regionfarm up` (the local farm on embedded defaults)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from farm.embedded import EmbeddedRedis, EmbeddedRedisError
from farm.keys import KeyRing, KeysFileError
from farm.local_tenant import WebhookSecretError, ensure_webhook_secret, webhook_secret_path
from farm.logs import configure_logging
from schemas import ModelsFileError, Settings

__all__ = ["add_parsers", "allow_open_files", "is_loopback", "public_url", "serve"]

EXIT_ERROR, EXIT_BAD_INPUT = 1, 2
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_KEYS_FILE = "api-keys.json"
"""The keys file `regionfarm up` reads from its data dir when REGIONFARM_API_KEYS_FILE is unset."""
DEFAULT_WORKERS, DEFAULT_CONNECTIONS = 2, 1000
"""gunicorn processes (gevent workers), and the connections each serves at once: an open events
stream is one connection, and costs no thread (docs/api-streams.md)."""


def add_parsers(sub: Any) -> None:
    api = sub.add_parser("api", help="the REST API alone (gunicorn; Flask's server with --dev)")
    _common(api)
    api.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="gunicorn processes")
    api.add_argument(
        "--connections",
        type=_positive,
        default=DEFAULT_CONNECTIONS,
        help=f"open connections per process, event streams included (default "
        f"{DEFAULT_CONNECTIONS})",
    )
    api.add_argument("--dev", action="store_true", help="Flask's development server instead")
    api.set_defaults(handler=run_api)

    up = sub.add_parser("up", help="the whole farm in one process tree on embedded defaults")
    _common(up)
    up.add_argument(
        "--data-dir",
        type=Path,
        help="embedded Redis and local storage (default REGIONFARM_DATA_DIR or ./.regionfarm)",
    )
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
    up.add_argument(
        "--connections",
        type=_positive,
        default=DEFAULT_CONNECTIONS,
        help=f"open connections per API process, event streams included (default "
        f"{DEFAULT_CONNECTIONS})",
    )
    up.set_defaults(handler=run_up, dev=False)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8000)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address with auth off (no API keys configured)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


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
    if not keys.configured and not is_loopback(host) and not insecure:
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
    if not settings.public_url:
        settings = settings.model_copy(update={"public_url": public_url(args.host, args.port)})
    print(
        f"regionfarm: result URLs (webhooks, job.json) point at {settings.public_url}; set "
        "REGIONFARM_PUBLIC_URL if receivers reach the API by another address",
        file=sys.stderr,
    )
    if settings.api_keys_file is None and settings.api_keys is None:
        try:
            secret, made = ensure_webhook_secret(settings.data_dir)
        except WebhookSecretError as exc:
            return _fail(str(exc), EXIT_ERROR)
        # The secret itself only once, when it is made: later starts keep it out of their logs.
        which = f"{secret}, made now" if made else "the secret"
        print(
            f"regionfarm: webhooks of tenant 'local' are signed with {which} (kept in "
            f"{webhook_secret_path(settings.data_dir)}; `regionfarm keys webhook-secret` "
            "prints it)",
            file=sys.stderr,
        )
    return _with_redis(settings, args)


def public_url(host: str, port: int) -> str:
    """The API's address for result URLs, from the address it binds: that address itself, or
    this machine's name for a wildcard bind (0.0.0.0, ::)."""
    name = host.strip("[]")
    if name in ("", "0.0.0.0", "::"):
        name = socket.gethostname()
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def _start_workers(settings: Settings, args: argparse.Namespace) -> list[subprocess.Popen]:
    """`regionfarm worker` for each --model, and the webhook worker, on this farm's settings."""
    if getattr(args, "no_worker", True):  # `regionfarm api` starts none either
        return []
    models = args.model or [settings.default_model]
    env = {
        **os.environ,
        "REGIONFARM_REDIS_URL": settings.redis_url or "",
        "REGIONFARM_DATA_DIR": str(settings.data_dir.resolve()),
        "REGIONFARM_PUBLIC_URL": settings.public_url or "",
    }
    if settings.api_keys_file is not None:
        env["REGIONFARM_API_KEYS_FILE"] = str(settings.api_keys_file.resolve())
    from worker.supervisor import python_module

    command = python_module("cli.main", "worker")
    procs = [subprocess.Popen([*command, "--webhooks"], env=env)]
    from cli.worker_cmd import visible_gpus

    placement = (
        ["--device", args.device]
        if args.device
        else (["--gpus", "all"] if visible_gpus() else ["--device", "cpu"])
    )
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
    # Raised before the embedded Redis starts, so that it inherits the limit too.
    needed = 2 * args.connections + OPEN_FILES_SPARE
    if allow_open_files(needed) < needed:
        print(
            f"regionfarm: the open-files limit (`ulimit -Hn`) is below the {needed} that "
            f"--connections {args.connections} needs: raise it (LimitNOFILE= in systemd, "
            "--ulimit nofile= in Docker) or pass a lower --connections",
            file=sys.stderr,
        )
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
        print(
            f"regionfarm: API on http://{args.host}:{args.port} (Redis {settings.redis_url}, "
            f"{where}); Ctrl-C stops it",
            file=sys.stderr,
        )
        workers = _start_workers(settings, args)
        stack.callback(_stop_workers, workers)
        try:
            serve(
                settings,
                args.host,
                args.port,
                workers=args.workers,
                connections=args.connections,
                dev=args.dev,
            )
        except (ModelsFileError, KeysFileError, ValueError) as exc:
            return _fail(str(exc), EXIT_BAD_INPUT)
    return 0


def serve(
    settings: Settings, host: str, port: int, *, workers: int, connections: int, dev: bool
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

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": workers,
                # One event loop per process: a request waiting on Redis, or an open event
                # stream, is a greenlet, not a thread (docs/api-streams.md).
                "worker_class": "gevent",
                "worker_connections": connections,
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
            # Runs in each worker after the fork, once gevent has patched the standard library:
            # the app (boto3, urllib3, Celery, prometheus_client, which picks multiprocess
            # values when a metric is made) is imported only now, and makes its own Redis and
            # Celery connections.
            from api.app import create_app

            _json_gunicorn_errors()
            # The keys file was checked before the fork (_check_bind): a worker restarted while
            # it is broken admits nobody rather than failing to boot, which stops gunicorn.
            app = create_app(settings, strict_keys=False)
            # What the app holds from its start (modules, pydantic's schemas, the app itself)
            # leaves the collector's sight: with a thousand streams open, a full collection
            # that walked it all stopped the process's loop for about 100 ms, 30 ms without.
            gc.freeze()
            return app

    # gevent patches the standard library in each worker, after the fork, and warns that this
    # process imported ssl before (redis-py does). The warning names the modules that kept an
    # unpatched name from ssl: when that is redis.asyncio alone, which the API never uses, it
    # is harmless and silenced; any other module still warns.
    warnings.filterwarnings("ignore", message=_SSL_BEFORE_GEVENT)
    try:
        Gunicorn().run()
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


_SSL_BEFORE_GEVENT = (
    r"Monkey-patching ssl after ssl has already been imported.* Modules that had direct imports "
    r"\(NOT patched\): \['redis\.asyncio\.connection \([^)']*\)'\]\.\s*\Z"
)
OPEN_FILES_SPARE = 256
"""File descriptors per API process beyond two per connection (a client socket and, for an event
stream, its Redis connection): logs, the metrics files, pooled connections."""


def allow_open_files(needed: int) -> int:
    """Raise this process's soft limit on open files (its children inherit it) to `needed`,
    within the hard limit; the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


_GUNICORN_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    500: "internal",
    501: "not_implemented",
}


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
        head = (
            f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        util.write_nonblock(sock, head.encode("latin-1") + body)

    util.write_error = write_error
