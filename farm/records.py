"""Job records in Redis, the farm's source of truth: one hash per job, moved between states by
Lua scripts so that every transition (and its indexes, counters and event) is atomic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import redis

from farm.ids import is_job_id, now_rfc3339
from schemas.job import ACTIVE_STATUSES, FINAL_STATUSES

__all__ = [
    "EVENT_LOG_LENGTH",
    "FIELDS",
    "NO_EVENT",
    "STATS_KEY",
    "EventLog",
    "JobRecords",
    "QuotaExceeded",
    "active_key",
    "cancel_key",
    "events_key",
    "job_key",
    "new_record",
    "to_public",
]

PREFIX = "rf:"
STATS_KEY = PREFIX + "stats:finished"
"""Hash: final status -> how many jobs ended so (the counters behind the jobs metric)."""

FIELDS = (
    "id", "tenant", "status", "model", "kind", "priority", "spec", "created_at", "started_at",
    "finished_at", "progress", "worker", "attempts", "warnings", "result", "error", "metadata",
)  # fmt: skip
_JSON_FIELDS = ("spec", "progress", "warnings", "result", "error", "metadata")


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def index_key(tenant: str) -> str:
    """Sorted set of a tenant's job ids, all with score 0: ULIDs sort by time as text."""
    return f"{PREFIX}tenant:{tenant}:jobs"


def queued_key(tenant: str) -> str:
    """Set of a tenant's queued job ids, for the queued-jobs quota."""
    return f"{PREFIX}tenant:{tenant}:queued"


def active_key(status: str) -> str:
    """Set of all job ids in an active status (queued, running, canceling)."""
    return f"{PREFIX}active:{status}"


def cancel_key(job_id: str) -> str:
    """The cancel flag a worker reads between denoising steps."""
    return f"{PREFIX}cancel:{job_id}"


def lease_key(job_id: str) -> str:
    """The running job's lease: the holder (``host:pid``), renewed while it renders."""
    return f"{PREFIX}lease:{job_id}"


def events_key(job_id: str) -> str:
    """Stream of one job's events (status, and progress without its preview), in order, for
    live streams and for clients that reconnect; it expires and is deleted with the record."""
    return f"{PREFIX}events:{job_id}"


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


# Lua helpers shared by the scripts: key names must match the functions above.
_LUA_COMMON = (
    f"local LOG_LENGTH = {EVENT_LOG_LENGTH}\n"
    + """
local P = 'rf:'
local function emit(id, event, data)
  redis.call('XADD', P..'events:'..id, 'MAXLEN', LOG_LENGTH, '*', 'event', event, 'data', data)
end
local function publish(id, status)
  emit(id, 'status', '{"status":"'..status..'"}')
end
local function leave_active(id, tenant, status)
  redis.call('SREM', P..'active:'..status, id)
  if status == 'queued' then redis.call('SREM', P..'tenant:'..tenant..':queued', id) end
end
local function finish(key, id, tenant, old, new, now, ttl)
  leave_active(id, tenant, old)
  redis.call('HSET', key, 'status', new, 'finished_at', now)
  redis.call('HINCRBY', P..'stats:finished', new, 1)
  redis.call('DEL', P..'cancel:'..id, P..'lease:'..id)
  publish(id, new)
  redis.call('EXPIRE', key, ttl)
  redis.call('EXPIRE', P..'events:'..id, ttl)
end
"""
)

# ARGV: tenant, quota, number of jobs, number of fields F, F field names, then F values per job.
_CREATE = """
local tenant, quota, n, f = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local qkey = 'rf:tenant:'..tenant..':queued'
local queued = redis.call('SCARD', qkey)
if queued + n > quota then return {0, queued} end
for i = 0, n - 1 do
  local base = 4 + f + i * f
  local id = ARGV[base + 1]
  local args = {}
  for j = 1, f do
    args[#args + 1] = ARGV[4 + j]
    args[#args + 1] = ARGV[base + j]
  end
  redis.call('HSET', 'rf:job:'..id, unpack(args))
  redis.call('ZADD', 'rf:tenant:'..tenant..':jobs', 0, id)
  redis.call('SADD', qkey, id)
  redis.call('SADD', 'rf:active:queued', id)
end
return {1, queued}
"""

# ARGV: id, tenant ('' = any), now, record ttl, cancel-flag ttl.
_CANCEL = (
    _LUA_COMMON
    + """
local id = ARGV[1]
local key = P..'job:'..id
local st, tenant = unpack(redis.call('HMGET', key, 'status', 'tenant'))
if not st or (ARGV[2] ~= '' and tenant ~= ARGV[2]) then return 'missing' end
if st == 'queued' then
  finish(key, id, tenant, st, 'canceled', ARGV[3], tonumber(ARGV[4]))
  return 'canceled'
elseif st == 'running' then
  leave_active(id, tenant, st)
  redis.call('SADD', P..'active:canceling', id)
  redis.call('HSET', key, 'status', 'canceling')
  redis.call('SET', P..'cancel:'..id, '1', 'EX', tonumber(ARGV[5]))
  publish(id, 'canceling')
  return 'canceling'
elseif st == 'canceling' then
  return 'canceling'
end
return 'final:'..st
"""
)

# ARGV: id, worker, now, record ttl, lease holder, lease ttl, max attempts, holder to take
# over ('' = none). Answers the status afterwards: 'running' means render it; 'busy' means a
# live worker holds it; anything else means do not render.
_START = (
    _LUA_COMMON
    + """
local id = ARGV[1]
local key = P..'job:'..id
local st, tenant, attempts = unpack(redis.call('HMGET', key, 'status', 'tenant', 'attempts'))
if not st then return 'missing' end
local lease = P..'lease:'..id
if st == 'canceling' then
  finish(key, id, tenant, st, 'canceled', ARGV[3], tonumber(ARGV[4]))
  redis.call('DEL', lease)
  return 'canceled'
end
if st ~= 'queued' and st ~= 'running' then return 'ended:'..st end
if st == 'running' then
  local holder = redis.call('GET', lease)
  if holder and holder ~= ARGV[8] then return 'busy' end
end
if tonumber(attempts or '0') >= tonumber(ARGV[7]) then
  redis.call('HSET', key, 'error', '{"code":"worker_lost","message":"the job was started '
    ..attempts..' times and its worker died every time: it may be too large for the '
    ..'workers (try a smaller canvas or fewer regions), or the workers are failing"}')
  finish(key, id, tenant, st, 'failed', ARGV[3], tonumber(ARGV[4]))
  redis.call('DEL', lease)
  return 'failed'
end
leave_active(id, tenant, st)
redis.call('SADD', P..'active:running', id)
redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3])
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('SET', lease, ARGV[5], 'PX', math.floor(tonumber(ARGV[6]) * 1000))
if st == 'queued' then publish(id, 'running') end
return 'running'
"""
)

# ARGV: id, holder, lease ttl. Renews a lease we still hold; 0 when it is no longer ours.
_RENEW = """
local lease = 'rf:lease:'..ARGV[1]
if redis.call('GET', lease) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', lease, math.floor(tonumber(ARGV[3]) * 1000))
return 1
"""

# ARGV: id, now, record ttl, max attempts, holder to take over ('' = none). A running (or
# canceling) job whose lease has run out goes back to the queue, or ends: 'requeued',
# 'canceled', 'failed', or 'held' when a live lease exists.
_REQUEUE = (
    _LUA_COMMON
    + """
local id = ARGV[1]
local key = P..'job:'..id
local st, tenant, attempts = unpack(redis.call('HMGET', key, 'status', 'tenant', 'attempts'))
if not st then
  redis.call('SREM', P..'active:running', id)
  redis.call('SREM', P..'active:canceling', id)
  return 'missing'
end
if st ~= 'running' and st ~= 'canceling' then return st end
local holder = redis.call('GET', P..'lease:'..id)
if holder and holder ~= ARGV[5] then return 'held' end
redis.call('DEL', P..'lease:'..id)
if st == 'canceling' then
  finish(key, id, tenant, st, 'canceled', ARGV[2], tonumber(ARGV[3]))
  return 'canceled'
end
if tonumber(attempts or '0') >= tonumber(ARGV[4]) then
  redis.call('HSET', key, 'error', '{"code":"worker_lost","message":"the job was started '
    ..attempts..' times and its worker died every time: it may be too large for the '
    ..'workers (try a smaller canvas or fewer regions), or the workers are failing"}')
  finish(key, id, tenant, st, 'failed', ARGV[2], tonumber(ARGV[3]))
  return 'failed'
end
leave_active(id, tenant, st)
redis.call('SADD', P..'active:queued', id)
redis.call('SADD', P..'tenant:'..tenant..':queued', id)
redis.call('HSET', key, 'status', 'queued', 'progress', '')
publish(id, 'queued')
return 'requeued'
"""
)

# ARGV: id, progress JSON, the same without its preview (for the event log). Only a running
# (or canceling) job takes progress.
_PROGRESS = (
    _LUA_COMMON
    + """
local id = ARGV[1]
local key = P..'job:'..id
local st = redis.call('HGET', key, 'status')
if st ~= 'running' and st ~= 'canceling' then return 0 end
redis.call('HSET', key, 'progress', ARGV[2])
emit(id, 'progress', ARGV[3])
return 1
"""
)

# ARGV: id, new status, field name ('result' or 'error' or ''), its JSON, now, record ttl.
_FINISH = (
    _LUA_COMMON
    + """
local id = ARGV[1]
local key = P..'job:'..id
local st, tenant = unpack(redis.call('HMGET', key, 'status', 'tenant'))
if not st then return 'missing' end
if st ~= 'queued' and st ~= 'running' and st ~= 'canceling' then return st end
if ARGV[3] ~= '' then redis.call('HSET', key, ARGV[3], ARGV[4]) end
finish(key, id, tenant, st, ARGV[2], ARGV[5], tonumber(ARGV[6]))
return ARGV[2]
"""
)

# ARGV: tenant, ids... Undoes a create whose dispatch failed: nothing half-queued is left.
_DISCARD = """
local tenant = ARGV[1]
for i = 2, #ARGV do
  local id = ARGV[i]
  redis.call('DEL', 'rf:job:'..id, 'rf:events:'..id)
  redis.call('ZREM', 'rf:tenant:'..tenant..':jobs', id)
  redis.call('SREM', 'rf:tenant:'..tenant..':queued', id)
  redis.call('SREM', 'rf:active:queued', id)
end
return #ARGV - 1
"""

# ARGV: id, tenant. Deletes a finished job's record.
_PURGE = """
local id, tenant = ARGV[1], ARGV[2]
local key = 'rf:job:'..id
local st, owner = unpack(redis.call('HMGET', key, 'status', 'tenant'))
if not st or owner ~= tenant then return 'missing' end
if st == 'queued' or st == 'running' or st == 'canceling' then return 'active:'..st end
redis.call('DEL', key, 'rf:events:'..id)
redis.call('ZREM', 'rf:tenant:'..tenant..':jobs', id)
return 'purged'
"""


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
        "status": "queued",
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
    }


class JobRecords:
    """Reads and moves job records; both the API and the workers go through this class."""

    def __init__(self, client: redis.Redis, *, retention_seconds: int) -> None:
        # `client` must decode responses (decode_responses=True): records are text.
        self.redis = client
        self.retention_seconds = retention_seconds
        self._create = client.register_script(_CREATE)
        self._cancel = client.register_script(_CANCEL)
        self._start = client.register_script(_START)
        self._renew = client.register_script(_RENEW)
        self._requeue = client.register_script(_REQUEUE)
        self._progress = client.register_script(_PROGRESS)
        self._finish = client.register_script(_FINISH)
        self._discard = client.register_script(_DISCARD)
        self._purge = client.register_script(_PURGE)

    # -- the API's side ------------------------------------------------------------------

    def create(self, tenant: str, records: list[dict[str, str]], *, quota: int) -> None:
        """Store new queued jobs, all or none; raises QuotaExceeded past the tenant's quota."""
        args: list[str | int] = [tenant, quota, len(records), len(FIELDS), *FIELDS]
        for record in records:
            args.extend(record[name] for name in FIELDS)
        ok, queued = self._create(args=args)
        if not ok:
            raise QuotaExceeded(int(queued), quota, len(records))

    def discard(self, tenant: str, job_ids: list[str]) -> None:
        """Remove jobs that were created but could not be dispatched."""
        if job_ids:
            self._discard(args=[tenant, *job_ids])

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
            ids = self.redis.zrevrangebylex(index_key(tenant), high, "-", start=0, num=batch)
            if not ids:
                return found, None
            records = self.get_many(ids)
            gone = [i for i, r in zip(ids, records, strict=True) if r is None]
            if gone:  # expired after their retention: drop them from the index too
                self.redis.zrem(index_key(tenant), *gone)
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
        return self._cancel(
            args=[job_id, tenant or "", now_rfc3339(), self.retention_seconds, flag_ttl]
        )

    def purge(self, job_id: str, tenant: str) -> str:
        """Delete a finished job's record: 'purged', 'missing' or 'active:<status>'."""
        if not is_job_id(job_id):
            return "missing"
        return self._purge(args=[job_id, tenant])

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
        return int(self.redis.scard(queued_key(tenant)))

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
        return self._start(
            args=[
                job_id, worker, now_rfc3339(), self.retention_seconds, holder, lease_seconds,
                max_attempts, take_over,
            ]
        )  # fmt: skip

    def renew(self, job_id: str, holder: str, lease_seconds: float) -> bool:
        """Extend our lease on a running job; False when it is no longer ours."""
        return bool(self._renew(args=[job_id, holder, lease_seconds]))

    def lease_holder(self, job_id: str) -> str | None:
        return self.redis.get(lease_key(job_id))

    def requeue(self, job_id: str, *, max_attempts: int, take_over: str = "") -> str:
        """Put a running job whose lease ran out (its worker died) back in the queue state:
        'requeued' (send it again), 'canceled', 'failed' (worker_lost), 'held' or 'missing'."""
        return self._requeue(
            args=[job_id, now_rfc3339(), self.retention_seconds, max_attempts, take_over]
        )

    def active_ids(self, status: str) -> list[str]:
        return sorted(self.redis.smembers(active_key(status)))

    def set_progress(self, job_id: str, progress: Mapping[str, Any]) -> bool:
        """Record progress and add it to the job's events (without its preview, which only
        the record keeps); False when the job is no longer running."""
        text = json.dumps(dict(progress), separators=(",", ":"))
        logged = {k: v for k, v in progress.items() if k != "preview"}
        return bool(self._progress(args=[job_id, text, json.dumps(logged, separators=(",", ":"))]))

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
        if status not in FINAL_STATUSES:
            raise ValueError(f"{status!r} is not a final status")
        field, value = "", ""
        if result is not None:
            field, value = "result", json.dumps(dict(result), separators=(",", ":"))
        elif error is not None:
            field, value = "error", json.dumps(dict(error), separators=(",", ":"))
        when = finished_at or now_rfc3339()
        return self._finish(args=[job_id, status, field, value, when, self.retention_seconds])

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))


def _owned(record: Mapping[str, str], tenant: str | None) -> bool:
    """The record exists and belongs to `tenant` (None: any)."""
    return bool(record) and (tenant is None or record.get("tenant") == tenant)


def to_public(record: Mapping[str, str], *, result_url: str | None = None) -> dict[str, Any]:
    """The contract's job object from a stored record."""
    job: dict[str, Any] = {}
    for name in FIELDS:
        if name in ("tenant", "priority"):
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
