"""One job on one worker: start it under a lease, re-validate, render with progress and cancel,
store the verified result, record the end. The Celery task only calls `Runner.run`."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import torch
from celery import Celery

from farm.dispatch import send_webhook
from farm.ids import now_rfc3339
from farm.records import JobRecords, to_public
from farm.storage import ObjectMissing, Storage, StorageError, StoredObject, asset_key
from farm.urls import result_url
from schemas import JobSpec, ModelEntry, Settings, SpecError, ValidationContext, parse_spec
from worker import metrics
from worker.preview import latent_preview
from worker.render import (
    LoadedModel,
    RenderCanceled,
    RenderResult,
    encode_image,
    load_inputs,
    render_job,
)
from worker.render.imageio import CONTENT_TYPES
from worker.storage import find_result, store_job_json, store_result, with_retries

__all__ = ["TEST_RENDER_STEP_MS_ENV", "ConsumerWatch", "JobFailed", "Runner", "holder_alive"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress updates of one job, at least (the last step always goes)."""
PREVIEW_EVERY = 2
"""Steps between two previews."""
CANCEL_POLL = 0.25
"""Seconds between two reads of a job's cancel flag (the engine asks before every view)."""
JOB_JSON_EXTRAS = ("timings", "versions", "unet_calls", "unet_samples")
"""What job.json holds beyond the final job object."""
TEST_RENDER_STEP_MS_ENV = "RF_TEST_RENDER_STEP_MS"
"""TEST ONLY. When this variable is set (milliseconds per step), workers do not run the engine
but `_test_render`, which sleeps that long per step; see there. Never set it in a deployment."""


class JobFailed(Exception):
    """A job ends `failed` with this contract error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def holder_alive(holder: str) -> bool:
    """False only when the lease holder (``host:pid``) is a process of this host that is gone."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's worker: only its lease running out tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Progress:
    """The engine's step and latent callbacks: throttled progress with previews, in Redis."""

    def __init__(self, records: JobRecords, job_id: str, total: int) -> None:
        self.records, self.job_id, self.total = records, job_id, total
        self.started = time.monotonic()
        self.last_sent = 0.0
        self.preview: str | None = None
        self.recorded: dict[str, Any] | None = None
        """The last progress that Redis took: the finished job's `progress`."""

    def latent(self, step: int, latent: torch.Tensor) -> None:
        if step % PREVIEW_EVERY == 0 or step == self.total:
            self.preview = latent_preview(latent)

    def step(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step < total and now - self.last_sent < PROGRESS_INTERVAL:
            return
        self.last_sent = now
        elapsed = now - self.started
        eta = elapsed / step * (total - step) if step else None
        progress: dict[str, Any] = {"step": step, "total": total, "eta_seconds": eta}
        if self.preview is not None:
            progress["preview"] = self.preview
        try:
            if self.records.set_progress(self.job_id, progress):
                self.recorded = progress
        except redis.RedisError as exc:  # progress is best effort: the render goes on
            log.warning("progress not recorded: %s", exc, extra={"job_id": self.job_id})


class _CancelWatch:
    """The engine's cancel check: the job's cancel flag (read a few times a second) or the
    farm's per-job time limit."""

    def __init__(self, records: JobRecords, job_id: str, time_limit: float) -> None:
        self.records, self.job_id = records, job_id
        self.deadline = time.monotonic() + time_limit
        self.time_limit = time_limit
        self.next_read = 0.0
        self.canceled = self.timed_out = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now > self.deadline:
            self.timed_out = True
            return True
        if now >= self.next_read:
            self.next_read = now + CANCEL_POLL
            try:
                self.canceled = self.records.cancel_requested(self.job_id)
            except redis.RedisError:
                pass  # Redis is down: keep rendering; the flag is read again when it is back
        return self.canceled


@dataclass
class Runner:
    settings: Settings
    model: LoadedModel
    models: Mapping[str, ModelEntry]
    records: JobRecords
    storage: Storage
    celery: Celery
    name: str
    """The worker's node name (``gpu0@host``), shown in the job's `worker`."""

    def __post_init__(self) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.current_job: str | None = None
        self.last_activity = time.monotonic()
        """When the last delivered job started or ended (the consumer watch reads it)."""
        if not self.settings.public_url:
            log.warning(
                "REGIONFARM_PUBLIC_URL is not set: result URLs in job.json are empty and "
                "webhooks carry a presigned storage URL (S3) or none; set it to the API's "
                "address as receivers reach it (`regionfarm up` sets it itself)"
            )

    # -- the task's one call -------------------------------------------------------------

    def run(self, job_id: str) -> str:
        """Run a delivered job; answers what happened (its final status, or why it was not
        run: busy, missing, or a status it already had)."""
        self.last_activity = time.monotonic()
        try:
            return self._run(job_id)
        finally:
            self.last_activity = time.monotonic()

    def _run(self, job_id: str) -> str:
        holder = self.records.lease_holder(job_id)
        take_over = holder if holder and not holder_alive(holder) else ""
        status = self.records.start(
            job_id, self.name, holder=self.holder, lease_seconds=self.settings.lease_seconds,
            max_attempts=self.settings.max_attempts, take_over=take_over,
        )  # fmt: skip
        extra = {"job_id": job_id, "worker": self.name}
        if status != "running":
            log.info("job not run: it is %s", status, extra=extra)
            if status in ("failed", "canceled"):  # it ended just now, at this start
                self._after(job_id, status)
            return status
        self.current_job = job_id
        try:
            status = self._run_started(job_id, extra)
        finally:
            self.current_job = None
        self._after(job_id, status)
        return status

    def _after(self, job_id: str, status: str) -> None:
        metrics.JOBS.labels(status=status).inc()
        record = self.records.get(job_id)
        if record is not None and json.loads(record["spec"]).get("webhook"):
            send_webhook(self.celery, job_id)

    # -- a started job ---------------------------------------------------------------------

    def _run_started(self, job_id: str, extra: dict[str, str]) -> str:
        record = self.records.get(job_id)
        if record is None:
            return "missing"
        try:
            self._render_and_store(job_id, record, extra)
            return "succeeded"
        except JobFailed as exc:
            log.warning("job failed: %s: %s", exc.code, exc.message, extra=extra)
            metrics.FAILURES.labels(code=exc.code).inc()
            end = self.records.finish(job_id, "failed", error={"code": exc.code,
                                                               "message": exc.message})  # fmt: skip
            return end
        except RenderCanceled:
            log.info("job canceled while rendering", extra=extra)
            return self.records.finish(job_id, "canceled")
        except Exception:
            log.exception("job failed with an internal error", extra=extra)
            metrics.FAILURES.labels(code="internal").inc()
            return self.records.finish(job_id, "failed", error={
                "code": "internal", "message": "internal error in the worker; it was logged "
                f"with the job id {job_id}"})  # fmt: skip

    def _render_and_store(self, job_id: str, record: dict[str, str], extra: dict[str, str]) -> None:
        tenant = record["tenant"]
        spec = self._validate(json.loads(record["spec"]), tenant)
        fmt = spec.output.format
        budget = self.settings.storage_retry_seconds
        try:
            existing = with_retries(
                lambda: find_result(self.storage, tenant, job_id, fmt), budget_s=budget,
                what="looking for an earlier result",
            )  # fmt: skip
        except StorageError as exc:
            raise JobFailed("storage_unavailable", f"storage does not answer: {exc}") from None
        if existing is not None:
            # At-least-once delivery, exactly-once result: a redelivered job whose result is
            # already stored is recorded from it, not rendered again; its job.json is written
            # again, so that it says this attempt, as the job record will.
            log.info("result already stored: not rendered again", extra=extra)
            extras = {k: existing[k] for k in JOB_JSON_EXTRAS if k in existing}
            document = self._final_job(record, result=existing["result"], extras=extras)
            try:
                store_job_json(self.storage, tenant, job_id, fmt, document, budget_s=budget)
            except StorageError as exc:
                raise JobFailed("storage_unavailable", f"storage does not answer: {exc}") from None
            self._succeed(job_id, document)
            return
        try:
            inputs = load_inputs(spec, max_pixels=self.settings.max_pixels,
                                 assets=self._assets(tenant))  # fmt: skip
        except SpecError as exc:
            raise _invalid(exc) from None
        progress = _Progress(self.records, job_id, spec.steps or 0)
        watch = _CancelWatch(self.records, job_id, self.settings.job_time_limit)
        started = time.perf_counter()
        test_step_ms = os.environ.get(TEST_RENDER_STEP_MS_ENV)
        try:
            if test_step_ms:
                result = _test_render(spec, float(test_step_ms), progress.step, watch)
            else:
                result = render_job(self.model, spec, inputs, on_step=progress.step,
                                    should_cancel=watch, on_latent=progress.latent,
                                    view_batch=self.settings.view_batch)  # fmt: skip
        except RenderCanceled:
            if watch.timed_out:
                raise JobFailed("timeout", f"the render took longer than the farm's limit of "
                                f"{watch.time_limit:g} s (REGIONFARM_JOB_TIME_LIMIT): try a "
                                "smaller canvas or fewer steps") from None  # fmt: skip
            raise
        except torch.cuda.OutOfMemoryError:
            raise JobFailed("out_of_memory", _oom_message(spec, self.model)) from None
        finally:
            if self.model.device.type == "cuda":
                metrics.GPU_MEMORY.set(torch.cuda.max_memory_allocated(self.model.device))
                torch.cuda.empty_cache()
        metrics.RENDER_SECONDS.labels(model=self.model.name).observe(time.perf_counter() - started)
        data = encode_image(result.image, fmt, spec.output.quality)

        def final_job(stored: StoredObject) -> dict[str, Any]:
            outcome = {
                "key": stored.key, "format": fmt, "width": result.image.width,
                "height": result.image.height, "bytes": stored.size, "sha256": stored.sha256,
                "seed": result.seed, "render_seconds": result.timings["render_seconds"],
            }  # fmt: skip
            extras = {
                "timings": result.timings,
                "versions": self.model.versions,
                "unet_calls": result.unet_calls,
                "unet_samples": result.unet_samples,
            }
            return self._final_job(
                record, result=outcome, extras=extras, progress=progress.recorded
            )

        try:
            _, document = store_result(
                self.storage, tenant, job_id, image=data, fmt=fmt,
                content_type=CONTENT_TYPES[fmt], job=final_job, budget_s=budget,
            )  # fmt: skip
        except StorageError as exc:
            raise JobFailed("storage_unavailable", f"the image could not be stored after "
                            f"{budget:g} s of retries: {exc}") from None  # fmt: skip
        self._succeed(job_id, document)
        log.info("job succeeded in %.2f s", result.timings["render_seconds"], extra=extra)

    def _final_job(
        self,
        record: dict[str, str],
        *,
        result: dict[str, Any],
        extras: dict[str, Any],
        progress: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The document of job.json: the job as it will be once `_succeed` records it (what
        ``GET /v1/jobs/<id>`` answers: this attempt, the result's absolute URL on the API's
        public address), plus `extras` (library versions, timings)."""
        job = to_public(record)  # read after this attempt started: its worker and attempts
        url = result_url(self.settings.public_url, record["id"])
        outcome = {"url": url, **{k: v for k, v in result.items() if k != "url"}}
        job.update(status="succeeded", finished_at=now_rfc3339(), result=outcome)
        if progress is not None:
            job["progress"] = progress
        return {**job, **extras}

    def _succeed(self, job_id: str, document: dict[str, Any]) -> None:
        """Record the end that job.json (`document`) already says, at the same time."""
        result, finished_at = document["result"], document["finished_at"]
        self.records.finish(job_id, "succeeded", result=result, finished_at=finished_at)

    def _validate(self, data: dict[str, Any], tenant: str) -> JobSpec:
        """The stored spec, checked again: a worker trusts only what it validated itself."""
        ctx = ValidationContext.from_settings(self.settings, self.models,
                                              assets=self._assets(tenant),
                                              resolve_webhook_hosts=False)  # fmt: skip
        try:
            spec = parse_spec(data, ctx)
        except SpecError as exc:
            raise _invalid(exc) from None
        if spec.model != self.model.name:
            raise JobFailed("model_unavailable", f"the job is for model {spec.model!r} but "
                            f"reached a worker of {self.model.name!r}")  # fmt: skip
        return spec

    def _assets(self, tenant: str):
        def read(asset_id: str) -> bytes:
            meta = self.records.redis.hgetall(f"rf:asset:{tenant}:{asset_id}")
            if not meta:
                raise KeyError(asset_id)
            try:
                return self.storage.get_bytes(
                    asset_key(self.storage.prefix, tenant, asset_id, meta["ext"])
                )
            except ObjectMissing:
                raise KeyError(asset_id) from None

        return read

    def renew_lease(self) -> None:
        """Called by the heartbeat thread while a job runs."""
        job_id = self.current_job
        if job_id is not None and not self.records.renew(
            job_id, self.holder, self.settings.lease_seconds
        ):
            log.warning("lost the lease of the running job", extra={"job_id": job_id})


class ConsumerWatch:
    """Notices a worker whose Celery consumer has stopped taking jobs: idle, while its queue
    has held messages for `stuck_after` seconds. kombu's Redis transport can lose its BRPOP
    connection for good when Redis goes away while a task runs in the solo pool (the socket is
    closed under the event loop, which then waits on nothing); the only sure cure is a new
    process, so `check` answers True and the caller exits for its supervisor to restart it.
    Jobs are safe meanwhile: they are queued, and any held one is re-queued by its lease."""

    def __init__(self, runner: Runner, depth: Any, stuck_after: float) -> None:
        self.runner, self.depth, self.stuck_after = runner, depth, stuck_after
        self.waiting_since: float | None = None

    def check(self) -> bool:
        now = time.monotonic()
        if self.runner.current_job is not None or self.depth() == 0:
            self.waiting_since = None
            return False
        if self.waiting_since is None or self.waiting_since < self.runner.last_activity:
            self.waiting_since = max(now, self.runner.last_activity)
            return False
        return now - self.waiting_since >= self.stuck_after


TEST_CRASH, TEST_RAISE = "rf-test:crash", "rf-test:raise"
"""TEST ONLY: background prompts that make `_test_render` kill its process, or raise."""


def _test_render(
    spec: JobSpec, step_ms: float, on_step: Any, should_cancel: _CancelWatch
) -> RenderResult:
    """TEST ONLY render hook, used instead of the engine when RF_TEST_RENDER_STEP_MS is set
    (off by default; only the reliability tests and bench/load.py set it), so that fault and
    load tests can run hundreds of jobs through real worker processes cheaply. It sleeps
    `step_ms` per step, reports progress after each step and honours cancel (and the job time
    limit) before each, like the engine; then it returns an image of the canvas size: noise on
    the latent's grid, drawn from the seed (the same spec and seed give the same bytes). A
    background prompt containing ``rf-test:crash`` kills the worker process with SIGKILL at the
    first step (a poison job that crashes every worker it reaches); one containing
    ``rf-test:raise`` raises (a bug in the engine)."""
    import numpy as np
    from PIL import Image

    steps = spec.steps or 1
    prompt = spec.background.prompt or ""
    started = time.perf_counter()
    for step in range(1, steps + 1):
        if should_cancel():
            raise RenderCanceled()
        if TEST_CRASH in prompt:
            os.kill(os.getpid(), signal.SIGKILL)
        if TEST_RAISE in prompt:
            raise RuntimeError("test render hook: the engine failed")
        time.sleep(step_ms / 1000)
        on_step(step, steps)
    seed = int(spec.seed or 0)
    size = (max(1, spec.height // 8), max(1, spec.width // 8), 3)  # the latent's grid: small PNGs
    pixels = np.random.default_rng(seed).integers(0, 256, size, np.uint8)
    image = Image.fromarray(pixels, "RGB").resize((spec.width, spec.height), Image.NEAREST)
    return RenderResult(image=image, seed=seed, warnings=[],
                        timings={"render_seconds": time.perf_counter() - started})  # fmt: skip


def _invalid(exc: SpecError) -> JobFailed:
    text = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in exc.details)
    code = "invalid_asset" if "asset" in text else "invalid_spec"
    return JobFailed(code, text)


def _oom_message(spec: JobSpec, model: LoadedModel) -> str:
    pixels = (spec.width or 0) * (spec.height or 0)
    return (
        f"out of GPU memory rendering {spec.width}x{spec.height} with {len(spec.regions)} "
        f"regions on {model.device}: try a canvas of at most about {pixels // 2} pixels, "
        "fewer regions, or a smaller tile size"
    )
