"""The OpenAPI 3.1 document, generated from the pydantic models in `schemas/` and one table of
operations; a test holds the table to Flask's URL map, so no route goes undocumented."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import openapi_examples as ex
from schemas import JobSpec
from schemas.formats import CONTENT_TYPES
from schemas.identifiers import IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY_CHARS, field_pattern
from schemas.job import (
    AssetInfo,
    BatchAnswer,
    BatchRequest,
    ErrorBody,
    FarmStatus,
    Job,
    JobList,
    ModelList,
    Status,
)

__all__ = ["OPERATIONS", "Op", "Resp", "bp", "document"]

bp = Blueprint("openapi", __name__)


@dataclass(frozen=True)
class Resp:
    description: str
    model: type[BaseModel] | None = None
    example: Any = None
    media: str = "application/json"
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, Resp]
    request: type[BaseModel] | None = None
    request_example: Any = None
    request_media: tuple[str, ...] = ("application/json",)
    params: tuple[tuple[str, str, str, dict[str, Any]], ...] = ()
    """(name, in, description, JSON schema) of each parameter."""
    public: bool = False
    idempotent_key: bool = False
    errors: tuple[int, ...] = field(default=())


def _err(code: str, message: str, details: list | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or []}}


_ERRORS = {
    400: Resp("Malformed JSON.", ErrorBody, _err("invalid_json", "the body is not valid JSON")),
    401: Resp("Missing or wrong API key.", ErrorBody, _err("unauthorized", "missing API key")),
    404: Resp("Unknown id, or another tenant's.", ErrorBody, _err("not_found", "no such job")),
    409: Resp("Conflict with the job's state.", ErrorBody, _err("job_finished", "job ended")),
    413: Resp("Body over max_request_bytes.", ErrorBody, _err("request_too_large", "too big")),
    415: Resp("Wrong content type.", ErrorBody, _err("unsupported_media_type", "send JSON")),
    422: Resp(
        "Invalid input; details name every bad field by its path.",
        ErrorBody,
        _err("invalid_spec", "2 problems in the request", ex.SPEC_PROBLEMS),
    ),
    429: Resp(
        "Over the tenant's queued-jobs quota.",
        ErrorBody,
        _err("quota_exceeded", "1000 jobs are already queued"),
    ),
    503: Resp(
        "Broker or storage down; nothing was queued.",
        ErrorBody,
        _err("broker_unavailable", "the queue does not answer"),
    ),
}

_JOB_ID = ("job_id", "path", "A job id (job_...).", {"type": "string"})
_IDEM = (
    "Idempotency-Key",
    "header",
    (
        "Same key and body within 24 hours: the first answer (its status and body, as sent) "
        "is replayed with `Idempotent-Replayed: true`, also after its jobs were purged; nothing "
        "is queued again. The same key with another body is a 422 `idempotency_key_reused`."
    ),
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
        "pattern": field_pattern(IDEMPOTENCY_KEY_PATTERN),
    },
)

_LAST_EVENT_ID = (
    "Last-Event-ID",
    "header",
    "The `id:` of the last event the client got: the stream goes on after it.",
    {"type": "string"},
)

OPERATIONS: tuple[Op, ...] = (
    Op(
        "post",
        "/v1/jobs",
        "Validate and enqueue one job",
        "jobs",
        {202: Resp("Queued.", Job, ex.JOB_QUEUED, headers=("Location", "Idempotent-Replayed"))},
        request=JobSpec,
        request_example=ex.SPEC,
        params=(_IDEM,),
        errors=(400, 413, 415, 422, 429, 503),
    ),
    Op(
        "post",
        "/v1/jobs/batch",
        "Validate several jobs, then enqueue them all",
        "jobs",
        {
            202: Resp(
                "Queued, in the given order.",
                BatchAnswer,
                {"jobs": [ex.JOB_QUEUED]},
                headers=("Idempotent-Replayed",),
            )
        },
        request=BatchRequest,
        request_example={"job": ex.SPEC, "seeds": [1, 2, 3]},
        params=(_IDEM,),
        errors=(400, 413, 415, 422, 429, 503),
    ),
    Op(
        "get",
        "/v1/jobs",
        "The tenant's jobs, newest first",
        "jobs",
        {200: Resp("One page.", JobList, {"jobs": [ex.JOB_SUCCEEDED], "next_cursor": None})},
        params=(
            (
                "status",
                "query",
                "Only jobs in this status.",
                {
                    "type": "string",
                    "enum": ["queued", "running", "canceling", "succeeded", "failed", "canceled"],
                },
            ),
            (
                "limit",
                "query",
                "Page size.",
                {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            ),
            ("cursor", "query", "next_cursor of the previous page.", {"type": "string"}),
        ),
        errors=(422,),
    ),
    Op(
        "get",
        "/v1/jobs/{job_id}",
        "One job",
        "jobs",
        {200: Resp("The job.", Job, ex.JOB_SUCCEEDED)},
        params=(_JOB_ID,),
        errors=(404,),
    ),
    Op(
        "delete",
        "/v1/jobs/{job_id}",
        "Cancel a job (or purge a finished one)",
        "jobs",
        {
            202: Resp("Canceled, or canceling until its worker stops.", Job, ex.JOB_CANCELED),
            204: Resp("Purged (purge=true): the record and its objects are deleted.", media=""),
        },
        params=(
            _JOB_ID,
            (
                "purge",
                "query",
                "Delete a finished job's record and objects now.",
                {"type": "boolean", "default": False},
            ),
        ),
        errors=(404, 409),
    ),
    Op(
        "get",
        "/v1/jobs/{job_id}/result",
        "The image of a succeeded job",
        "jobs",
        {
            200: Resp("The image bytes (local storage).", media="image/*"),
            302: Resp(
                "Redirect to a freshly signed URL (S3 storage).", media="", headers=("Location",)
            ),
        },
        params=(_JOB_ID,),
        errors=(404, 409),
    ),
    Op(
        "get",
        "/v1/jobs/{job_id}/events",
        "Server-Sent Events of one job",
        "jobs",
        {
            200: Resp(
                "`progress` and `status` events, then `job` with the final job object; a job "
                "that already ended gives `job` at once. Every event has an `id:` and the "
                "stream starts with `retry:` (ms); a client reconnecting with `Last-Event-ID` "
                "first gets every event after that id, in order, then the live ones. Idle "
                "streams get a `: keep-alive` comment.",
                media="text/event-stream",
                example=ex.EVENTS,
            ),
            429: Resp(
                "The tenant already holds REGIONFARM_MAX_STREAMS_PER_TENANT open streams; "
                "retry after one ends.",
                ErrorBody,
                _err("too_many_streams", "100 event streams are already open"),
                headers=("Retry-After",),
            ),
        },
        params=(_JOB_ID, _LAST_EVENT_ID),
        errors=(404,),
    ),
    Op(
        "post",
        "/v1/assets",
        "Upload an image for use as asset:<id>",
        "assets",
        {201: Resp("Stored.", AssetInfo, ex.ASSET)},
        request_media=(*CONTENT_TYPES.values(), "multipart/form-data"),
        errors=(413, 415, 422, 503),
    ),
    Op(
        "get",
        "/v1/models",
        "The farm's models, with live worker counts",
        "models",
        {200: Resp("Models.", ModelList, ex.MODELS)},
    ),
    Op(
        "get",
        "/v1/status",
        "Queue depth per model, live workers, recent failures",
        "models",
        {200: Resp("The farm now.", FarmStatus, ex.STATUS)},
    ),
    Op(
        "get",
        "/healthz",
        "The process is up",
        "health",
        {200: Resp("Up.", Status, {"status": "ok", "checks": {}})},
        public=True,
    ),
    Op(
        "get",
        "/readyz",
        "Broker, storage and (with auth) the API keys file",
        "health",
        {
            200: Resp(
                "Ready.",
                Status,
                {"status": "ok", "checks": {"broker": "ok", "storage": "ok", "keys": "ok"}},
            ),
            503: Resp("Not ready: names what is down.", None, ex.NOT_READY),
        },
        public=True,
    ),
    Op(
        "get",
        "/metrics",
        "Prometheus metrics",
        "health",
        {200: Resp("Text exposition format.", media="text/plain")},
        public=True,
    ),
    Op(
        "get",
        "/v1/openapi.json",
        "This document",
        "health",
        {200: Resp("OpenAPI 3.1.")},
        public=True,
    ),
)

_MODELS: tuple[type[BaseModel], ...] = (
    Job,
    JobList,
    BatchAnswer,
    AssetInfo,
    ModelList,
    FarmStatus,
    Status,
    ErrorBody,
)


def _content(resp: Resp, refs: dict[str, Any]) -> dict[str, Any] | None:
    if not resp.media:
        return None
    body: dict[str, Any] = {}
    if resp.model is not None:
        body["schema"] = refs[resp.model.__name__]
    elif resp.media == "application/json":
        body["schema"] = {"type": "object"}
    else:
        body["schema"] = {"type": "string", "format": "binary"}
    if resp.example is not None:
        body["example"] = resp.example
    return {resp.media: body}


@cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document (built once per process)."""
    pairs = [(m, "serialization") for m in _MODELS] + [
        (JobSpec, "validation"),
        (BatchRequest, "validation"),
    ]
    keys, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    refs = {model.__name__: keys[(model, mode)] for model, mode in pairs}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        all_responses = dict(op.responses)
        for status in (*op.errors, *(() if op.public else (401,))):
            all_responses.setdefault(status, _ERRORS[status])
        for status, resp in sorted(all_responses.items()):
            item: dict[str, Any] = {"description": resp.description}
            content = _content(resp, refs)
            if content is not None:
                item["content"] = content
            if resp.headers:
                item["headers"] = {h: {"schema": {"type": "string"}} for h in resp.headers}
            responses[str(status)] = item
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.method + "_" + re.sub(r"[^a-z0-9]+", "_", op.path).strip("_"),
            "tags": [op.tag],
            "responses": responses,
        }
        if op.public:
            operation["security"] = []
        if op.params:
            operation["parameters"] = [
                {"name": n, "in": where, "description": d, "schema": s, "required": where == "path"}
                for n, where, d, s in op.params
            ]
        if op.request is not None or op.request_media != ("application/json",):
            content = {}
            for media in op.request_media:
                if op.request is not None and media == "application/json":
                    entry: dict[str, Any] = {"schema": refs[op.request.__name__]}
                    if op.request_example is not None:
                        entry["example"] = op.request_example
                elif media == "multipart/form-data":
                    entry = {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    }
                else:
                    entry = {"schema": {"type": "string", "format": "binary"}}
                content[media] = entry
            operation["requestBody"] = {"required": True, "content": content}
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "regionfarm",
            "version": "1",
            "description": "Region-based, multi-prompt diffusion as a queued render farm. "
            "Every non-2xx answer has the body of ErrorBody.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@bp.get("/v1/openapi.json")
def openapi_json() -> Response:
    return jsonify(document())
