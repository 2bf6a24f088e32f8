"""Sending jobs to the workers by task name: the API never imports the worker's code."""

from __future__ import annotations

from celery import Celery

from farm.broker import celery_priority
from schemas.names import TASK_RENDER, queue_for_model

__all__ = ["send_job"]


def send_job(celery: Celery, job_id: str, model: str, priority: int) -> None:
    """Queue one job for its model's workers; only the id travels (the record has the spec)."""
    celery.send_task(
        TASK_RENDER,
        args=[job_id],
        queue=queue_for_model(model),
        routing_key=queue_for_model(model),
        priority=celery_priority(priority),
        task_id=job_id,
    )
