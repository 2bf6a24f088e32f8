"""Liveness and readiness: ``/healthz`` (the process is up), ``/readyz`` (broker and storage)."""

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
    down = sorted(name for name, value in checks.items() if value != "ok")
    if not down:
        return jsonify({"status": "ok", "checks": checks})
    log.warning("not ready: %s", checks)
    details = [{"loc": [name], "msg": checks[name]} for name in down]
    body = {"error": {"code": "not_ready", "message": f"{' and '.join(down)} down",
                      "details": details}, "status": "unavailable", "checks": checks}  # fmt: skip
    response = jsonify(body)
    response.status_code = 503
    return response
