"""The Celery tasks, thin like web views: each hands its job id to the code that does the work."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from schemas.names import TASK_RENDER, TASK_WEBHOOK

__all__ = ["register_tasks"]

log = logging.getLogger(__name__)


def register_tasks(
    app: Celery,
    *,
    render: Callable[[str], str] | None,
    webhook: Callable[[object, str], None] | None,
) -> None:
    """Register every task name of `schemas.names.TASKS` on `app`. A process that does not
    serve one (a webhook worker renders nothing) registers it to refuse it loudly."""

    @app.task(name=TASK_RENDER, bind=True, ignore_result=True)
    def render_task(self, job_id: str) -> str:
        if render is None:
            raise RuntimeError("this worker does not render; check its queues")
        return render(job_id)

    @app.task(name=TASK_WEBHOOK, bind=True, ignore_result=True)
    def webhook_task(self, job_id: str) -> None:
        if webhook is None:
            raise RuntimeError("this worker does not deliver webhooks; check its queues")
        webhook(self, job_id)
