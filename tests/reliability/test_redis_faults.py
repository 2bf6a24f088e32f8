"""Redis faults: kill -9 and restart with AOF while jobs are queued and running (every job
finishes), restart without persistence (nothing stays queued or running forever; what Redis
forgot answers 404 and is counted), and Redis down at submit (503, nothing half-queued)."""

from __future__ import annotations

import time

import pytest

from farm import redis_keys
from farm.broker import queue_depth

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

DOWN_S = 2.0
"""Seconds Redis stays down at each restart."""


def _wait_running(farm, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while farm.r.scard(redis_keys.active_key("running")) < count:
        assert time.monotonic() < deadline, farm.log_tail()
        time.sleep(0.05)


def test_redis_restarts_with_aof_lose_nothing(make_farm, spec_factory, record_row, rel):
    farm = make_farm(aof=True, step_ms=150)
    started = time.monotonic()
    farm.start_workers(2)
    ids = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(12, 60))]
    assert all(ids)
    restarts = rel.pick(2, 3)
    for _ in range(restarts):
        _wait_running(farm, 2)  # two jobs running, the others queued
        farm.redis.restart(DOWN_S)
        time.sleep(3)
    farm.wait_final(ids, timeout=rel.pick(240, 600))
    row = record_row(
        farm.tally(f"Redis kill -9 + restart with AOF x{restarts}", ids, started=started)
    )
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), (row, farm.log_tail())
    assert row.succeeded == len(ids), (row, farm.log_tail())


def test_redis_restart_without_persistence_leaves_nothing_hanging(
    make_farm, spec_factory, record_row, rel
):
    farm = make_farm(aof=False, step_ms=150)
    started = time.monotonic()
    farm.start_workers(2)
    ids = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(16, 40))]
    _wait_running(farm, 2)
    done_before = sum(s == "succeeded" for s in farm.statuses(ids).values())
    farm.redis.restart(DOWN_S)  # everything in Redis is gone
    farm.wait_live(2, timeout=60)  # the workers come back to the new, empty Redis
    after = [farm.submit(spec_factory(seed=1000 + i)) for i in range(rel.pick(6, 20))]
    assert all(after)
    ids += after
    farm.wait_final(ids, timeout=rel.pick(180, 400))
    row = record_row(
        farm.tally(
            "Redis restart without persistence",
            ids,
            started=started,
            redis_kept=False,
            notes=f"{done_before} had succeeded before the restart; "
            "jobs submitted after it all count as succeeded",
        )
    )
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), (row, farm.log_tail())
    # Every job submitted after the restart succeeded; the others succeeded or are forgotten.
    assert all(farm.job(j)[1]["status"] == "succeeded" for j in after)
    assert row.succeeded + row.failed["forgotten by Redis (404)"] == len(ids), row
    for status in ("running", "queued"):
        assert farm.r.scard(redis_keys.active_key(status)) == 0, status


def test_redis_down_at_submit_answers_503_and_queues_nothing(
    make_farm, spec_factory, record_row, rel
):
    farm = make_farm(aof=True)
    started = time.monotonic()
    before = farm.submit(spec_factory(seed=1))
    assert before
    farm.redis.kill()
    farm.counted.outage = True
    tries = rel.pick(20, 100)
    answers = []
    for i in range(tries):
        if i % 2:
            answer = farm.call(
                "POST",
                "/v1/jobs",
                json=spec_factory(seed=i),
                headers={"Idempotency-Key": f"down-{i}"},
            )
        else:
            answer = farm.call(
                "POST", "/v1/jobs/batch", json={"job": spec_factory(), "seeds": [i, i + 1000]}
            )
        answers.append(answer.status_code)
    farm.redis.start()
    farm.counted.outage = False
    # Nothing half-queued: the one job from before, its one message, no other record.
    assert farm.r.zrange(redis_keys.tenant_jobs_key("acme"), 0, -1) == [before]
    assert queue_depth(farm.r, rel.MODEL) == 1
    assert sorted(farm.r.smembers(redis_keys.active_key("queued"))) == [before]
    assert not farm.r.keys(redis_keys.IDEMPOTENCY_PATTERN)
    after = farm.submit(spec_factory(seed=2))  # and it serves again at once
    farm.start_workers(1)
    farm.wait_final([before, after], timeout=120)
    row = rel.Row("Redis down at submit", tries)
    row.failed["503 broker_unavailable"] = sum(a == 503 for a in answers)
    row.failed.update(
        {f"answer {a}": n for a, n in ((a, answers.count(a)) for a in set(answers) - {503})}
    )
    done = farm.tally("", [before, after], started=started)
    row.lost, row.duplicated, row.errors_5xx = done.lost, done.duplicated, done.errors_5xx
    row.seconds, row.notes = done.seconds, "then 2 jobs submitted around the outage succeeded"
    record_row(row)
    assert answers == [503] * tries
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert done.succeeded == 2
