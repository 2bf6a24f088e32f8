"""The API's one error shape, ``{"error": {"code", "message", "details"}}``, for every non-2xx."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from farm.redis_conn import redis_errors
from farm.storage import StorageUnavailable
from schemas import SpecError

__all__ = ["ApiError", "error_response", "register_error_handlers"]

log = logging.getLogger(__name__)

# Werkzeug's HTTP errors, by status, as the contract's stable codes and plain messages.
_HTTP_CODES = {
    400: ("bad_request", "the request is malformed"),
    401: ("unauthorized", "missing or wrong API key"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "this method is not allowed on this path"),
    413: ("request_too_large", "the request body is over the farm's max_request_bytes"),
    415: ("unsupported_media_type", "wrong content type"),
}


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere in a request and rendered by one handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Iterable[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = [{"loc": list(d["loc"]), "msg": d["msg"]} for d in details]
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    details: Iterable[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code, "message": message, "details": list(details)}}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(SpecError)
    def _spec_error(exc: SpecError) -> Response:
        count = len(exc.details)
        message = exc.details[0]["msg"] if count == 1 else f"{count} problems in the request"
        return error_response(422, exc.code, message, exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", exc.description or exc.name))
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is over the farm's limit of {limit} bytes"
        return error_response(status, code, message)

    def _broker_down(exc: Exception) -> Response:
        log.error("broker unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(
            503,
            "broker_unavailable",
            "the job store (Redis) does not answer: nothing was changed; retry later",
        )

    for error_class in redis_errors:
        app.register_error_handler(error_class, _broker_down)

    @app.errorhandler(StorageUnavailable)
    def _storage_down(exc: StorageUnavailable) -> Response:
        log.error("storage unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(
            503,
            "storage_unavailable",
            "storage does not answer: nothing was changed; retry later",
        )

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        # The traceback goes to the log, never to the client.
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it was logged")
