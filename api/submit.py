"""From a request body to queued jobs: read, validate, normalize, store, dispatch, or nothing."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import request
from pydantic import ValidationError

from api.errors import ApiError
from api.state import state
from farm.dispatch import send_job
from farm.ids import new_job_id
from farm.records import QuotaExceeded, new_record
from farm.redis_keys import asset_meta_key
from farm.storage import ObjectMissing, asset_key
from schemas import SpecError, ValidationContext, normalize_spec, parse_spec
from schemas.defaults import ASSET_TTL
from schemas.errors import Loc, details_from_validation_error
from schemas.identifiers import is_sha256
from schemas.job import BatchRequest

__all__ = ["Prepared", "asset_reader", "enqueue", "prepare_batch", "prepare_one", "read_json"]

log = logging.getLogger(__name__)

Prepared = tuple[dict[str, Any], list[str]]
"""A normalized spec (JSON-ready) and its warnings."""


def read_json() -> tuple[bytes, Any]:
    """The raw body and its JSON; 415 for another content type, 400 for malformed JSON."""
    if request.mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as application/json (got {request.mimetype or 'no content type'})",
        )
    body = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413 before it is read
    try:
        raw = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body's JSON is nested too deeply") from None
    except ValueError as exc:  # an integer of thousands of digits, for one
        raise ApiError(400, "invalid_json", f"the body is not usable JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(body):
        try:  # a lone UTF-16 surrogate (\ud800) parses, but no text can hold it
            json.dumps(raw, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400,
                "invalid_json",
                "the body holds a lone UTF-16 surrogate escape (\\ud800 to "
                "\\udfff without its pair): it is not text",
            ) from None
    return body, raw


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def asset_reader(tenant: str) -> Callable[[str], bytes]:
    """Reads a tenant's uploaded asset by id (its sha256); KeyError when unknown or expired."""
    st = state()

    def read(asset_id: str) -> bytes:
        meta_key = asset_meta_key(tenant, asset_id)
        meta = st.redis.hgetall(meta_key) if is_sha256(asset_id) else {}
        if not meta:
            raise KeyError(asset_id)
        st.redis.expire(meta_key, ASSET_TTL)  # a use keeps the asset another 24 hours
        key = asset_key(st.storage.prefix, tenant, asset_id, meta["ext"])
        try:
            return st.storage.get_bytes(key)
        except ObjectMissing:
            raise KeyError(asset_id) from None

    return read


def _context(tenant: str) -> ValidationContext:
    st = state()
    return ValidationContext.from_settings(st.settings, st.models, assets=asset_reader(tenant))


def _prefixed(exc: SpecError, loc: Loc) -> SpecError:
    return SpecError([{"loc": [*loc, *d["loc"]], "msg": d["msg"]} for d in exc.details])


def prepare_one(raw: Any, tenant: str, loc: Loc = ()) -> Prepared:
    """Validate and normalize one spec; SpecError paths are prefixed with `loc`."""
    ctx = _context(tenant)
    try:
        spec, warnings = normalize_spec(parse_spec(raw, ctx), ctx)
    except SpecError as exc:
        raise _prefixed(exc, loc) if loc else exc from None
    return spec.model_dump(mode="json"), warnings


def prepare_batch(raw: Any, tenant: str) -> list[Prepared]:
    """Every spec of a batch, all validated before any is queued; every problem reported."""
    if not isinstance(raw, Mapping):
        raise SpecError('the batch must be a JSON object: {"jobs": [...]} or {"job", "seeds"}')
    try:
        batch = BatchRequest.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(details_from_validation_error(exc, raw)) from None
    if (batch.jobs is None) == (batch.job is None):
        raise SpecError("send either jobs, or job with seeds", loc=["jobs"])
    if batch.job is not None and batch.seeds is None:
        raise SpecError("seeds are required with job", loc=["seeds"])
    if batch.jobs is not None and batch.seeds is not None:
        raise SpecError("seeds go with job, not with jobs", loc=["seeds"])
    specs: Sequence[tuple[Any, Loc]]
    if batch.jobs is not None:
        specs = [(spec, ["jobs", i]) for i, spec in enumerate(batch.jobs)]
    else:
        assert batch.job is not None and batch.seeds is not None
        specs = [({**batch.job, "seed": seed}, ["job"]) for seed in batch.seeds]
    prepared, problems = [], []
    for i, (spec, loc) in enumerate(specs):
        try:
            prepared.append(prepare_one(spec, tenant, loc))
        except SpecError as exc:
            details = exc.details
            if batch.seeds is not None:  # one spec, many seeds: a seed's own error names it
                details = [
                    {"loc": ["seeds", i], "msg": d["msg"]} if d["loc"] == ["job", "seed"] else d
                    for d in details
                ]
            problems.extend(d for d in details if d not in problems)
    if problems:
        raise SpecError(problems)
    return prepared


def enqueue(tenant: str, prepared: list[Prepared]) -> list[dict[str, str]]:
    """Store the jobs and send them to their queues: all of them, or none (503)."""
    st = state()
    records = [
        new_record(job_id=new_job_id(), tenant=tenant, spec=spec, warnings=warnings)
        for spec, warnings in prepared
    ]
    try:
        st.records.create(tenant, records, quota=st.settings.max_queued_jobs)
    except QuotaExceeded as exc:
        raise ApiError(429, "quota_exceeded", str(exc)) from None
    try:
        for record in records:
            send_job(st.celery, record["id"], record["model"], int(record["priority"]))
    except Exception as exc:  # noqa: BLE001 -- any failure to send must undo the records
        # Nothing half-queued: delete every record of this request. A message that did get
        # out finds no record and is dropped by the worker.
        log.error("dispatch failed, %d jobs discarded: %s", len(records), exc)
        st.records.discard(tenant, [r["id"] for r in records])
        raise ApiError(
            503,
            "broker_unavailable",
            "the queue does not answer: nothing was queued; retry later",
        ) from None
    return records
