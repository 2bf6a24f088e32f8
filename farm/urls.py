"""URLs the farm hands out: a job's result on the API's public address."""

from __future__ import annotations

__all__ = ["result_path", "result_url"]


def result_path(job_id: str) -> str:
    """The API route of a job's image, ``/v1/jobs/<id>/result``."""
    return f"/v1/jobs/{job_id}/result"


def result_url(public_url: str | None, job_id: str) -> str:
    """The job's result route on the API's public address (absolute), or "" when the farm has
    none (REGIONFARM_PUBLIC_URL unset; `regionfarm up` sets it from its bind address)."""
    base = (public_url or "").rstrip("/")
    return f"{base}{result_path(job_id)}" if base else ""
