"""The result URL that answers carry: the farm's public address when it has one, else the
address this request came to."""

from __future__ import annotations

from flask import url_for

from api.state import state
from farm.urls import result_url

__all__ = ["job_result_url"]


def job_result_url(job_id: str) -> str:
    """Absolute; equal to the one in webhooks and ``job.json`` when REGIONFARM_PUBLIC_URL is set
    (a farm behind a proxy), else built from this request's host."""
    return result_url(state().settings.public_url, job_id) or url_for(
        "jobs.result", job_id=job_id, _external=True
    )
