"""Every Redis key the farm uses, built in this one module: the API, the workers, the Lua
scripts (which get their keys through KEYS[] from here), the bench scripts and the tests all
take their key names from these functions, so that the scheme is written down once.

Celery's own keys (its queues, ``_kombu.*``, ``celery-task-meta-*``) are Celery's business and
are not listed here; every key of the farm's own starts with `PREFIX`."""

from __future__ import annotations

__all__ = [
    "IDEMPOTENCY_PATTERN",
    "JOB_PATTERN",
    "PREFIX",
    "RECONCILE_LOCK",
    "STATS_KEY",
    "SWEEP_LOCK",
    "TENANT_QUEUED_PARTS",
    "WORKERS_KEY",
    "WORKER_PATTERN",
    "active_key",
    "asset_meta_key",
    "cancel_key",
    "events_key",
    "idempotency_key",
    "job_key",
    "lease_key",
    "streams_key",
    "tenant_jobs_key",
    "tenant_queued_key",
    "worker_key",
]

PREFIX = "rf:"
"""The start of every key of the farm's own (so that one Redis can hold other data too)."""

# -- job records and their indexes -----------------------------------------------------------


def job_key(job_id: str) -> str:
    """Hash: one job's record (farm/records.py FIELDS), the farm's source of truth."""
    return f"{PREFIX}job:{job_id}"


JOB_PATTERN = f"{PREFIX}job:*"
"""SCAN/KEYS pattern that matches every job record."""


def tenant_jobs_key(tenant: str) -> str:
    """Sorted set of a tenant's job ids, all with score 0: ULIDs sort by time as text."""
    return f"{PREFIX}tenant:{tenant}:jobs"


def tenant_queued_key(tenant: str) -> str:
    """Set of a tenant's queued job ids, for the queued-jobs quota."""
    prefix, suffix = TENANT_QUEUED_PARTS
    return f"{prefix}{tenant}{suffix}"


TENANT_QUEUED_PARTS = (f"{PREFIX}tenant:", ":queued")
"""`tenant_queued_key` as (prefix, suffix) around the tenant: the job scripts learn a job's
tenant only from its record, inside the script, and build that one key from these parts."""


def active_key(status: str) -> str:
    """Set of all job ids in an active status (queued, running, canceling)."""
    return f"{PREFIX}active:{status}"


STATS_KEY = f"{PREFIX}stats:finished"
"""Hash: final status -> how many jobs ended so (the counters behind the jobs metric)."""


def cancel_key(job_id: str) -> str:
    """String: the cancel flag a worker reads between denoising steps."""
    return f"{PREFIX}cancel:{job_id}"


def lease_key(job_id: str) -> str:
    """String: the running job's lease, its holder (``host:pid``), renewed while it renders."""
    return f"{PREFIX}lease:{job_id}"


def events_key(job_id: str) -> str:
    """Stream of one job's events (status, and progress without its preview), in order, for
    live streams and for clients that reconnect; it expires and is deleted with the record."""
    return f"{PREFIX}events:{job_id}"


# -- the API's own ---------------------------------------------------------------------------


def streams_key(tenant: str) -> str:
    """Sorted set of the tenant's open event streams (slot id -> lease expiry, ms)."""
    return f"{PREFIX}tenant:{tenant}:streams"


def idempotency_key(tenant: str, route: str, digest: str) -> str:
    """String (JSON): the first answer to a request with an Idempotency-Key, or its pending
    claim; `digest` is the sha256 of the client's key, so any key makes a safe name."""
    return f"{PREFIX}idem:{tenant}:{route}:{digest}"


IDEMPOTENCY_PATTERN = f"{PREFIX}idem:*"
"""SCAN/KEYS pattern that matches every idempotency entry."""


def asset_meta_key(tenant: str, sha256: str) -> str:
    """Hash: an uploaded asset's metadata (ext, format, size); it expires 24 hours after the
    asset's last use, and retention deletes the stored file once it is gone."""
    return f"{PREFIX}asset:{tenant}:{sha256}"


# -- workers ---------------------------------------------------------------------------------

WORKERS_KEY = f"{PREFIX}workers"
"""Set of every worker name that has beaten; stale names are dropped when read."""


def worker_key(name: str) -> str:
    """Hash: one worker's heartbeat (name, model, seen, info); it expires unless refreshed."""
    return f"{PREFIX}worker:{name}"


WORKER_PATTERN = f"{PREFIX}worker:*"
"""SCAN/KEYS pattern that matches every live worker's heartbeat."""

SWEEP_LOCK = f"{PREFIX}sweep-lock"
"""String: held while one worker of the farm sweeps storage (retention); its expiry is the
time between two sweeps."""

RECONCILE_LOCK = f"{PREFIX}reconcile-lock"
"""String: held for one reconciler pass, so that one worker of the farm does it at a time."""
