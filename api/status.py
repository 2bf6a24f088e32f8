"""The farm's status at a glance: queue depth per model, live workers, recent failures."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from api.auth import tenant
from api.state import state
from farm.broker import queue_depth
from farm.records import to_public
from farm.workers import live_workers

__all__ = ["RECENT_FAILURES", "bp"]

bp = Blueprint("status", __name__, url_prefix="/v1/status")

RECENT_FAILURES = 10
"""Failed jobs of the tenant shown, newest first."""


@bp.get("")
def farm_status() -> Response:
    st = state()
    now = time.time()
    workers = live_workers(st.redis)
    queues = [
        {
            "model": name,
            "queued": queue_depth(st.redis, name),
            "workers": sum(1 for w in workers if w["model"] == name),
        }
        for name in st.models
    ]
    failed, _ = st.records.list(tenant(), status="failed", limit=RECENT_FAILURES, cursor=None)
    return jsonify(
        {
            "queues": queues,
            "workers": [
                {
                    "name": w["name"],
                    "model": w["model"],
                    "device": w["info"].get("device"),
                    "seen_seconds_ago": round(max(0.0, now - w["seen"]), 1),
                }
                for w in workers
            ],
            "recent_failures": [
                {"id": job["id"], "finished_at": job["finished_at"], "error": job["error"]}
                for job in (to_public(r) for r in failed)
            ],
        }
    )
