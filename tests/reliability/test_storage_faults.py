"""Storage faults, with S3 behind a proxy the test controls: S3 down (connections refused) for a
while during uploads, S3 that accepts connections and never answers (timeouts free the worker),
and no multipart upload left open afterwards."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime

import pytest

from farm import redis_keys

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]


def _wait_running(farm, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while farm.r.scard(redis_keys.active_key("running")) < count:
        assert time.monotonic() < deadline, farm.log_tail()
        time.sleep(0.05)


def test_s3_down_for_a_while_during_uploads(make_farm, spec_factory, record_row, rel):
    outage = rel.pick(10, 30)
    farm = make_farm(proxy=True, step_ms=100)
    started = time.monotonic()
    farm.start_workers(2)
    ids = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(10, 30))]
    _wait_running(farm, 2)
    farm.proxy.set("refuse")
    down_until = time.monotonic() + outage
    while time.monotonic() < down_until:
        # While storage is down, nothing is succeeded without its object.
        done = [j for j, s in farm.statuses(ids).items() if s == "succeeded"]
        assert all(farm.versions(j) for j in done)
        time.sleep(1)
    farm.proxy.set("forward")
    farm.wait_final(ids, timeout=rel.pick(180, 300))
    row = record_row(farm.tally(f"S3 down {outage} s during uploads", ids, started=started))
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert row.succeeded == len(ids), (row, farm.log_tail())
    assert farm.orphaned_uploads() == []


def test_s3_that_never_answers_times_out_and_frees_the_worker(
    make_farm, spec_factory, record_row, rel
):
    timeout_s, retry_s = 1.0, 4.0
    farm = make_farm(
        proxy=True,
        step_ms=100,
        env={
            "REGIONFARM_S3_TIMEOUT_SECONDS": str(timeout_s),
            "REGIONFARM_STORAGE_RETRY_SECONDS": str(retry_s),
        },
    )
    started = time.monotonic()
    farm.start_workers(1)
    ids = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(6, 12))]
    _wait_running(farm, 1)
    farm.proxy.set("hang")
    time.sleep(rel.pick(15, 30))
    farm.proxy.set("forward")
    after = [farm.submit(spec_factory(seed=100 + i)) for i in range(3)]
    ids += after
    farm.wait_final(ids, timeout=rel.pick(180, 300))
    row = record_row(
        farm.tally(
            "S3 accepts and never answers",
            ids,
            started=started,
            notes=f"S3 timeout {timeout_s:g} s x 3 attempts, uploads retried for {retry_s:g} s",
        )
    )
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert set(row.failed) <= {"storage_unavailable"}, row
    assert row.failed["storage_unavailable"] >= 1, row  # the hang did catch some
    assert all(farm.job(j)[1]["status"] == "succeeded" for j in after)  # the worker is free
    # No job held the worker much longer than its render plus the storage budget.
    limit = 0.5 + retry_s + 2 * 3 * (timeout_s + 1) + 5
    for job_id in ids:
        job = farm.job(job_id)[1]
        took = (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()
        assert took < limit, (job_id, took, limit)


def test_multipart_uploads_cut_by_an_outage_leave_nothing_open(make_farm, record_row, rel):
    from farm.storage import S3Storage
    from worker.storage import with_retries

    farm = make_farm(proxy=True)
    started = time.monotonic()
    storage = S3Storage(
        farm.proxy.url,
        farm.bucket,
        multipart_threshold=6 * 1024 * 1024,
        read_timeout=2,
        connect_timeout=1,
    )
    uploads, ok = rel.pick(3, 6), 0
    for i in range(uploads):
        data = os.urandom(20 * 1024 * 1024)  # three parts of 8 MiB
        flip = threading.Timer(0.2 + 0.2 * i, farm.proxy.set, args=("refuse",))
        back = threading.Timer(3.0, farm.proxy.set, args=("forward",))
        flip.start()
        back.start()
        stored = with_retries(
            lambda data=data, i=i: storage.put_bytes(
                f"acme/big/{i}.bin", data, "application/octet-stream"
            ),
            budget_s=60,
            what="a multipart upload",
        )
        back.join()
        ok += stored.size == len(data)
    row = rel.Row(
        "S3 outage during multipart uploads",
        uploads,
        succeeded=ok,
        seconds=time.monotonic() - started,
        notes=f"{len(farm.orphaned_uploads())} multipart uploads left open",
    )
    record_row(row)
    assert ok == uploads
    assert farm.orphaned_uploads() == []
