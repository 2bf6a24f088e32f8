"""What one API process holds: its settings and its connections, built once by create_app."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from farm.keys import KeyRing
from farm.records import JobRecords
from farm.storage import Storage
from schemas import ModelEntry, Settings

__all__ = ["AppState", "state"]


@dataclass
class AppState:
    settings: Settings
    redis: redis.Redis
    records: JobRecords
    storage: Storage
    celery: Celery
    keys: KeyRing
    models: dict[str, ModelEntry]

    def close(self) -> None:
        """Close the broker and Redis connections (a process that builds many apps, a test)."""
        self.celery.close()
        self.redis.close()


def state() -> AppState:
    """The current app's state (inside a request or an app context)."""
    return current_app.extensions["regionfarm"]
