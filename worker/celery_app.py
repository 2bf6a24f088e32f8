"""The workers' Celery app: the shared broker options plus what long GPU tasks need."""

from __future__ import annotations

from celery import Celery

from farm.broker import make_celery
from schemas import Settings

__all__ = ["make_worker_app"]


def make_worker_app(settings: Settings) -> Celery:
    """Late acks (a job is acknowledged only when it ended), one job at a time, no prefetch
    beyond it (so priorities hold among queued jobs), and a visibility timeout above the
    longest render (farm.broker) so a running job is never handed to a second worker."""
    app = make_celery(settings, "regionfarm-worker")
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
    )
    return app
