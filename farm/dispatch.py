"""Sending tasks by name: jobs to their model's queue, webhooks to the light queue. The sender
never imports the code that runs them (the API has no torch)."""

from __future__ import annotations

from celery import Celery

from farm.broker import celery_priority
from schemas.names import TASK_RENDER, TASK_WEBHOOK, WEBHOOK_QUEUE, queue_for_model

__all__ = ["send_job", "send_webhook"]


def send_job(celery: Celery, job_id: str, model: str, priority: int) -> None:
    """Queue one job for its model's workers; only the id travels (the record has the spec)."""
    celery.send_task(
        TASK_RENDER,
        args=[job_id],
        queue=queue_for_model(model),
        routing_key=queue_for_model(model),
        priority=celery_priority(priority),
    )


def send_webhook(celery: Celery, job_id: str) -> None:
    """Queue the delivery of a finished job's webhook (the task reads the final record)."""
    celery.send_task(TASK_WEBHOOK, args=[job_id], queue=WEBHOOK_QUEUE, routing_key=WEBHOOK_QUEUE)
