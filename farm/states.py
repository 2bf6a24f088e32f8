"""The job state machine, as one table: for each operation and the status a job is in, the
status it moves to, the event it emits and the indexes it touches.

farm/records.py hands each Lua script its operation's moves from this table (as ARGV: the
scripts move a job only along them), the workers read what an answer means from it, and
tests/farm/test_state_machine.py checks every row, and every pair that is not a row, against
a real Redis. The statuses are the contract's (schemas/job.py); `NEW` and `DELETED` stand for
"no record yet" and "record gone"."""

from __future__ import annotations

from typing import NamedTuple

from schemas.job import ACTIVE_STATUSES, FINAL_STATUSES

__all__ = [
    "CANCEL",
    "CREATE",
    "DELETED",
    "DISCARD",
    "END",
    "ENDED_AT_START",
    "GIVE_UP",
    "NEW",
    "OPERATIONS",
    "PROGRESS",
    "PURGE",
    "RENDER",
    "REQUEUE",
    "START",
    "TABLE",
    "Transition",
    "allows",
    "moves_arg",
    "sources",
    "target",
]

NEW = "new"
"""Before `create`: no record."""
DELETED = "deleted"
"""After `discard` or `purge`: the record and its events are gone."""

CREATE = "create"
"""The API stores a new job (JobRecords.create)."""
DISCARD = "discard"
"""The API takes back a created job it could not dispatch (JobRecords.discard)."""
CANCEL = "cancel"
"""A client cancels (JobRecords.cancel)."""
START = "start"
"""A worker takes a delivered job (JobRecords.start)."""
GIVE_UP = "give_up"
"""`start` or `requeue` of a job already started `max_attempts` times: it fails with
worker_lost instead."""
REQUEUE = "requeue"
"""The reconciler finds a job whose lease ran out (JobRecords.requeue)."""
PROGRESS = "progress"
"""A worker reports progress (JobRecords.set_progress)."""
END = {
    "succeeded": "end_succeeded",
    "failed": "end_failed",
    "canceled": "end_canceled",
}
"""Final status -> the operation by which a worker (or the API) ends a job in it
(JobRecords.finish)."""
PURGE = "purge"
"""A client deletes an ended job (JobRecords.purge)."""

OPERATIONS = (CREATE, DISCARD, CANCEL, START, GIVE_UP, REQUEUE, PROGRESS, *END.values(), PURGE)


class Transition(NamedTuple):
    """One row: what `operation` does to a job in status `source`."""

    operation: str
    source: str
    target: str
    event: str | None
    """The event added to the job's log: 'status' (data: the new status), 'progress', or
    None."""
    indexes: tuple[str, ...]
    """The indexes it changes, in order: '+name' adds the job to one, '-name' takes it off;
    names are 'tenant_jobs', 'tenant_queued', 'active:<status>' and 'finished:<status>' (a
    counter of farm/redis_keys.py STATS_KEY), the key builders of farm/redis_keys.py."""


def _indexes(source: str, target: str) -> tuple[str, ...]:
    """The index changes of a move from `source` to `target` (none when they are equal)."""
    if source == target:
        return ()
    changes: list[str] = []
    if source == NEW:
        changes.append("+tenant_jobs")
    if source in ACTIVE_STATUSES:
        changes.append(f"-active:{source}")
        if source == "queued":
            changes.append("-tenant_queued")
    if target in ACTIVE_STATUSES:
        changes.append(f"+active:{target}")
        if target == "queued":
            changes.append("+tenant_queued")
    elif target in FINAL_STATUSES:
        changes.append(f"+finished:{target}")
    if target == DELETED:
        changes.append("-tenant_jobs")
    return tuple(changes)


def _row(operation: str, source: str, target: str, event: str | None) -> Transition:
    return Transition(operation, source, target, event, _indexes(source, target))


_ROWS = (
    _row(CREATE, NEW, "queued", None),
    _row(DISCARD, "queued", DELETED, None),
    _row(CANCEL, "queued", "canceled", "status"),
    _row(CANCEL, "running", "canceling", "status"),  # and sets the cancel flag
    _row(CANCEL, "canceling", "canceling", None),  # already asked: nothing more
    _row(START, "queued", "running", "status"),
    _row(START, "running", "running", None),  # a redelivery taking over a dead holder's lease
    _row(START, "canceling", "canceled", "status"),  # the cancel that was waiting ends it
    _row(GIVE_UP, "queued", "failed", "status"),
    _row(GIVE_UP, "running", "failed", "status"),
    _row(REQUEUE, "running", "queued", "status"),  # and clears its progress
    _row(REQUEUE, "canceling", "canceled", "status"),
    _row(PROGRESS, "running", "running", "progress"),
    _row(PROGRESS, "canceling", "canceling", "progress"),
    *(_row(END[final], source, final, "status") for final in END for source in ACTIVE_STATUSES),
    *(_row(PURGE, final, DELETED, None) for final in sorted(FINAL_STATUSES)),
)

TABLE: dict[tuple[str, str], Transition] = {(t.operation, t.source): t for t in _ROWS}
"""(operation, source status) -> Transition. A pair that is not in it is refused: the job
stays as it is and the operation answers why (see JobRecords)."""

RENDER = TABLE[(START, "queued")].target
"""What `start` answers when the worker is to render the job."""
ENDED_AT_START = frozenset(
    t.target for t in _ROWS if t.operation in (START, GIVE_UP) and t.target in FINAL_STATUSES
)
"""What `start` answers when the job ended at that call (its webhook is due now)."""


def allows(operation: str, source: str) -> bool:
    """Whether `operation` moves a job in status `source` (else it is refused)."""
    return (operation, source) in TABLE


def target(operation: str, source: str) -> str:
    """The status `operation` moves a job in `source` to; KeyError when it is refused."""
    return TABLE[(operation, source)].target


def sources(operation: str) -> tuple[str, ...]:
    """The statuses `operation` moves a job from, in the table's order."""
    return tuple(t.source for t in _ROWS if t.operation == operation)


def moves_arg(operation: str) -> str:
    """The operation's moves as a Lua script takes them in ARGV: 'from>to' pairs joined by
    commas (farm/lua/moves.lua reads them)."""
    return ",".join(f"{t.source}>{t.target}" for t in _ROWS if t.operation == operation)
