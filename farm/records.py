"""Job records in Redis, the farm's source of truth: one hash per job, moved between states by
Lua scripts (farm/lua/) so that every transition (and its indexes, counters and event) is
atomic. The moves are those of farm/states.py's table, handed to each script; the keys are
farm/redis_keys.py's, handed to each script through KEYS."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import redis

from farm import lua, states
from farm.ids import is_job_id, now_rfc3339
from farm.redis_keys import (
    STATS_KEY,
    TENANT_QUEUED_PARTS,
    active_key,
    cancel_key,
    events_key,
    job_key,
    lease_key,
    tenant_jobs_key,
    tenant_queued_key,
)
from schemas.job import ACTIVE_STATUSES, FINAL_STATUSES

__all__ = [
    "EVENT_LOG_LENGTH",
    "FIELDS",
    "NO_EVENT",
    "EventLog",
    "JobRecords",
    "QuotaExceeded",
    "new_record",
    "to_public",
    "wants_webhook",
]

FIELDS = (
    "id",
    "tenant",
    "status",
    "model",
    "kind",
    "priority",
    "spec",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
    "worker",
    "attempts",
    "warnings",
    "result",
    "error",
    "metadata",
    "has_webhook",
)
_PRIVATE_FIELDS = ("tenant", "priority", "has_webhook")
"""Fields the farm keeps for itself: not in the contract's job object. `has_webhook` is "1"
when the spec has a webhook (its end is announced), else "0"; records stored before it
existed have none (see `wants_webhook`)."""
_JSON_FIELDS = ("spec", "progress", "warnings", "result", "error", "metadata")


EVENT_LOG_LENGTH = 1000
"""Events kept per job, the oldest dropped first: a render's progress (sent at most 4 times a
second) fits, and a full log stays near 100 KB (progress is logged without its preview)."""


NO_EVENT = "0-0"
"""The position before a job's first event (stream ids are ``<ms>-<n>``, always above it)."""


class EventLog(NamedTuple):
    """A job's record and where its event log stands, read at one instant."""

    record: dict[str, str] | None
    first: str
    """Id of the oldest event kept (NO_EVENT: none yet)."""
    last: str
    """Id of the newest event (NO_EVENT: none yet)."""
    trimmed: bool
    """The log is full, so events older than `first` may have been dropped."""


class QuotaExceeded(Exception):
    """The tenant already has as many queued jobs as the farm allows."""

    def __init__(self, queued: int, quota: int, asked: int) -> None:
        super().__init__(
            f"{queued} jobs are already queued for this tenant and the farm allows {quota}: "
            f"wait for some to start, or cancel some, before submitting {asked} more"
        )
        self.queued, self.quota, self.asked = queued, quota, asked


def new_record(
    *,
    job_id: str,
    tenant: str,
    spec: Mapping[str, Any],
    warnings: Iterable[str] = (),
    created_at: str | None = None,
) -> dict[str, str]:
    """The hash of a new queued job, from its normalized spec (a JSON-ready dict)."""
    return {
        "id": job_id,
        "tenant": tenant,
        "status": states.target(states.CREATE, states.NEW),
        "model": str(spec["model"]),
        "kind": str(spec["kind"]),
        "priority": str(spec["priority"]),
        "spec": json.dumps(spec, separators=(",", ":")),
        "created_at": created_at or now_rfc3339(),
        "started_at": "",
        "finished_at": "",
        "progress": "",
        "worker": "",
        "attempts": "0",
        "warnings": json.dumps(list(warnings)),
        "result": "",
        "error": "",
        "metadata": json.dumps(spec.get("metadata") or {}, separators=(",", ":")),
        "has_webhook": "1" if spec.get("webhook") else "0",
    }


class JobRecords:
    """Reads and moves job records; both the API and the workers go through this class."""

    def __init__(self, client: redis.Redis, *, retention_seconds: int) -> None:
        # `client` must decode responses (decode_responses=True): records are text.
        self.redis = client
        self.retention_seconds = retention_seconds
        self._create = client.register_script(lua.load("create"))
        self._discard = client.register_script(lua.load("discard"))
        self._purge = client.register_script(lua.load("moves", "purge"))
        self._renew = client.register_script(lua.load("renew"))
        self._cancel = client.register_script(lua.load("moves", "job", "cancel"))
        self._start = client.register_script(lua.load("moves", "job", "start"))
        self._requeue = client.register_script(lua.load("moves", "job", "requeue"))
        self._progress = client.register_script(lua.load("moves", "job", "progress"))
        self._finish = client.register_script(lua.load("moves", "job", "finish"))

    def _move(self, script: Any, operation: str, job_id: str, *args: Any) -> Any:
        """Run one of the scripts that move one job (farm/lua/job.lua says what they take):
        its keys, the moves of `operation` from farm/states.py, then its own `args`."""
        keys = [
            job_key(job_id),
            events_key(job_id),
            cancel_key(job_id),
            lease_key(job_id),
            STATS_KEY,
            *(active_key(status) for status in _ACTIVE_ORDER),
        ]
        head = [*TENANT_QUEUED_PARTS, EVENT_LOG_LENGTH, states.moves_arg(operation), job_id]
        return script(keys=keys, args=[*head, *args])

    # -- the API's side ------------------------------------------------------------------

    def create(self, tenant: str, records: list[dict[str, str]], *, quota: int) -> None:
        """Store new queued jobs, all or none; raises QuotaExceeded past the tenant's quota."""
        keys = [tenant_queued_key(tenant), tenant_jobs_key(tenant), active_key("queued")]
        keys.extend(job_key(record["id"]) for record in records)
        args: list[str | int] = [quota, len(records), len(FIELDS), *FIELDS]
        for record in records:
            args.extend(record[name] for name in FIELDS)
        ok, queued = self._create(keys=keys, args=args)
        if not ok:
            raise QuotaExceeded(int(queued), quota, len(records))

    def discard(self, tenant: str, job_ids: list[str]) -> None:
        """Remove jobs that were created but could not be dispatched."""
        if job_ids:
            keys = [tenant_jobs_key(tenant), tenant_queued_key(tenant), active_key("queued")]
            for job_id in job_ids:
                keys.extend((job_key(job_id), events_key(job_id)))
            self._discard(keys=keys, args=job_ids)

    def get(self, job_id: str, tenant: str | None = None) -> dict[str, str] | None:
        """The record, or None when it does not exist or belongs to another tenant."""
        if not is_job_id(job_id):
            return None
        record = self.redis.hgetall(job_key(job_id))
        return record if _owned(record, tenant) else None

    def get_many(self, job_ids: list[str]) -> list[dict[str, str] | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        return [r or None for r in pipe.execute()]

    def list(
        self, tenant: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, str]], str | None]:
        """A page of the tenant's jobs, newest first, and the cursor of the next page."""
        found: list[dict[str, str]] = []
        high = f"({cursor}" if cursor else "+"
        scanned = 0
        batch = max(limit, 50)
        while True:
            ids = self.redis.zrevrangebylex(tenant_jobs_key(tenant), high, "-", start=0, num=batch)
            if not ids:
                return found, None
            records = self.get_many(ids)
            gone = [i for i, r in zip(ids, records, strict=True) if r is None]
            if gone:  # expired after their retention: drop them from the index too
                self.redis.zrem(tenant_jobs_key(tenant), *gone)
            for job_id, record in zip(ids, records, strict=True):
                scanned += 1
                if record is None or (status is not None and record["status"] != status):
                    continue
                found.append(record)
                if len(found) == limit:
                    return found, job_id
            high = f"({ids[-1]}"
            if scanned >= 20 * batch:  # a rare status: hand back a cursor, not a long scan
                return found, ids[-1]

    def cancel(self, job_id: str, tenant: str | None, *, flag_ttl: int) -> str:
        """Cancel a job: 'canceled' (it was queued), 'canceling' (a worker will stop it),
        'missing', or 'final:<status>' for a job that had already ended."""
        if not is_job_id(job_id):
            return "missing"
        return self._move(
            self._cancel,
            states.CANCEL,
            job_id,
            tenant or "",
            now_rfc3339(),
            self.retention_seconds,
            flag_ttl,
        )

    def purge(self, job_id: str, tenant: str) -> str:
        """Delete a finished job's record: 'purged', 'missing' or 'active:<status>'."""
        if not is_job_id(job_id):
            return "missing"
        keys = [job_key(job_id), events_key(job_id), tenant_jobs_key(tenant)]
        return self._purge(keys=keys, args=[job_id, tenant, states.moves_arg(states.PURGE)])

    def event_log(self, job_id: str, tenant: str | None = None) -> EventLog:
        """The record (None as in `get`) and its event log's ends, in one transaction: no
        event can come between the record read and the log's last id."""
        if not is_job_id(job_id):
            return EventLog(None, NO_EVENT, NO_EVENT, False)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(job_key(job_id))
        pipe.xrange(events_key(job_id), count=1)
        pipe.xrevrange(events_key(job_id), count=1)
        pipe.xlen(events_key(job_id))
        record, first, last, length = pipe.execute()
        return EventLog(
            record if _owned(record, tenant) else None,
            first[0][0] if first else NO_EVENT,
            last[0][0] if last else NO_EVENT,
            length >= EVENT_LOG_LENGTH,
        )

    def events_after(
        self, job_id: str, after: str, *, block_ms: int | None = None
    ) -> list[tuple[str, str, Any]]:
        """The job's events after id `after`, oldest first, as (id, event name, data); with
        `block_ms`, waits up to that long for the next one when there is none yet."""
        answer = self.redis.xread({events_key(job_id): after}, block=block_ms)
        if not answer:
            return []
        [(_, entries)] = answer
        return [(eid, fields["event"], json.loads(fields["data"])) for eid, fields in entries]

    def progress(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest progress as the record has it (with its preview), or None."""
        text = self.redis.hget(job_key(job_id), "progress")
        return json.loads(text) if text else None

    def queued_count(self, tenant: str) -> int:
        return int(self.redis.scard(tenant_queued_key(tenant)))

    def status_counts(self) -> dict[str, int]:
        """Jobs in each status: active ones counted now, final ones since the data began."""
        pipe = self.redis.pipeline(transaction=False)
        for status in ACTIVE_STATUSES:
            pipe.scard(active_key(status))
        pipe.hgetall(STATS_KEY)
        *active, finished = pipe.execute()
        counts = dict(zip(ACTIVE_STATUSES, (int(n) for n in active), strict=True))
        for status in sorted(FINAL_STATUSES):
            counts[status] = int(finished.get(status, 0))
        return counts

    # -- the workers' side ---------------------------------------------------------------

    def start(
        self,
        job_id: str,
        worker: str,
        *,
        holder: str,
        lease_seconds: float,
        max_attempts: int,
        take_over: str = "",
    ) -> str:
        """Mark a job running on `worker` (attempts + 1) under a lease held by `holder`.

        Answers the status afterwards: 'running' means render it; 'busy' means another live
        worker holds its lease; 'canceled' or 'failed' means it ended at this call (a cancel
        that was waiting, or `max_attempts` used up); 'ended:<status>' means it had ended
        before (its webhook was sent then); 'missing' means it is gone. `take_over` names a dead holder whose lease may be
        taken at once instead of waiting for it to run out.
        """
        return self._move(
            self._start,
            states.START,
            job_id,
            worker,
            now_rfc3339(),
            self.retention_seconds,
            holder,
            lease_seconds,
            max_attempts,
            take_over,
            states.moves_arg(states.GIVE_UP),
        )

    def renew(self, job_id: str, holder: str, lease_seconds: float) -> bool:
        """Extend our lease on a running job; False when it is no longer ours."""
        return bool(self._renew(keys=[lease_key(job_id)], args=[holder, lease_seconds]))

    def lease_holder(self, job_id: str) -> str | None:
        return self.redis.get(lease_key(job_id))

    def requeue(self, job_id: str, *, max_attempts: int, take_over: str = "") -> str:
        """Put a running job whose lease ran out (its worker died) back in the queue state:
        'requeued' (send it again), 'canceled', 'failed' (worker_lost), 'held' or 'missing'."""
        return self._move(
            self._requeue,
            states.REQUEUE,
            job_id,
            now_rfc3339(),
            self.retention_seconds,
            max_attempts,
            take_over,
            states.moves_arg(states.GIVE_UP),
        )

    def active_ids(self, status: str) -> list[str]:
        return sorted(self.redis.smembers(active_key(status)))

    def set_progress(self, job_id: str, progress: Mapping[str, Any]) -> bool:
        """Record progress and add it to the job's events (without its preview, which only
        the record keeps); False when the job is no longer running."""
        text = json.dumps(dict(progress), separators=(",", ":"))
        logged = {k: v for k, v in progress.items() if k != "preview"}
        logged_text = json.dumps(logged, separators=(",", ":"))
        return bool(self._move(self._progress, states.PROGRESS, job_id, text, logged_text))

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
        finished_at: str | None = None,
    ) -> str:
        """End a job in a final status; answers that status, or the status it already had.
        `finished_at` (RFC 3339) is the time to record, when the caller wrote it elsewhere too;
        default now."""
        if status not in states.END:
            raise ValueError(f"{status!r} is not a final status: use one of {sorted(states.END)}")
        field, value = "", ""
        if result is not None:
            field, value = "result", json.dumps(dict(result), separators=(",", ":"))
        elif error is not None:
            field, value = "error", json.dumps(dict(error), separators=(",", ":"))
        when = finished_at or now_rfc3339()
        return self._move(
            self._finish, states.END[status], job_id, field, value, when, self.retention_seconds
        )

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))


_ACTIVE_ORDER = ("queued", "running", "canceling")
"""The active sets' order in a job script's KEYS (farm/lua/job.lua: KEYS[6] to KEYS[8])."""


def _owned(record: Mapping[str, str], tenant: str | None) -> bool:
    """The record exists and belongs to `tenant` (None: any)."""
    return bool(record) and (tenant is None or record.get("tenant") == tenant)


def wants_webhook(record: Mapping[str, str]) -> bool:
    """Whether the job's end is announced by webhook: the record's `has_webhook`, set at
    create. A record stored before that field existed has none: its spec is parsed (once, here)
    and its `webhook` field decides, so jobs queued before an upgrade keep their webhook."""
    flag = record.get("has_webhook")
    if flag is not None:
        return flag == "1"
    try:
        spec = json.loads(record.get("spec") or "{}")
    except ValueError:
        return False  # a spec that does not parse has no receiver to announce to
    return isinstance(spec, dict) and bool(spec.get("webhook"))


def to_public(record: Mapping[str, str], *, result_url: str | None = None) -> dict[str, Any]:
    """The contract's job object from a stored record."""
    job: dict[str, Any] = {}
    for name in FIELDS:
        if name in _PRIVATE_FIELDS:
            continue
        value = record.get(name, "")
        if name in _JSON_FIELDS:
            job[name] = json.loads(value) if value else None
        elif name == "attempts":
            job[name] = int(value or 0)
        else:
            job[name] = value or None
    job["warnings"] = job["warnings"] or []
    job["metadata"] = job["metadata"] or {}
    if job["result"] is not None and result_url is not None:
        job["result"]["url"] = result_url
    return job
