"""Worker faults: kill -9 mid-render at random points, SIGTERM mid-render (warm shutdown), poison
jobs, and a worker whose model fails to load. Every accepted job is counted at the end. The
workers are tests/harness/stand_in_worker.py's: its prompts make the poison jobs."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from farm import redis_keys
from tests.harness.stand_in_worker import CRASH, RAISE

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1200)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _rendering(farm, before_step: int = 5) -> list[tuple[int, str]]:
    """(pid, job id) of each live worker process that is rendering a job now (progress
    reported, before `before_step`, fewer than 2 attempts so far, so that a kill never makes it
    fail worker_lost)."""
    pids = {w["name"]: w["info"]["pid"] for w in farm.live() if _alive(w["info"]["pid"])}
    found = []
    for job_id in farm.r.smembers(redis_keys.active_key("running")):
        rec = farm.r.hmget(redis_keys.job_key(job_id), "worker", "attempts", "progress")
        worker, attempts, progress = rec
        step = json.loads(progress)["step"] if progress else None
        if worker in pids and int(attempts or 0) < 2 and step and step < before_step:
            found.append((pids[worker], job_id))
    return found


def test_kill_9_mid_render_at_random_points(make_farm, spec_factory, record_row, rel):
    kills_wanted = rel.pick(4, 20)
    jobs = rel.pick(24, 100)
    rng = random.Random(7)
    farm = make_farm(step_ms=rel.pick(150, 150))
    started = time.monotonic()
    farm.start_workers(2)
    ids = [farm.submit(spec_factory(seed=i)) for i in range(jobs)]
    assert all(ids), farm.counted.by_status
    kills, killed_jobs = 0, set()
    deadline = time.monotonic() + rel.pick(240, 900)
    while kills < kills_wanted and time.monotonic() < deadline:
        busy = [(pid, j) for pid, j in _rendering(farm) if j not in killed_jobs]
        if not busy:
            if all(s in rel.FINAL for s in farm.statuses(ids).values()):
                ids += [farm.submit(spec_factory(seed=len(ids) + k)) for k in range(10)]
            time.sleep(0.05)
            continue
        pid, job_id = rng.choice(busy)
        time.sleep(rng.uniform(0, 0.4))  # a random point of the render (5 steps of 150 ms)
        if not _alive(pid) or (pid, job_id) not in _rendering(farm, before_step=4):
            continue  # it ended meanwhile: pick again
        os.kill(pid, signal.SIGKILL)
        kills += 1
        killed_jobs.add(job_id)
        farm.wait_live(2, timeout=120)  # the supervisor starts a new process (with backoff)
    farm.wait_final(ids, timeout=rel.pick(240, 900))
    row = record_row(
        farm.tally(
            f"worker kill -9 mid-render x{kills}",
            ids,
            started=started,
            notes=f"{kills} kill -9 events over 2 workers",
        )
    )
    attempts = [farm.job(j)[1]["attempts"] for j in killed_jobs]
    assert kills == kills_wanted, f"only {kills} kills in the time allowed"
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert row.succeeded == len(ids), row
    assert all(a >= 2 for a in attempts), attempts  # each killed job ran again


def test_sigterm_mid_render_lets_the_job_finish(make_farm, spec_factory, record_row, rel):
    farm = make_farm(step_ms=400)
    started = time.monotonic()
    farm.start_workers(1)
    supervisor = farm.worker_procs[0]
    ids = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(4, 10))]
    deadline = time.monotonic() + 60
    while not farm.r.hget(redis_keys.job_key(ids[0]), "progress"):
        assert time.monotonic() < deadline, farm.log_tail()
        time.sleep(0.05)
    os.kill(supervisor.pid, signal.SIGTERM)  # a deployment's stop: Celery's warm shutdown
    supervisor.wait(60)
    first = farm.job(ids[0])[1]
    assert first["status"] == "succeeded" and first["attempts"] == 1, first
    rest = farm.statuses(ids[1:])
    assert all(s == "queued" for s in rest.values()), rest  # the others wait for a worker
    farm.start_workers(1)
    farm.wait_final(ids, timeout=120)
    row = record_row(farm.tally("worker SIGTERM mid-render (warm shutdown)", ids, started=started))
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert row.succeeded == len(ids), row
    assert all(farm.job(j)[1]["attempts"] == 1 for j in ids)


def test_poison_jobs_fail_with_their_code_and_the_rest_succeed(
    make_farm, spec_factory, record_row, rel
):
    farm = make_farm(step_ms=50)
    started = time.monotonic()
    # Queued before any worker runs, so the tampered record is what a worker finds.
    crash = [
        farm.submit(spec_factory(seed=900 + i, background={"prompt": CRASH}))
        for i in range(rel.pick(1, 2))
    ]
    raising = [farm.submit(spec_factory(seed=910, background={"prompt": RAISE}))]
    tampered = [farm.submit(spec_factory(seed=920))]
    spec = json.loads(farm.r.hget(redis_keys.job_key(tampered[0]), "spec"))
    spec["width"] = 1_000_000  # a record changed behind the API's back
    farm.r.hset(redis_keys.job_key(tampered[0]), "spec", json.dumps(spec))
    good = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(10, 30))]
    ids = crash + raising + tampered + good
    farm.start_workers(2)
    farm.wait_final(ids, timeout=rel.pick(240, 400))
    row = record_row(
        farm.tally("poison jobs (crash, raise, tampered record)", ids, started=started)
    )
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert row.succeeded == len(good), row
    assert row.failed == {"worker_lost": len(crash), "internal": 1, "invalid_spec": 1}, row
    for job_id in crash:
        assert farm.job(job_id)[1]["attempts"] == 3
    error = farm.job(raising[0])[1]["error"]
    assert "Traceback" not in error["message"] and raising[0] in error["message"]


def test_worker_whose_model_fails_to_load_takes_no_jobs(
    make_farm, spec_factory, record_row, rel, tmp_path: Path
):
    from schemas import load_models

    farm = make_farm(step_ms=50)
    started = time.monotonic()
    good = load_models()[rel.MODEL].model_dump(mode="json", exclude_none=True)
    good.pop("name", None)
    broken = tmp_path / "broken-models.toml"
    entry = {**good, "source": str(tmp_path / "no-such-model")}
    broken.write_text(
        f"[models.{rel.MODEL}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    )
    farm.start_workers(1, env={"REGIONFARM_MODELS_FILE": str(broken)}, wait=False)
    ids = [farm.submit(spec_factory(seed=i)) for i in range(rel.pick(6, 20))]
    code = farm.worker_procs[0].wait(120)  # the supervisor retires it and gives up
    assert code == 1, farm.log_tail()
    assert "unavailable" in (farm.logs / "worker0.log").read_text()
    assert farm.live() == []
    assert all(s == "queued" for s in farm.statuses(ids).values())  # waiting, not failed
    farm.start_workers(1)  # a worker that has the model serves them
    farm.wait_final(ids, timeout=120)
    row = record_row(farm.tally("worker whose model fails to load", ids, started=started))
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
    assert row.succeeded == len(ids), row
