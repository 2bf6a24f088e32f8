"""The worker's side of storage: results under the contract's keys, uploaded with retries and
verified, and found again so that a redelivered job is not rendered twice."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from farm.storage import Storage, StorageUnavailable, StoredObject, job_object_key
from schemas.formats import EXTENSIONS

__all__ = [
    "find_result",
    "result_keys",
    "store_job_json",
    "store_result",
    "with_retries",
]

log = logging.getLogger(__name__)

FIRST_DELAY, MAX_DELAY = 0.5, 8.0
"""Seconds before the first retry of an upload, and the most between two retries."""

T = TypeVar("T")


def result_keys(storage: Storage, tenant: str, job_id: str, fmt: str) -> tuple[str, str]:
    """The keys of a job's image and of its ``job.json``."""
    image = job_object_key(storage.prefix, tenant, job_id, f"image.{EXTENSIONS[fmt]}")
    return image, job_object_key(storage.prefix, tenant, job_id, "job.json")


def with_retries(action: Callable[[], T], *, budget_s: float, what: str) -> T:
    """Run `action`, retrying transient storage failures with backoff for up to `budget_s`."""
    deadline = time.monotonic() + budget_s
    delay = FIRST_DELAY
    while True:
        try:
            return action()
        except StorageUnavailable as exc:
            if not exc.transient or time.monotonic() + delay > deadline:
                raise
            log.warning("storage unavailable while %s, retrying in %.1f s: %s", what, delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)


def find_result(storage: Storage, tenant: str, job_id: str, fmt: str) -> dict[str, Any] | None:
    """The stored final job of a job whose result is complete (its ``job.json`` is written
    last, after the image was verified), or None."""
    image_key, json_key = result_keys(storage, tenant, job_id, fmt)
    if storage.head(json_key) is None:
        return None
    job = json.loads(storage.get_bytes(json_key))
    image = storage.head(image_key)
    result = job.get("result") or {}
    if image is None or image.size != result.get("bytes"):
        return None  # a partial or foreign set: render again and overwrite it
    return job


def store_result(
    storage: Storage,
    tenant: str,
    job_id: str,
    *,
    image: bytes,
    fmt: str,
    content_type: str,
    job: Callable[[StoredObject], dict[str, Any]],
    budget_s: float,
) -> tuple[StoredObject, dict[str, Any]]:
    """Upload the image, verify it, then write ``job.json`` (built by `job` from the stored
    image); retried while storage is down, for up to `budget_s` seconds in all."""
    image_key, _ = result_keys(storage, tenant, job_id, fmt)
    deadline = time.monotonic() + budget_s
    stored = with_retries(
        lambda: storage.put_bytes(image_key, image, content_type),
        budget_s=budget_s,
        what=f"uploading {image_key}",
    )
    document = job(stored)
    left = max(0.0, deadline - time.monotonic())
    store_job_json(storage, tenant, job_id, fmt, document, budget_s=left)
    return stored, document


def store_job_json(
    storage: Storage,
    tenant: str,
    job_id: str,
    fmt: str,
    document: dict[str, Any],
    *,
    budget_s: float,
) -> None:
    """Write (or overwrite) the job's ``job.json``, retried while storage is down."""
    _, json_key = result_keys(storage, tenant, job_id, fmt)
    body = json.dumps(document, indent=2).encode()
    with_retries(
        lambda: storage.put_bytes(json_key, body, "application/json"),
        budget_s=budget_s,
        what=f"uploading {json_key}",
    )
