"""The job state machine against a real Redis: every row of farm/states.py's table done through
JobRecords (the Lua scripts), and every pair of operation and status that is not a row refused
without a trace. Each case checks the status afterwards, the answer, the event logged, the
indexes changed, and that no key outside farm/redis_keys.py's scheme appeared."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from farm import redis_keys, states
from farm.ids import new_job_id
from farm.records import JobRecords, QuotaExceeded, new_record
from schemas.job import ACTIVE_STATUSES, FINAL_STATUSES, STATUSES

TENANT = "acme"
HOLDER = "host-a:1"
"""The holder of the lease of every job made running here."""
SPEC = {"model": "tiny", "kind": "txt2img", "priority": 5, "metadata": {}}
PROGRESS = {"step": 1, "total": 4, "eta_seconds": 0.5, "preview": "data:image/jpeg;base64,AA=="}
RESULT = {
    "url": "",
    "key": "k",
    "format": "png",
    "width": 8,
    "height": 8,
    "bytes": 1,
    "sha256": "0" * 64,
    "seed": 1,
    "render_seconds": 0.1,
}


@pytest.fixture
def records(redis_url: str) -> Iterator[JobRecords]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield JobRecords(client, retention_seconds=3600)
    client.close()


def make_job(records: JobRecords, status: str, *, attempts: int = 0) -> str:
    """A job of TENANT brought to `status` through JobRecords, as the farm does."""
    record = new_record(job_id=new_job_id(), tenant=TENANT, spec=SPEC)
    records.create(TENANT, [record], quota=100)
    job_id = record["id"]
    if status in ("running", "canceling", "succeeded", "failed"):
        assert records.start(job_id, "w0", holder=HOLDER, lease_seconds=60, max_attempts=9) == (
            "running"
        )
    if status == "canceling":
        assert records.cancel(job_id, TENANT, flag_ttl=60) == "canceling"
    elif status == "canceled":
        assert records.cancel(job_id, TENANT, flag_ttl=60) == "canceled"
    elif status in ("succeeded", "failed"):
        assert records.finish(job_id, status) == status
    if attempts:
        records.redis.hset(redis_keys.job_key(job_id), "attempts", attempts)
    assert records.get(job_id)["status"] == status
    return job_id


def snapshot(records: JobRecords, job_id: str) -> dict[str, Any]:
    """What a transition may change, for one job of TENANT."""
    r = records.redis
    indexes = {
        "tenant_jobs": r.zscore(redis_keys.tenant_jobs_key(TENANT), job_id) is not None,
        "tenant_queued": r.sismember(redis_keys.tenant_queued_key(TENANT), job_id),
    }
    for status in ACTIVE_STATUSES:
        indexes[f"active:{status}"] = r.sismember(redis_keys.active_key(status), job_id)
    finished = r.hgetall(redis_keys.STATS_KEY)
    for status in FINAL_STATUSES:
        indexes[f"finished:{status}"] = int(finished.get(status, 0))
    events = [
        (f["event"], json.loads(f["data"])) for _, f in r.xrange(redis_keys.events_key(job_id))
    ]
    return {
        "record": r.hgetall(redis_keys.job_key(job_id)),
        "indexes": indexes,
        "events": events,
        "cancel": r.get(redis_keys.cancel_key(job_id)),
        "lease": r.get(redis_keys.lease_key(job_id)),
    }


def index_changes(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The changes between two snapshots in the table's notation ('+name', '-name')."""
    changes = set()
    for name, was in before["indexes"].items():
        now = after["indexes"][name]
        if name.startswith("finished:"):
            assert now - was in (0, 1), name
            if now > was:
                changes.add(f"+{name}")
        elif now != was:
            changes.add(("+" if now else "-") + name)
    return changes


def known_keys(job_id: str) -> set[str]:
    """Every key one job of TENANT may make, by farm/redis_keys.py."""
    keys = {
        redis_keys.job_key(job_id),
        redis_keys.events_key(job_id),
        redis_keys.cancel_key(job_id),
        redis_keys.lease_key(job_id),
        redis_keys.tenant_jobs_key(TENANT),
        redis_keys.tenant_queued_key(TENANT),
        redis_keys.STATS_KEY,
    }
    return keys | {redis_keys.active_key(s) for s in ACTIVE_STATUSES}


# -- how each operation is done, and what it answers ------------------------------------------


def _start(records: JobRecords, job_id: str, *, max_attempts: int = 9) -> str:
    # A redelivered job whose holder died: the new worker takes its lease over at once.
    return records.start(
        job_id,
        "w1",
        holder="host-b:2",
        lease_seconds=60,
        max_attempts=max_attempts,
        take_over=records.lease_holder(job_id) or "",
    )


def _requeue(records: JobRecords, job_id: str, *, max_attempts: int = 9) -> Any:
    records.redis.delete(redis_keys.lease_key(job_id))  # its worker died: the lease ran out
    return records.requeue(job_id, max_attempts=max_attempts)


DO: dict[str, Callable[[JobRecords, str], Any]] = {
    states.CANCEL: lambda rec, job_id: rec.cancel(job_id, TENANT, flag_ttl=60),
    states.START: _start,
    states.REQUEUE: _requeue,
    states.PROGRESS: lambda rec, job_id: rec.set_progress(job_id, PROGRESS),
    states.END["succeeded"]: lambda rec, job_id: rec.finish(job_id, "succeeded", result=RESULT),
    states.END["failed"]: lambda rec, job_id: rec.finish(
        job_id, "failed", error={"code": "internal", "message": "boom"}
    ),
    states.END["canceled"]: lambda rec, job_id: rec.finish(job_id, "canceled"),
    states.PURGE: lambda rec, job_id: rec.purge(job_id, TENANT),
}
"""Operation -> how to do it to a job (GIVE_UP, CREATE and DISCARD have tests of their own)."""

ANSWER = {
    states.CANCEL: lambda t: t.target,
    states.START: lambda t: t.target,
    states.REQUEUE: lambda t: "requeued" if t.target == "queued" else t.target,
    states.PROGRESS: lambda t: True,
    **{op: (lambda t: t.target) for op in states.END.values()},
    states.PURGE: lambda t: "purged",
}
"""What each operation answers for a move (a row)."""

REFUSAL = {
    states.CANCEL: lambda st: f"final:{st}",
    states.START: lambda st: f"ended:{st}",
    states.REQUEUE: lambda st: st,
    states.PROGRESS: lambda st: False,
    **{op: (lambda st: st) for op in states.END.values()},
    states.PURGE: lambda st: f"active:{st}",
}
"""What each operation answers for a job in a status it does not move."""

ROWS = [t for t in states.TABLE.values() if t.operation in DO]
REFUSED = [(op, st) for op in DO for st in STATUSES if not states.allows(op, st)]


def expected_events(t: states.Transition) -> list[tuple[str, Any]]:
    if t.event == "status":
        return [("status", {"status": t.target})]
    if t.event == "progress":
        return [("progress", {k: v for k, v in PROGRESS.items() if k != "preview"})]
    assert t.event is None
    return []


def check_move(
    records: JobRecords,
    t: states.Transition,
    job_id: str,
    answer: Any,
    before: dict[str, Any],
    expected_answer: Any,
) -> None:
    after = snapshot(records, job_id)
    assert answer == expected_answer
    if t.target == states.DELETED:
        assert after["record"] == {} and after["events"] == []
    else:
        assert after["record"]["status"] == t.target
        assert after["events"][len(before["events"]) :] == expected_events(t)
        assert after["events"][: len(before["events"])] == before["events"]
    assert index_changes(before, after) == set(t.indexes)
    assert set(records.redis.keys("*")) <= known_keys(job_id)
    if t.target in FINAL_STATUSES and t.source != t.target:
        assert after["cancel"] is None and after["lease"] is None
        assert after["record"]["finished_at"]
        assert 0 < records.redis.ttl(redis_keys.job_key(job_id)) <= 3600
        assert 0 < records.redis.ttl(redis_keys.events_key(job_id)) <= 3600


@pytest.mark.parametrize("t", ROWS, ids=lambda t: f"{t.operation}-{t.source}-{t.target}")
def test_every_move_of_the_table(records: JobRecords, t: states.Transition) -> None:
    job_id = make_job(records, t.source)
    before = snapshot(records, job_id)
    answer = DO[t.operation](records, job_id)
    check_move(records, t, job_id, answer, before, ANSWER[t.operation](t))


@pytest.mark.parametrize(("operation", "status"), REFUSED, ids=lambda v: str(v))
def test_every_pair_outside_the_table_is_refused_without_a_trace(
    records: JobRecords, operation: str, status: str
) -> None:
    job_id = make_job(records, status)
    before = snapshot(records, job_id)
    answer = DO[operation](records, job_id)
    assert answer == REFUSAL[operation](status)
    after = snapshot(records, job_id)
    if operation == states.REQUEUE:  # the test took the lease away: nothing else moved
        before["lease"] = None
    assert after == before


def test_the_refusals_include_the_ones_that_matter() -> None:
    """Sanity of the table itself: ended jobs never move again, active ones cannot be purged."""
    for final in FINAL_STATUSES:
        for op in (
            states.CANCEL,
            states.START,
            states.REQUEUE,
            states.PROGRESS,
            *states.END.values(),
        ):
            assert (op, final) in REFUSED
    for active in ACTIVE_STATUSES:
        assert (states.PURGE, active) in REFUSED
    assert (states.REQUEUE, "queued") in REFUSED
    assert (states.PROGRESS, "queued") in REFUSED


def test_finishing_a_canceled_job_and_starting_a_succeeded_one_change_nothing(
    records: JobRecords,
) -> None:
    canceled = make_job(records, "canceled")
    succeeded = make_job(records, "succeeded")
    before = snapshot(records, canceled), snapshot(records, succeeded)
    assert records.finish(canceled, "succeeded", result=RESULT) == "canceled"
    assert _start(records, succeeded) == "ended:succeeded"
    assert (snapshot(records, canceled), snapshot(records, succeeded)) == before


GIVE_UPS = [
    (source, via)
    for source in states.sources(states.GIVE_UP)
    for via, operation in (("start", states.START), ("requeue", states.REQUEUE))
    if states.allows(operation, source)  # requeue never moves a queued job (tested above)
]


@pytest.mark.parametrize(("source", "via"), GIVE_UPS)
def test_give_up_when_the_attempts_are_spent(records: JobRecords, source: str, via: str) -> None:
    t = states.TABLE[(states.GIVE_UP, source)]
    job_id = make_job(records, source, attempts=2)
    before = snapshot(records, job_id)
    do = _start if via == "start" else _requeue
    answer = do(records, job_id, max_attempts=2)
    if via == "requeue":
        before["lease"] = None
    check_move(records, t, job_id, answer, before, t.target)
    error = json.loads(records.get(job_id)["error"])
    assert error["code"] == "worker_lost" and "started 2 times" in error["message"]


@pytest.mark.parametrize("via", ["start", "requeue"])
def test_a_waiting_cancel_wins_over_spent_attempts(records: JobRecords, via: str) -> None:
    """A canceling job is not one to give up on: GIVE_UP has no canceling row."""
    assert not states.allows(states.GIVE_UP, "canceling")
    job_id = make_job(records, "canceling", attempts=5)
    do = _start if via == "start" else _requeue
    assert do(records, job_id, max_attempts=1) == "canceled"
    assert records.get(job_id)["error"] == ""


def test_start_answers_busy_while_a_live_worker_holds_the_lease(records: JobRecords) -> None:
    job_id = make_job(records, "running")
    before = snapshot(records, job_id)
    answer = records.start(job_id, "w1", holder="host-b:2", lease_seconds=60, max_attempts=9)
    assert answer == "busy"
    assert snapshot(records, job_id) == before


def test_start_counts_attempts_and_takes_the_lease(records: JobRecords) -> None:
    job_id = make_job(records, "queued")
    assert _start(records, job_id) == states.RENDER
    record = records.get(job_id)
    assert (record["attempts"], record["worker"]) == ("1", "w1")
    assert records.lease_holder(job_id) == "host-b:2"
    assert 0 < records.redis.pttl(redis_keys.lease_key(job_id)) <= 60_000
    assert _start(records, job_id) == states.RENDER  # taken over again (a redelivery)
    assert records.get(job_id)["attempts"] == "2"


def test_requeue_answers_held_while_the_lease_lives(records: JobRecords) -> None:
    job_id = make_job(records, "running")
    before = snapshot(records, job_id)
    assert records.requeue(job_id, max_attempts=9) == "held"
    assert snapshot(records, job_id) == before


def test_requeue_clears_progress_and_cancel_sets_the_flag(records: JobRecords) -> None:
    job_id = make_job(records, "running")
    assert records.set_progress(job_id, PROGRESS)
    assert _requeue(records, job_id) == "requeued"
    assert records.get(job_id)["progress"] == ""
    assert _start(records, job_id) == "running"
    assert not records.cancel_requested(job_id)
    assert records.cancel(job_id, TENANT, flag_ttl=60) == "canceling"
    assert records.cancel_requested(job_id)
    assert 0 < records.redis.ttl(redis_keys.cancel_key(job_id)) <= 60


def test_requeue_of_a_missing_job_drops_it_from_the_active_sets(records: JobRecords) -> None:
    job_id = make_job(records, "running")
    records.redis.delete(redis_keys.job_key(job_id))
    assert _requeue(records, job_id) == "missing"
    for status in states.sources(states.REQUEUE):
        assert not records.redis.sismember(redis_keys.active_key(status), job_id)


def test_operations_on_a_job_that_does_not_exist(records: JobRecords) -> None:
    job_id = new_job_id()
    assert records.cancel(job_id, TENANT, flag_ttl=60) == "missing"
    assert _start(records, job_id) == "missing"
    assert records.finish(job_id, "succeeded", result=RESULT) == "missing"
    assert records.set_progress(job_id, PROGRESS) is False
    assert records.purge(job_id, TENANT) == "missing"
    assert records.redis.keys("*") == []


def test_another_tenant_can_neither_cancel_nor_purge(records: JobRecords) -> None:
    queued, ended = make_job(records, "queued"), make_job(records, "canceled")
    before = snapshot(records, queued), snapshot(records, ended)
    assert records.cancel(queued, "globex", flag_ttl=60) == "missing"
    assert records.purge(ended, "globex") == "missing"
    assert (snapshot(records, queued), snapshot(records, ended)) == before


def test_finish_refuses_a_status_that_is_not_final(records: JobRecords) -> None:
    job_id = make_job(records, "running")
    with pytest.raises(ValueError, match="'queued' is not a final status"):
        records.finish(job_id, "queued")


def test_create_and_discard_follow_the_table(records: JobRecords) -> None:
    t = states.TABLE[(states.CREATE, states.NEW)]
    made = [new_record(job_id=new_job_id(), tenant=TENANT, spec=SPEC) for _ in range(2)]
    records.create(TENANT, made, quota=2)
    for record in made:
        job_id = record["id"]
        after = snapshot(records, job_id)
        assert after["record"]["status"] == t.target and after["events"] == []
        assert {name for name, on in after["indexes"].items() if on} == {i[1:] for i in t.indexes}
    d = states.TABLE[(states.DISCARD, "queued")]
    before = {r["id"]: snapshot(records, r["id"]) for r in made}
    records.discard(TENANT, [r["id"] for r in made])
    for job_id, was in before.items():
        after = snapshot(records, job_id)
        assert after["record"] == {} and after["events"] == []
        assert index_changes(was, after) == set(d.indexes)
    assert records.redis.keys("*") == []  # the emptied sets are gone too


def test_the_quota_refuses_the_whole_batch(records: JobRecords) -> None:
    make_job(records, "queued")
    batch = [new_record(job_id=new_job_id(), tenant=TENANT, spec=SPEC) for _ in range(2)]
    with pytest.raises(QuotaExceeded) as caught:
        records.create(TENANT, batch, quota=2)
    assert (caught.value.queued, caught.value.quota, caught.value.asked) == (1, 2, 2)
    assert all(records.get(r["id"]) is None for r in batch)


def test_renew_extends_only_our_own_lease(records: JobRecords) -> None:
    job_id = make_job(records, "running")
    assert records.renew(job_id, HOLDER, 120)
    assert 60_000 < records.redis.pttl(redis_keys.lease_key(job_id)) <= 120_000
    assert not records.renew(job_id, "host-b:2", 120)


def test_the_tables_helpers_agree_with_its_rows() -> None:
    assert states.RENDER == "running"
    assert states.ENDED_AT_START == {"canceled", "failed"}
    assert states.sources(states.REQUEUE) == ("running", "canceling")
    assert states.moves_arg(states.CANCEL) == (
        "queued>canceled,running>canceling,canceling>canceling"
    )
    assert set(states.END) == FINAL_STATUSES
    for (operation, source), t in states.TABLE.items():
        assert operation in states.OPERATIONS and (t.operation, t.source) == (operation, source)


def test_the_lua_scripts_build_no_key_of_their_own() -> None:
    """Every key reaches the scripts through KEYS (farm/redis_keys.py); the one built inside
    (a tenant's queued set, the tenant read from the record) comes from parts passed in."""
    folder = Path(states.__file__).parent / "lua"
    scripts = sorted(folder.glob("*.lua"))
    assert len(scripts) >= 10
    for path in scripts:
        text = path.read_text()
        assert redis_keys.PREFIX not in text, path.name
    prefix, suffix = redis_keys.TENANT_QUEUED_PARTS
    assert prefix + TENANT + suffix == redis_keys.tenant_queued_key(TENANT)
