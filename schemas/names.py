"""Task and queue names shared by the API (the sender) and the workers (the receivers)."""

from __future__ import annotations

__all__ = ["QUEUE_PREFIX", "TASK_RENDER", "queue_for_model"]

TASK_RENDER = "regionfarm.render"
"""Celery task name of one render job; the API sends it by name, never by import."""

QUEUE_PREFIX = "render."
"""Queue names are this prefix plus a model name: one queue per model, so no worker swaps."""


def queue_for_model(name: str) -> str:
    """Return the queue that jobs for model `name` go to, e.g. ``render.sd15-lcm``."""
    return f"{QUEUE_PREFIX}{name}"
