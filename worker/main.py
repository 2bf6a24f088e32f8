"""One worker process: loads its model once, then serves its model's queue (solo pool: the
process that loaded the model renders; if it dies, its supervisor starts a new one and the
reconciler re-queues the job). Also the light webhook worker. Run by `regionfarm worker`."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

from farm.keys import KeyRing
from farm.logs import configure_logging
from farm.records import JobRecords
from farm.redis_conn import connect
from farm.retention import retention_seconds
from farm.storage import make_storage
from schemas import Settings, load_models
from schemas.names import WEBHOOK_QUEUE, queue_for_model
from worker.celery_app import make_worker_app
from worker.tasks import register_tasks

if TYPE_CHECKING:  # the runner imports torch: only the render worker loads it, at its start
    from worker.runner import Renderer

__all__ = [
    "EXIT_CONSUMER_STUCK",
    "EXIT_MODEL_UNAVAILABLE",
    "main",
    "renew_or_exit",
    "run_render_worker",
    "run_webhook_worker",
]

log = logging.getLogger(__name__)

EXIT_MODEL_UNAVAILABLE = 3
"""Exit code of a worker whose model cannot load: its supervisor does not restart it."""
EXIT_CONSUMER_STUCK = 4
"""Exit code of a worker whose queue consumer stopped taking jobs: its supervisor restarts it."""
STUCK_AFTER_MIN_S = 10.0
"""Seconds, at least, that a worker may sit idle beside a non-empty queue before it counts as
stuck (three heartbeat intervals when those are longer)."""
WEBHOOK_THREADS = 8
"""Deliveries one webhook worker makes at once."""


def _records(settings: Settings) -> JobRecords:
    return JobRecords(
        connect(settings.redis_url or ""),
        retention_seconds=retention_seconds(settings.retention_days),
    )


def _celery_worker(app, *, hostname: str, queues: list[str], pool: str, concurrency: int):
    return app.Worker(
        hostname=hostname,
        queues=queues,
        pool=pool,
        concurrency=concurrency,
        prefetch_multiplier=1,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        loglevel="WARNING",
        optimization="fair",
    )


def renew_or_exit(runner: Any, watch: Any, heartbeat: Any, node_name: str) -> None:
    """One heartbeat's work in a render worker: renew the running job's lease; when `watch`
    (a ConsumerWatch) finds the queue consumer stuck, end the process at once with
    EXIT_CONSUMER_STUCK for its supervisor to start a new one (Celery's own shutdown would wait
    on the consumer that no longer runs)."""
    runner.renew_lease()
    if watch.check():
        log.error(
            "worker %s is idle while its queue holds jobs: its broker connection is lost "
            "for good (e.g. after a Redis restart); exiting to be restarted",
            node_name,
        )
        _exit_now(heartbeat, EXIT_CONSUMER_STUCK)


def _exit_now(heartbeat: Any, code: int) -> NoReturn:
    """Take the worker's heartbeat off, flush the logs and end the process with `code`."""
    heartbeat.stop()
    logging.shutdown()
    os._exit(code)


def run_render_worker(
    settings: Settings,
    model_name: str,
    *,
    device: str | None,
    node_name: str,
    metrics_port: int | None = None,
    renderer: Renderer | None = None,
    compile_unet: bool = False,
) -> int:
    """Load `model_name` once and render its queue until stopped; the process's exit code.
    `compile_unet` (or the models file's `compile`) compiles its UNet before the first job.
    `renderer` (worker.runner.Renderer) replaces the engine: only test harnesses pass one
    (tests/harness/stand_in_worker.py); `main`, which `regionfarm worker` runs, never does."""
    # torch and diffusers come in with the engine: imported here, not by the webhook worker.
    from farm.broker import queue_depth
    from worker import metrics
    from worker.heartbeat import Heartbeat, reconcile
    from worker.render import (
        ModelUnavailable,
        load_model,
        loading,
        render_job,
    )
    from worker.render.runtime import configure_torch
    from worker.retention import SWEEP_INTERVAL, SWEEP_LOCK, sweep
    from worker.runner import ConsumerWatch, Runner, holder_alive

    models = load_models(settings.models_file)
    if model_name not in models:
        log.error("unknown model %r: the models file has %s", model_name, ", ".join(models))
        return 2
    configure_torch(settings.torch_threads)
    try:
        model = load_model(models[model_name], device=device, cache_dir=settings.model_cache)
    except ModelUnavailable as exc:
        # A worker without its model takes no jobs: they wait for one that has it.
        log.error("model %s is unavailable, this worker takes no jobs: %s", model_name, exc)
        return EXIT_MODEL_UNAVAILABLE
    if compile_unet or model.entry.compile:
        try:
            _compile(model, settings)
        except Exception as exc:  # torch.compile raises its backends' own errors
            log.error(
                "compiling the UNet of %s failed, this worker takes no jobs: %s; start it "
                "without --compile (or set compile = false in the models file)",
                model_name,
                exc,
            )
            return EXIT_MODEL_UNAVAILABLE
    records = _records(settings)
    app = make_worker_app(settings)
    runner = Runner(
        settings=settings,
        model=model,
        models=models,
        records=records,
        storage=make_storage(settings),
        celery=app,
        name=node_name,
        renderer=renderer or render_job,
    )
    register_tasks(app, render=runner.run, webhook=None)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "device": str(model.device),
        "loads": loading.LOAD_COUNT,
        "load_seconds": round(model.load_seconds, 3),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }

    interval = settings.lease_seconds / 3
    watch = ConsumerWatch(
        runner,
        lambda: queue_depth(records.redis, model_name),
        stuck_after=max(STUCK_AFTER_MIN_S, 3 * interval),
    )

    def housekeeping() -> None:
        reconcile(records, app, max_attempts=settings.max_attempts, holder_alive=holder_alive)
        if records.redis.set(SWEEP_LOCK, node_name, nx=True, ex=SWEEP_INTERVAL):
            sweep(runner.storage, records.redis, retention_days=settings.retention_days)

    heartbeat = Heartbeat(
        records=records,
        name=node_name,
        model=model_name,
        info=info,
        renew=lambda: renew_or_exit(runner, watch, heartbeat, node_name),
        reconcile_pass=housekeeping,
        interval=interval,
    )
    heartbeat.start()
    if metrics_port:
        metrics.serve(metrics_port)
    log.info("worker %s serves %s on %s", node_name, model_name, model.device)
    worker = _celery_worker(
        app, hostname=node_name, queues=[queue_for_model(model_name)], pool="solo", concurrency=1
    )
    try:
        worker.start()
    finally:
        heartbeat.stop()
    return int(worker.exitcode or 0)


def run_webhook_worker(settings: Settings, *, node_name: str) -> int:
    """Deliver webhooks from their light queue (threads: deliveries wait on the network)."""
    from worker.deliveries import WebhookSender

    records = _records(settings)
    app = make_worker_app(settings)
    sender = WebhookSender(
        settings=settings,
        records=records,
        keys=KeyRing.from_settings(settings.api_keys_file, settings.api_keys),
        storage=make_storage(settings),
    )
    register_tasks(app, render=None, webhook=sender.task)
    app.conf.worker_prefetch_multiplier = 4
    worker = _celery_worker(
        app, hostname=node_name, queues=[WEBHOOK_QUEUE], pool="threads", concurrency=WEBHOOK_THREADS
    )
    worker.start()
    return int(worker.exitcode or 0)


def _compile(model, settings: Settings) -> None:
    """The UNet compiled and warmed up at the view batch this worker's jobs will use."""
    from worker.render.compiled import compile_unet
    from worker.render.defaults import LATENT_SCALE
    from worker.render.sampler import auto_view_batch

    side = model.native_size // LATENT_SCALE
    batch = auto_view_batch(model.device, (side, side), settings.view_batch)
    started = time.perf_counter()
    compile_unet(model, batch)
    log.info(
        "UNet compiled and warmed up at %d pairs per call in %.1f s",
        batch,
        time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.main``: what `regionfarm worker` runs in each child process."""
    parser = argparse.ArgumentParser(prog="python -m worker.main")
    parser.add_argument("--model")
    parser.add_argument("--device")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--webhooks", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    configure_logging()
    settings = Settings()
    if args.webhooks:
        return run_webhook_worker(settings, node_name=args.node_name)
    return run_render_worker(
        settings,
        args.model,
        device=args.device,
        node_name=args.node_name,
        metrics_port=args.metrics_port,
        compile_unet=args.compile,
    )


if __name__ == "__main__":
    sys.exit(main())
