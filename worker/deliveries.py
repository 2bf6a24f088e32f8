"""The webhook task's work: the final job object to the job's webhook URL, signed with the
tenant's secret, retried with backoff for up to 24 hours (delivery is at-least-once)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from farm.keys import KeyRing
from farm.records import JobRecords, to_public
from farm.storage import Storage
from schemas import Settings
from schemas.job import FINAL_STATUSES
from worker.webhooks import WebhookRefused, WebhookRetry, deliver, retry_delays

__all__ = ["WebhookSender"]

log = logging.getLogger(__name__)


@dataclass
class WebhookSender:
    settings: Settings
    records: JobRecords
    keys: KeyRing
    storage: Storage
    delays: list[float] = field(default_factory=retry_delays)

    def task(self, task: Any, job_id: str) -> None:
        """Deliver once; on a transient failure, schedule the task again after the next delay."""
        extra = {"job_id": job_id}
        record = self.records.get(job_id)
        if record is None or record["status"] not in FINAL_STATUSES:
            log.warning("no final job to send a webhook for", extra=extra)
            return
        url = (json.loads(record["spec"]).get("webhook") or {}).get("url")
        if not url:
            return
        tenant = self.keys.by_name(record["tenant"])
        try:
            status = deliver(url, self._job(record), secret=tenant.webhook_secret if tenant else None,
                             allowlist=self.settings.webhook_allowlist)  # fmt: skip
        except WebhookRefused as exc:
            log.warning("webhook refused, not retried: %s", exc, extra=extra)
            return
        except WebhookRetry as exc:
            attempt = task.request.retries
            if attempt >= len(self.delays):
                log.error("webhook given up after %d tries: %s", attempt + 1, exc, extra=extra)
                return
            delay = max(self.delays[attempt], exc.retry_after or 0)
            log.info("webhook failed (%s), retry in %.0f s", exc, delay, extra=extra)
            raise task.retry(countdown=delay, max_retries=len(self.delays)) from None
        log.info("webhook delivered: %s", status, extra=extra)

    def _job(self, record: dict[str, str]) -> dict[str, Any]:
        job = to_public(record)
        result = job.get("result")
        if result is not None:
            base = (self.settings.public_url or "").rstrip("/")
            if base:
                result["url"] = f"{base}/v1/jobs/{job['id']}/result"
            else:  # no public API address: a signed link straight to storage, if it has one
                result["url"] = self.storage.presigned_url(result["key"]) or ""
        return job
