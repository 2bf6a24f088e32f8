"""The jobs resource: submit, batch, get, list, cancel (and purge), result and events."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, request, send_file, url_for

from api import events, streams
from api.auth import tenant
from api.errors import ApiError
from api.idempotency import REPLAYED_HEADER, claim
from api.metrics import SUBMIT_SECONDS
from api.state import state
from api.submit import enqueue, prepare_batch, prepare_one, read_json
from api.urls import job_result_url
from farm import states
from farm.dispatch import send_webhook
from farm.ids import is_job_id
from farm.records import to_public, wants_webhook
from farm.storage import job_object_key
from schemas.formats import CONTENT_TYPES, EXTENSIONS
from schemas.job import STATUSES

__all__ = ["bp"]

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

MAX_PAGE = 100
DEFAULT_PAGE = 20
CANCEL_FLAG_SLACK = 600
"""Seconds the cancel flag outlives the job time limit (a worker reads it until it stops)."""


def _not_found(job_id: str) -> ApiError:
    return ApiError(
        404, "not_found", f"no job {job_id!r}", [{"loc": ["job_id"], "msg": "no such job"}]
    )


def _public(record: dict[str, str]) -> dict[str, Any]:
    return to_public(record, result_url=job_result_url(record["id"]))


def _record(job_id: str) -> dict[str, str]:
    record = state().records.get(job_id, tenant())
    if record is None:
        raise _not_found(job_id)
    return record


def _submit(route: str, build) -> Response:
    started = time.perf_counter()
    who = tenant()
    body, raw = read_json()
    key = request.headers.get("Idempotency-Key")
    held = claim(state().redis, who, route, key, body) if key is not None else None
    if held is not None and held.replay is not None:
        # The first answer as it was sent, not rebuilt from today's records: those may have
        # moved on, or been purged.
        if "body" in held.replay:
            return held.replayed()
        return _replay_legacy(held.replay["ids"], build)
    try:
        prepared = prepare_one(raw, who) if route == "job" else prepare_batch(raw, who)
        records = enqueue(who, prepared if isinstance(prepared, list) else [prepared])
        response = build(records)
    except BaseException:
        if held is not None:
            held.release()  # no answer to store: a retry with the key runs anew
        raise
    if held is not None:
        held.complete(response)
    SUBMIT_SECONDS.labels(route=route).observe(time.perf_counter() - started)
    return response


def _replay_legacy(job_ids: list[str], build) -> Response:
    """A key stored before first answers were kept (its job ids only): the answer is rebuilt
    from the records while they all exist; once one is purged there is nothing to rebuild."""
    records = state().records.get_many(job_ids)
    if any(r is None for r in records):
        raise ApiError(
            409,
            "idempotency_answer_gone",
            "the jobs this Idempotency-Key made were purged and its first answer was not kept: "
            "use a new key for a new request",
        )
    response = build(records)
    response.headers[REPLAYED_HEADER] = "true"
    return response


@bp.post("")
def submit() -> Response:
    def build(records: list[dict[str, str]]) -> Response:
        response = jsonify(_public(records[0]))
        response.status_code = 202
        response.headers["Location"] = url_for("jobs.get", job_id=records[0]["id"])
        return response

    return _submit("job", build)


@bp.post("/batch")
def batch() -> Response:
    def build(records: list[dict[str, str]]) -> Response:
        response = jsonify({"jobs": [_public(r) for r in records]})
        response.status_code = 202
        return response

    return _submit("batch", build)


@bp.get("/<job_id>")
def get(job_id: str) -> Response:
    return jsonify(_public(_record(job_id)))


@bp.get("")
def list_jobs() -> Response:
    args = request.args
    status = args.get("status") or None
    problems = []
    if status is not None and status not in STATUSES:
        problems.append(
            {"loc": ["query", "status"], "msg": f"must be one of {', '.join(STATUSES)}"}
        )
    limit = DEFAULT_PAGE
    if "limit" in args:
        try:
            limit = int(args["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            problems.append(
                {"loc": ["query", "limit"], "msg": f"must be an integer from 1 to {MAX_PAGE}"}
            )
    cursor = args.get("cursor") or None
    if cursor is not None and not is_job_id(cursor):
        problems.append({"loc": ["query", "cursor"], "msg": "not a cursor this API gave out"})
    if problems:
        raise ApiError(422, "invalid_query", problems[0]["msg"], problems)
    records, next_cursor = state().records.list(tenant(), status=status, limit=limit, cursor=cursor)
    return jsonify({"jobs": [_public(r) for r in records], "next_cursor": next_cursor})


@bp.delete("/<job_id>")
def cancel(job_id: str) -> Response:
    st = state()
    if request.args.get("purge", "").lower() in ("1", "true", "yes"):
        return _purge(job_id)
    flag_ttl = int(st.settings.job_time_limit) + CANCEL_FLAG_SLACK
    outcome = st.records.cancel(job_id, tenant(), flag_ttl=flag_ttl)
    if outcome == "missing":
        raise _not_found(job_id)
    if outcome.startswith("final:"):
        raise ApiError(
            409, "job_finished", f"job {job_id} already ended {outcome[6:]}: nothing to cancel"
        )
    record = _record(job_id)
    if outcome == "canceled" and wants_webhook(record):
        send_webhook(st.celery, job_id)  # it ended here: no worker will send it
    response = jsonify(_public(record))
    response.status_code = 202
    return response


def _purge(job_id: str) -> Response:
    st = state()
    who = tenant()
    record = _record(job_id)
    if not states.allows(states.PURGE, record["status"]):
        raise ApiError(
            409,
            "job_active",
            f"job {job_id} is {record['status']}: cancel it and purge it once it has ended",
        )
    # Objects first: a failure leaves the record, so the purge can be retried.
    st.storage.delete_prefix(f"{_job_prefix(who, job_id)}")
    outcome = st.records.purge(job_id, who)
    if outcome == "missing":
        raise _not_found(job_id)
    return Response(status=204)


def _job_prefix(who: str, job_id: str) -> str:
    return job_object_key(state().storage.prefix, who, job_id, "job.json").rsplit("/", 1)[0] + "/"


@bp.get("/<job_id>/result")
def result(job_id: str) -> Response:
    record = _record(job_id)
    if record["status"] != "succeeded":
        raise ApiError(
            409,
            "result_not_ready",
            f"job {job_id} is {record['status']}: a result exists only once it has succeeded",
        )
    job = to_public(record)
    info = job["result"] or {}
    key, fmt = info.get("key", ""), info.get("format", "png")
    storage = state().storage
    filename = f"{job_id}.{EXTENSIONS.get(fmt, fmt)}"
    url = storage.presigned_url(key, filename=filename) if key else None
    if url is not None:
        return redirect(url, code=302)
    path = storage.local_path(key) if key else None
    if path is None or not path.is_file():
        raise ApiError(
            404,
            "result_gone",
            f"the image of job {job_id} is no longer stored (results are kept for the "
            "retention period)",
        )
    return send_file(
        path, mimetype=CONTENT_TYPES.get(fmt, "application/octet-stream"), download_name=filename
    )


@bp.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    _record(job_id)  # 404 for an unknown or foreign job, before the stream starts
    return streams.hold(tenant(), events.stream(job_id, tenant()))  # 429 over the cap
