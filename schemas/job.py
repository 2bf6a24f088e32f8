"""The job object that the API answers with, and the other bodies of the REST contract."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.defaults import SEED_MAX
from schemas.formats import OutputFormat
from schemas.identifiers import ASSET_ID_PATTERN, JOB_ID_PATTERN, SHA256_PATTERN, field_pattern
from schemas.spec import JobSpec

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "STATUSES",
    "AssetInfo",
    "BatchAnswer",
    "BatchRequest",
    "ErrorBody",
    "ErrorDetail",
    "ErrorInfo",
    "FailureInfo",
    "FarmStatus",
    "Job",
    "JobError",
    "JobList",
    "JobResult",
    "JobStatus",
    "ModelInfo",
    "ModelList",
    "Progress",
    "QueueInfo",
    "Status",
    "WorkerInfo",
]

JobStatus = Literal["queued", "running", "canceling", "succeeded", "failed", "canceled"]
STATUSES: tuple[str, ...] = ("queued", "running", "canceling", "succeeded", "failed", "canceled")
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
"""A job in one of these never changes again."""
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running", "canceling")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Progress(_Body):
    """How far a running job is."""

    step: int = Field(ge=0, description="Denoising steps done.")
    total: int = Field(ge=0, description="Denoising steps in all.")
    eta_seconds: float | None = Field(default=None, ge=0, description="Estimated seconds left.")
    preview: str | None = Field(
        default=None,
        description="A small JPEG of the current latent (data URI or URL, at most 256 px on its "
        "long side), refreshed every few steps.",
    )


class JobResult(_Body):
    """Where a succeeded job's image is, and what it is."""

    url: str = Field(description="The API's result URL, which redirects to a fresh signed URL.")
    key: str = Field(description="The storage key of the image.")
    format: OutputFormat
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    bytes: int = Field(ge=0, description="Size of the image file.")
    sha256: str = Field(pattern=field_pattern(SHA256_PATTERN))
    seed: int = Field(ge=0, le=SEED_MAX)
    render_seconds: float = Field(ge=0)


class JobError(_Body):
    """Why a job failed: a stable code and a message that says what the user can change."""

    code: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="out_of_memory, model_unavailable, storage_unavailable, invalid_asset, "
        "timeout, worker_lost, internal, ...",
    )
    message: str


class Job(_Body):
    """One job: its normalized spec and everything that happened to it."""

    model_config = ConfigDict(extra="allow")  # the contract lets the farm add fields

    id: str = Field(
        pattern=field_pattern(JOB_ID_PATTERN), examples=["job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A"]
    )
    status: JobStatus
    model: str
    kind: Literal["regions", "panorama", "image"]
    spec: JobSpec = Field(description="The normalized spec, with seed and defaults filled in.")
    created_at: str = Field(description="RFC 3339 UTC.")
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress | None = None
    worker: str | None = Field(default=None, description="The worker that ran it last.")
    attempts: int = Field(ge=0, description="How many times a worker started it.")
    warnings: list[str] = Field(default_factory=list)
    result: JobResult | None = None
    error: JobError | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class JobList(_Body):
    """One page of a tenant's jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null: no more."
    )


class BatchRequest(_Body):
    """``{"jobs": [spec, ...]}``, or ``{"job": spec, "seeds": [...]}`` for one spec many times."""

    jobs: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100)
    job: dict[str, Any] | None = None
    seeds: list[int] | None = Field(default=None, min_length=1, max_length=100)


class BatchAnswer(_Body):
    """The jobs of a batch, in the order they were given."""

    jobs: list[Job]


class AssetInfo(_Body):
    """An uploaded image, to be used as ``asset:<id>`` in specs."""

    id: str = Field(pattern=field_pattern(ASSET_ID_PATTERN))
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    sha256: str = Field(pattern=field_pattern(SHA256_PATTERN))
    format: str | None = None
    bytes: int | None = None


class ModelInfo(_Body):
    """One model of the farm's models file, with its defaults and live workers."""

    name: str
    family: str
    description: str = ""
    steps: int
    guidance_scale: float
    native_size: int
    prompts: list[str] = Field(
        default_factory=list,
        description="Prompts the model draws well: the web page starts its background (the "
        "first) and brushes (the rest) from them.",
    )
    workers: int = Field(ge=0, description="Live worker processes serving it now.")
    live: bool = Field(description="At least one worker serves it now.")
    default: bool = Field(description="Used when a spec names no model.")


class ModelList(_Body):
    models: list[ModelInfo]


class ErrorDetail(_Body):
    loc: list[str | int] = Field(description="JSON path in the request body.")
    msg: str


class ErrorInfo(_Body):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(_Body):
    """The body of every non-2xx answer."""

    error: ErrorInfo


class Status(_Body):
    """The body of ``/healthz`` and ``/readyz``."""

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="`ok`; `degraded`: ready, but a check names a problem (an API keys file "
        "that became unusable: the last good keys stay in use); `unavailable` (503)."
    )
    checks: dict[str, str] = Field(default_factory=dict)


class QueueInfo(_Body):
    model: str
    queued: int = Field(ge=0, description="Messages waiting in the model's queue.")
    workers: int = Field(ge=0, description="Live workers serving the model.")


class WorkerInfo(_Body):
    name: str = Field(description="Node name, e.g. gpu0@host-a.")
    model: str
    device: str | None = None
    seen_seconds_ago: float = Field(ge=0, description="Seconds since its last heartbeat.")


class FailureInfo(_Body):
    id: str
    finished_at: str | None
    error: JobError | None


class FarmStatus(_Body):
    """What `regionfarm status` prints: queues, live workers, the tenant's recent failures."""

    queues: list[QueueInfo]
    workers: list[WorkerInfo]
    recent_failures: list[FailureInfo]
