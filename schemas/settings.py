"""The farm's configuration: one pydantic-settings class read from ``REGIONFARM_*`` variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.defaults import (
    DEFAULT_JOB_TIME_LIMIT,
    DEFAULT_MODEL,
    DEFAULT_RETENTION_DAYS,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    MAX_PIXELS,
    MAX_QUEUED_JOBS,
    MAX_REGIONS,
    MAX_REQUEST_BYTES,
    MIN_SIDE,
    STORAGE_RETRY_SECONDS,
)

__all__ = ["DEFAULT_MODEL_CACHE", "Settings"]

DEFAULT_MODEL_CACHE = Path("~/.cache/regionfarm/models")
"""Where downloaded and converted model weights are kept (``~`` is expanded)."""


class Settings(BaseSettings):
    """Everything a farm process is configured with; read once at the entry point.

    Each field is read from ``REGIONFARM_<FIELD>`` (e.g. ``REGIONFARM_REDIS_URL``); tests pass
    keyword arguments instead. Empty variables count as unset.
    """

    model_config = SettingsConfigDict(
        env_prefix="REGIONFARM_",
        env_ignore_empty=True,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    redis_url: str | None = Field(
        default=None,
        description="Redis URL of the broker and the job records; unset: an embedded Redis "
        "under the data dir.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint URL for results and assets; unset: local storage "
        "under the data dir. Credentials come from AWS_* variables, as boto3 reads them.",
    )
    s3_bucket: str = Field(default="regionfarm", min_length=1, description="S3 bucket name.")
    s3_prefix: str = Field(default="", description="Prefix of every object key in the bucket.")
    s3_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("s3_region", "REGIONFARM_S3_REGION", "AWS_REGION"),
        description="Region that requests are signed for (`REGIONFARM_S3_REGION`, else "
        "`AWS_REGION`, as the deployment files name it); unset: boto3's own default "
        "(`AWS_DEFAULT_REGION`, the AWS config file), else us-east-1.",
    )
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint that presigned URLs are signed for, when clients reach storage "
        "by another name; unset: the endpoint itself.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="JSON or TOML file mapping tenants to sha256(key) and webhook secrets; "
        "unset: auth off (loopback only).",
    )
    api_keys: str | None = Field(
        default=None,
        description='The keys file\'s JSON itself (`{"tenants": {...}}`), for platforms '
        "that pass secrets as environment variables; not together with api_keys_file.",
    )
    models_file: Path | None = Field(
        default=None, description="The models file; unset: the one packaged with regionfarm."
    )
    default_model: str = Field(
        default=DEFAULT_MODEL, min_length=1, description="Model used when a spec names none."
    )
    max_pixels: int = Field(
        default=MAX_PIXELS,
        ge=MIN_SIDE * MIN_SIDE,
        description="Most pixels (width x height) per canvas and per decoded image.",
    )
    max_request_bytes: int = Field(
        default=MAX_REQUEST_BYTES, ge=1024, description="Most bytes in one request body."
    )
    max_regions: int = Field(
        default=MAX_REGIONS,
        ge=1,
        le=MAX_REGIONS,
        description="Most regions (or palette colors) per job.",
    )
    max_queued_jobs: int = Field(
        default=MAX_QUEUED_JOBS,
        ge=1,
        description="Most jobs one tenant may have queued at once; more answer 429.",
    )
    max_streams_per_tenant: int = Field(
        default=100,
        ge=1,
        description="Most job event streams (`GET /v1/jobs/<id>/events`) one tenant may have "
        "open at once, over all API processes; more answer 429 `too_many_streams`.",
    )
    data_dir: Path = Field(
        default=Path(".regionfarm"),
        description="Data directory of the embedded mode (Redis files, local storage).",
    )
    model_cache: Path = Field(
        default=DEFAULT_MODEL_CACHE, description="Directory where model weights are cached."
    )
    retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS,
        ge=1,
        description="Days that job records and results are kept before deletion.",
    )
    job_time_limit: float = Field(
        default=DEFAULT_JOB_TIME_LIMIT,
        gt=0,
        allow_inf_nan=False,
        description="Seconds one render may take before it fails with `timeout`.",
    )
    # NoDecode: pydantic-settings would parse a list field's variable as JSON; the contract
    # says comma-separated hosts, so the validator below reads the raw string.
    lease_seconds: float = Field(
        default=LEASE_SECONDS,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a worker's lease on a running job lasts unless renewed; a job "
        "whose worker died is re-queued once its lease has run out.",
    )
    max_attempts: int = Field(
        default=MAX_ATTEMPTS,
        ge=1,
        description="Starts of one job before it fails with `worker_lost`.",
    )
    storage_retry_seconds: float = Field(
        default=STORAGE_RETRY_SECONDS,
        ge=0,
        allow_inf_nan=False,
        description="Seconds a worker retries uploads to unreachable storage before the job "
        "fails with `storage_unavailable`.",
    )
    s3_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds to wait for an S3 endpoint's answer (and, up to 5, for a "
        "connection) per attempt, so that a storage server that stops answering frees the "
        "worker: each request makes 3 attempts, and uploads retry for storage_retry_seconds.",
    )
    public_url: str | None = Field(
        default=None,
        description="The API's address as clients and webhook receivers reach it (e.g. "
        "https://farm.example.com): `result.url` in webhooks and in job.json is its "
        "/v1/jobs/<id>/result. `regionfarm up` sets it from its bind address. Unset: webhooks "
        "carry a presigned URL (S3), job.json none.",
    )
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (or CIDR networks) that webhooks may target over http or at a "
        "private address; comma-separated in the environment.",
    )
    view_batch: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Region-view pairs per UNet call; unset: from free GPU memory, or 8 on the "
        "CPU. The image does not depend on it beyond float rounding.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for torch in `render` and in workers; unset: torch's default.",
    )

    @field_validator("webhook_allowlist", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = text.split(",")
        if isinstance(value, list | tuple):
            # Blank entries ("a.com,,b.com", a trailing comma) are dropped; other types are
            # left for pydantic to refuse.
            items = [h.strip().lower() if isinstance(h, str) else h for h in value]
            return [h for h in items if h != ""]
        return value

    @field_validator("api_keys_file", "models_file", "data_dir", "model_cache")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None
