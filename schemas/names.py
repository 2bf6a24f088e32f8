"""Task and queue names shared by the API (the sender) and the workers (the receivers)."""

from __future__ import annotations

__all__ = [
    "QUEUE_PREFIX",
    "TASKS",
    "TASK_RENDER",
    "TASK_WEBHOOK",
    "WEBHOOK_QUEUE",
    "queue_for_model",
]

TASK_RENDER = "regionfarm.render"
"""Celery task name of one render job; the API sends it by name, never by import."""

TASK_WEBHOOK = "regionfarm.webhook"
"""Celery task name of one webhook delivery (the final job object to the job's webhook URL)."""

WEBHOOK_QUEUE = "webhooks"
"""The light queue of webhook deliveries, served apart from renders so none waits on a GPU."""

TASKS = (TASK_RENDER, TASK_WEBHOOK)
"""Every task name; the workers must register each one (a test checks)."""

QUEUE_PREFIX = "render."
"""Queue names are this prefix plus a model name: one queue per model, so no worker swaps."""


def queue_for_model(name: str) -> str:
    """Return the queue that jobs for model `name` go to, e.g. ``render.sd15-lcm``."""
    return f"{QUEUE_PREFIX}{name}"
