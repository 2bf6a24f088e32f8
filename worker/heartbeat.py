"""A worker's background thread: heartbeats (so the API lists its model as live), renewal of
the running job's lease, and the reconciler that re-queues jobs whose worker died."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery

from farm import states
from farm.dispatch import send_job, send_webhook
from farm.records import JobRecords, wants_webhook
from farm.redis_keys import RECONCILE_LOCK
from farm.workers import HEARTBEAT_TTL, beat, forget

__all__ = ["RECONCILE_LOCK", "Heartbeat", "reconcile"]

log = logging.getLogger(__name__)


def reconcile(
    records: JobRecords,
    celery: Celery,
    *,
    max_attempts: int,
    holder_alive: Callable[[str], bool],
) -> dict[str, int]:
    """Re-queue every running job whose lease has run out (or whose holder on this host is
    gone), end canceling ones, fail those out of attempts. Answers counts by outcome."""
    outcomes: dict[str, int] = {}
    for status in states.sources(states.REQUEUE):
        for job_id in records.active_ids(status):
            holder = records.lease_holder(job_id)
            if holder and holder_alive(holder):
                continue
            outcome = records.requeue(job_id, max_attempts=max_attempts, take_over=holder or "")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            record = records.get(job_id)
            if outcome == "requeued" and record is not None:
                log.warning("re-queued a job whose worker is gone", extra={"job_id": job_id})
                send_job(celery, job_id, record["model"], int(record["priority"]))
            elif outcome in ("failed", "canceled") and record and wants_webhook(record):
                send_webhook(celery, job_id)
    return outcomes


class Heartbeat(threading.Thread):
    """Beats every third of the heartbeat's life; renews the lease and reconciles each beat."""

    def __init__(
        self,
        *,
        records: JobRecords,
        name: str,
        model: str,
        info: dict[str, Any],
        renew: Callable[[], None],
        reconcile_pass: Callable[[], Any],
        interval: float,
    ) -> None:
        super().__init__(name="regionfarm-heartbeat", daemon=True)
        self.records, self.worker_name, self.model, self.info = records, name, model, info
        self.renew, self.reconcile_pass, self.interval = renew, reconcile_pass, interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                beat(
                    self.records.redis,
                    self.worker_name,
                    self.model,
                    self.info,
                    ttl=max(HEARTBEAT_TTL, int(self.interval * 3)),
                )
                self.renew()
                if self.records.redis.set(
                    RECONCILE_LOCK, self.worker_name, nx=True, px=int(self.interval * 1000)
                ):
                    self.reconcile_pass()
            except Exception:
                log.exception("heartbeat failed; retrying")
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        try:
            forget(self.records.redis, self.worker_name)
        except Exception as exc:  # noqa: BLE001 -- best effort at shutdown
            log.warning("could not take the heartbeat off: %s", exc)
