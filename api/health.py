"""Liveness and readiness: ``/healthz`` (the process is up), ``/readyz`` (broker, storage and,
when auth is on, the API keys file)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from api.state import state
from farm.redis_conn import redis_errors
from farm.storage import StorageError

__all__ = ["bp"]

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok", "checks": {}})


@bp.get("/readyz")
def readyz() -> Response:
    st = state()
    checks: dict[str, str] = {}
    try:
        st.redis.ping()
        checks["broker"] = "ok"
    except redis_errors as exc:
        checks["broker"] = f"down: {exc}"
    try:
        st.storage.check()
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = f"down: {exc}"
    labels = {"broker": "broker down", "storage": "storage down"}
    degraded = False
    if st.keys.configured:
        problem = st.keys.problem
        checks["keys"] = "ok"
        if problem is not None:
            # Only the kind of problem: the full message (in the log) can name tenants.
            if st.keys.loaded:
                # Still serving with the last good keys: ready, but say so. Every replica reads
                # the same file, so a 503 here would take them all out of service at once.
                checks["keys"] = (
                    f"{problem.reason}: the API keys file cannot be used, so the keys loaded "
                    "before stay in use; the API log says what is wrong"
                )
                degraded = True
            else:
                checks["keys"] = (
                    f"{problem.reason}: the API keys file cannot be used and this process has "
                    "no keys loaded before, so it admits nobody; the API log says what is wrong"
                )
                labels["keys"] = f"API keys file {problem.reason}"
    down = sorted(name for name, value in checks.items() if value != "ok" and name in labels)
    if not down:
        return jsonify({"status": "degraded" if degraded else "ok", "checks": checks})
    if set(down) - {"keys"}:  # the key ring logs its own problem, once
        log.warning("not ready: %s", checks)
    details = [{"loc": [name], "msg": checks[name]} for name in down]
    message = " and ".join(labels[name] for name in down)
    body = {
        "error": {"code": "not_ready", "message": message, "details": details},
        "status": "unavailable",
        "checks": checks,
    }
    response = jsonify(body)
    response.status_code = 503
    return response
