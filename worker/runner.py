"""One job on one worker: start it under a lease, re-validate, render with progress and cancel,
store the verified result, record the end. The Celery task only calls `Runner.run`.

The runner renders with its `renderer`, the engine's `render_job` unless the code that builds
the runner hands it another (tests/harness/stand_in_worker.py does, for fault and load tests):
nothing in a job or in the environment can change what a worker renders with."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import torch
from celery import Celery

from farm import states
from farm.dispatch import send_webhook
from farm.ids import now_rfc3339
from farm.records import JobRecords, to_public, wants_webhook
from farm.redis_keys import asset_meta_key
from farm.storage import ObjectMissing, Storage, StorageError, StoredObject, asset_key
from farm.urls import result_url
from schemas import JobSpec, ModelEntry, Settings, SpecError, ValidationContext, parse_spec
from schemas.defaults import ASSET_TTL
from schemas.formats import CONTENT_TYPES
from schemas.identifiers import ASSET_ID_PREFIX
from schemas.images import ASSET_FORMATS, sniff_format
from worker import metrics
from worker.preview import latent_preview
from worker.render import (
    JobInputs,
    LoadedModel,
    RenderCanceled,
    RenderResult,
    encode_image,
    load_inputs,
    render_job,
)
from worker.render.errors import InvalidAsset
from worker.storage import find_result, store_job_json, store_result, with_retries

__all__ = ["ConsumerWatch", "JobFailed", "Renderer", "Runner", "holder_alive"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress updates of one job, at least (the last step always goes)."""
PREVIEW_EVERY = 2
"""Steps between two previews."""
CANCEL_POLL = 0.25
"""Seconds between two reads of a job's cancel flag (the engine asks before every view)."""
JOB_JSON_EXTRAS = ("timings", "versions", "unet_calls", "unet_samples")
"""What job.json holds beyond the final job object."""


class Renderer(Protocol):
    """What renders a job: the engine's `render_job`, called the same way. It reports each
    step to `on_step`, asks `should_cancel` before each (raising RenderCanceled when it says
    so) and hands latents to `on_latent` for previews."""

    def __call__(
        self,
        model: LoadedModel,
        spec: JobSpec,
        inputs: JobInputs,
        *,
        on_step: Callable[[int, int], None],
        should_cancel: Callable[[], bool],
        on_latent: Callable[[int, torch.Tensor], None],
        view_batch: int | None,
    ) -> RenderResult: ...


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
    renderer: Renderer = render_job
    """What renders each job: the engine, unless the runner's maker hands in another."""

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
            job_id,
            self.name,
            holder=self.holder,
            lease_seconds=self.settings.lease_seconds,
            max_attempts=self.settings.max_attempts,
            take_over=take_over,
        )
        extra = {"job_id": job_id, "worker": self.name}
        if status != states.RENDER:
            log.info("job not run: it is %s", status, extra=extra)
            if status in states.ENDED_AT_START:  # it ended just now, at this start
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
        if record is not None and wants_webhook(record):
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
            end = self.records.finish(
                job_id, "failed", error={"code": exc.code, "message": exc.message}
            )
            return end
        except RenderCanceled:
            log.info("job canceled while rendering", extra=extra)
            return self.records.finish(job_id, "canceled")
        except Exception:
            log.exception("job failed with an internal error", extra=extra)
            metrics.FAILURES.labels(code="internal").inc()
            return self.records.finish(
                job_id,
                "failed",
                error={
                    "code": "internal",
                    "message": "internal error in the worker; it was logged "
                    f"with the job id {job_id}",
                },
            )

    def _render_and_store(self, job_id: str, record: dict[str, str], extra: dict[str, str]) -> None:
        tenant = record["tenant"]
        data = json.loads(record["spec"])
        spec = self._validate(data, tenant)
        budget = self.settings.storage_retry_seconds
        try:
            existing = with_retries(
                lambda: find_result(self.storage, tenant, job_id, spec.output.format),
                budget_s=budget,
                what="looking for an earlier result",
            )
        except StorageError as exc:
            raise JobFailed("storage_unavailable", f"storage does not answer: {exc}") from None
        if existing is not None:
            log.info("result already stored: not rendered again", extra=extra)
            self._record_stored(job_id, record, spec, existing)
            return
        try:
            inputs = load_inputs(
                spec, max_pixels=self.settings.max_pixels, assets=self._assets(tenant)
            )
        except SpecError as exc:
            raise _invalid(exc) from None
        except InvalidAsset as exc:
            raise _asset_failed(data, exc) from None
        progress = _Progress(self.records, job_id, spec.steps or 0)
        result = self._render(job_id, spec, inputs, progress)
        self._store(job_id, record, spec, result, progress)
        log.info("job succeeded in %.2f s", result.timings["render_seconds"], extra=extra)

    def _record_stored(
        self, job_id: str, record: dict[str, str], spec: JobSpec, existing: dict[str, Any]
    ) -> None:
        """At-least-once delivery, exactly-once result: a redelivered job whose result is
        already stored is recorded from it, not rendered again; its job.json is written again,
        so that it says this attempt, as the job record will."""
        extras = {k: existing[k] for k in JOB_JSON_EXTRAS if k in existing}
        document = self._final_job(record, result=existing["result"], extras=extras)
        budget = self.settings.storage_retry_seconds
        try:
            store_job_json(
                self.storage,
                record["tenant"],
                job_id,
                spec.output.format,
                document,
                budget_s=budget,
            )
        except StorageError as exc:
            raise JobFailed("storage_unavailable", f"storage does not answer: {exc}") from None
        self._succeed(job_id, document)

    def _render(
        self, job_id: str, spec: JobSpec, inputs: JobInputs, progress: _Progress
    ) -> RenderResult:
        """The model's render, with progress, cancel and the time limit; its failures as the
        job's error codes."""
        watch = _CancelWatch(self.records, job_id, self.settings.job_time_limit)
        started = time.perf_counter()
        try:
            result = self.renderer(
                self.model,
                spec,
                inputs,
                on_step=progress.step,
                should_cancel=watch,
                on_latent=progress.latent,
                view_batch=self.settings.view_batch,
            )
        except RenderCanceled:
            if watch.timed_out:
                raise JobFailed(
                    "timeout",
                    f"the render took longer than the farm's limit of "
                    f"{watch.time_limit:g} s (REGIONFARM_JOB_TIME_LIMIT): try a "
                    "smaller canvas or fewer steps",
                ) from None
            raise
        except torch.cuda.OutOfMemoryError:
            raise JobFailed("out_of_memory", _oom_message(spec, self.model)) from None
        finally:
            if self.model.device.type == "cuda":
                metrics.GPU_MEMORY.set(torch.cuda.max_memory_allocated(self.model.device))
                torch.cuda.empty_cache()
        metrics.RENDER_SECONDS.labels(model=self.model.name).observe(time.perf_counter() - started)
        return result

    def _store(
        self,
        job_id: str,
        record: dict[str, str],
        spec: JobSpec,
        result: RenderResult,
        progress: _Progress,
    ) -> None:
        """The image and its job.json stored (exactly once), then the job succeeded."""
        fmt = spec.output.format
        budget = self.settings.storage_retry_seconds

        def final_job(stored: StoredObject) -> dict[str, Any]:
            outcome = {
                "key": stored.key,
                "format": fmt,
                "width": result.image.width,
                "height": result.image.height,
                "bytes": stored.size,
                "sha256": stored.sha256,
                "seed": result.seed,
                "render_seconds": result.timings["render_seconds"],
            }
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
                self.storage,
                record["tenant"],
                job_id,
                image=encode_image(result.image, fmt, spec.output.quality),
                fmt=fmt,
                content_type=CONTENT_TYPES[fmt],
                job=final_job,
                budget_s=budget,
            )
        except StorageError as exc:
            raise JobFailed(
                "storage_unavailable",
                f"the image could not be stored after {budget:g} s of retries: {exc}",
            ) from None
        self._succeed(job_id, document)

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
        ctx = ValidationContext.from_settings(
            self.settings, self.models, assets=self._assets(tenant), resolve_webhook_hosts=False
        )
        try:
            spec = parse_spec(data, ctx)
        except SpecError as exc:
            raise _invalid(exc) from None
        except InvalidAsset as exc:
            raise _asset_failed(data, exc) from None
        if spec.model != self.model.name:
            raise JobFailed(
                "model_unavailable",
                f"the job is for model {spec.model!r} but reached a worker of {self.model.name!r}",
            )
        return spec

    def _assets(self, tenant: str) -> Callable[[str], bytes]:
        """The tenant's asset reader for validation and decoding. An asset that is gone or not
        an image raises InvalidAsset, which carries the job's error code (invalid_asset)."""

        def read(asset_id: str) -> bytes:
            ref = ASSET_ID_PREFIX + asset_id
            meta = self.records.redis.hgetall(asset_meta_key(tenant, asset_id))
            data = None
            if meta:
                key = asset_key(self.storage.prefix, tenant, asset_id, meta["ext"])
                try:
                    data = self.storage.get_bytes(key)
                except ObjectMissing:
                    pass  # expired from storage: unknown, as below
            if data is None:
                raise InvalidAsset(
                    ref,
                    f"unknown asset {ref!r}: upload the image again with "
                    f"POST /v1/assets (assets expire {ASSET_TTL // 3600} hours "
                    "after their last use) and submit the job with its new "
                    "reference",
                )
            if sniff_format(data) not in ASSET_FORMATS:
                raise InvalidAsset(
                    ref,
                    f"asset {ref!r} is not a PNG, WebP or JPEG image: "
                    "upload the image again with POST /v1/assets",
                )
            return data

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


def _invalid(exc: SpecError) -> JobFailed:
    """A spec that fails the worker's checks: the error's own code (invalid_spec)."""
    text = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in exc.details)
    return JobFailed(exc.code, text)


def _asset_failed(data: Any, exc: InvalidAsset) -> JobFailed:
    """An unusable asset: its error's code (invalid_asset), and a message that names each
    field of the spec (`data`) holding its reference."""
    fields = [".".join(str(p) for p in loc) for loc in _paths_of(data, exc.ref)]
    return JobFailed(exc.code, f"{', '.join(fields)}: {exc.message}" if fields else exc.message)


def _paths_of(data: Any, value: str, loc: tuple[str | int, ...] = ()) -> list[tuple[Any, ...]]:
    """Where `value` stands in the JSON document `data`, as paths (``("regions", 0, "mask")``)."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _paths_of(v, value, (*loc, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _paths_of(v, value, (*loc, i))]
    return [loc] if data == value else []


def _oom_message(spec: JobSpec, model: LoadedModel) -> str:
    pixels = (spec.width or 0) * (spec.height or 0)
    return (
        f"out of GPU memory rendering {spec.width}x{spec.height} with {len(spec.regions)} "
        f"regions on {model.device}: try a canvas of at most about {pixels // 2} pixels, "
        "fewer regions, or a smaller tile size"
    )
