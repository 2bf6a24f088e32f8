"""The webhook task's work: the final job object to the job's webhook URL, signed with the
tenant's secret, retried with backoff for up to 24 hours (delivery is at-least-once)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from farm.keys import KeyRing
from farm.local_tenant import LOCAL_TENANT, WebhookSecretError, ensure_webhook_secret
from farm.records import JobRecords, to_public
from farm.storage import Storage
from farm.urls import result_url
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
        try:
            secret = self.secret(record["tenant"])
        except WebhookSecretError as exc:
            log.error("webhook not sent: %s", exc, extra=extra)
            return
        if not secret:
            log.error(
                "webhook not sent: tenant %r has no webhook secret (it is not in the keys "
                "file); every delivery is signed, so add the tenant with `regionfarm keys add`",
                record["tenant"],
                extra=extra,
            )
            return
        try:
            job = self._job(record)
            status = deliver(url, job, secret=secret, allowlist=self.settings.webhook_allowlist)
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

    def secret(self, tenant: str) -> str | None:
        """The tenant's webhook secret: from the keys file on a farm with keys; on a farm with
        auth off (its one tenant is `local`), the one in the data dir (made there if the farm
        has none yet: `regionfarm keys webhook-secret` shows it)."""
        if self.keys.configured:
            found = self.keys.by_name(tenant)
            return found.webhook_secret if found is not None else None
        if tenant == LOCAL_TENANT:
            return ensure_webhook_secret(self.settings.data_dir)[0]
        return None

    def _job(self, record: dict[str, str]) -> dict[str, Any]:
        """The final job object, its result's `url` absolute: the API's result URL on the
        farm's public address (REGIONFARM_PUBLIC_URL; `regionfarm up` sets it), else the one
        the worker stored, else a presigned storage URL (S3 only)."""
        job = to_public(record)
        result = job.get("result")
        if result is not None:
            url = result_url(self.settings.public_url, job["id"]) or result.get("url")
            result["url"] = url or self.storage.presigned_url(result["key"]) or ""
            if not result["url"]:
                log.warning(
                    "webhook carries no result URL: set REGIONFARM_PUBLIC_URL to the API's "
                    "address as receivers reach it",
                    extra={"job_id": job["id"]},
                )
        return job
