"""The Celery side shared by sender (API) and receivers (workers): broker options, priorities
and queue depth. Both ends must agree on these, or priorities and queues silently diverge."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery

from schemas import Settings
from schemas.defaults import MAX_PRIORITY
from schemas.names import queue_for_model

__all__ = [
    "PRIORITY_STEPS",
    "QUEUE_SEP",
    "broker_url",
    "celery_priority",
    "celery_settings",
    "make_celery",
    "queue_depth",
    "queue_lists",
]

PRIORITY_STEPS = list(range(MAX_PRIORITY + 1))
"""kombu's Redis transport keeps one list per step; all ten levels get their own list."""
QUEUE_SEP = ":"
"""Separator of a queue's priority lists (``render.m``, ``render.m:1`` .. ``render.m:9``)."""
VISIBILITY_MARGIN = 600.0
"""Seconds added to the job time limit for the broker's visibility timeout, so that a long
render that is still running is never handed to a second worker."""


def broker_url(redis_url: str) -> str:
    """kombu's spelling of a redis-py URL (unix sockets are ``redis+socket://`` there)."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def celery_priority(priority: int) -> int:
    """The contract's priority (9 first) as kombu's Redis priority (0 first)."""
    return MAX_PRIORITY - priority


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery configuration common to the API and the workers."""
    if not settings.redis_url:
        raise ValueError("redis_url is not set: start the embedded Redis first")
    transport = {
        "priority_steps": PRIORITY_STEPS,
        "sep": QUEUE_SEP,
        "visibility_timeout": int(settings.job_time_limit + VISIBILITY_MARGIN),
        # Fail fast: the API answers 503 rather than hang when the broker is down.
        "socket_connect_timeout": 3,
        "socket_timeout": 10,
    }
    return {
        "broker_url": broker_url(settings.redis_url),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "task_default_priority": celery_priority(5),
        # Job state lives in our records (farm.records); Celery keeps none.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "enable_utc": True,
    }


def make_celery(settings: Settings, name: str = "regionfarm") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_settings(settings))
    return app


def queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, highest contract priority first."""
    return [queue if step == 0 else f"{queue}{QUEUE_SEP}{step}" for step in PRIORITY_STEPS]


def queue_depth(client: redis.Redis, model: str) -> int:
    """Messages waiting in a model's queue (all priorities)."""
    pipe = client.pipeline(transaction=False)
    for name in queue_lists(queue_for_model(model)):
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())
