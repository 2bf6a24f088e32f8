"""A small stdlib REST client for the farm's v1 API: submit, get, cancel, events, download."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.files import atomic_file
from farm.urls import result_path

__all__ = [
    "DEFAULT_URL",
    "ApiClient",
    "ApiError",
    "SseCursor",
    "iter_sse",
]

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "regionfarm-cli/0.1"
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 16
STREAM_RETRIES = 5
"""Reconnects in a row to a job's events stream before `follow` gives up (with backoff)."""
_STREAM_RETRY_STATUSES = (0, 429, 502, 503, 504)
"""Answers that another try may fix: no answer, over the stream cap, a proxy or farm down."""


class ApiError(Exception):
    """A non-2xx answer (or no answer: `status` 0) from the farm.

    `code` and `message` come from the contract's error body
    ``{"error": {"code", "message", "details": [{"loc", "msg"}]}}``; `details` is its list
    (empty when the answer had none)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        url: str | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.url = url
        self.retry_after: float | None = None  # seconds, from the Retry-After of a 429 or 503

    def __str__(self) -> str:
        if self.status == 0:
            return self.message
        return f"{self.status} {self.code}: {self.message}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hands a 3xx back to the caller as an HTTPError instead of following it, so that the
    API key is never sent on to another host by urllib."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _decode_data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class SseCursor:
    """Where a client is in an event stream, for a reconnect: the last event id it got whole
    (sent back as ``Last-Event-ID``) and the stream's ``retry:`` (milliseconds), if any."""

    last_event_id: str | None = None
    retry_ms: int | None = None


def iter_sse(lines: Iterable[bytes], cursor: SseCursor | None = None) -> Iterator[tuple[str, Any]]:
    """(event name, data) for each Server-Sent Event in a stream of lines.

    ``event:`` names the event (default ``message``), ``data:`` lines are joined with
    ``"\\n"``, a blank line ends the event, ``:`` lines are comments (keep-alives). Data that
    is JSON is returned parsed, other data as text. ``id:`` and ``retry:`` go into `cursor`
    (the id once its event has ended). An event cut off by the end of the stream is dropped,
    and its id not kept, as the SSE standard says."""
    event, data, event_id = "", [], cursor.last_event_id if cursor else None
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if cursor is not None:
                cursor.last_event_id = event_id
            if data:
                yield event or "message", _decode_data("\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            event_id = value
        elif field == "retry" and value.isascii() and value.isdigit() and cursor is not None:
            cursor.retry_ms = int(value)


class ApiClient:
    """The farm's REST API at `url`, with an optional API key (sent as a Bearer token)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        timeout: float = 30,
        *,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        self.url = url.rstrip("/")
        self.key = key or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.last_location: str | None = None
        self.last_idempotency_key: str | None = None
        self._opener = urllib.request.build_opener(_NoRedirect)

    # -- the endpoints -------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/jobs; the 202 job object. Connection errors and 503 are retried up to
        `retries` times with backoff, always with the same Idempotency-Key (a new uuid4 one
        when none is given): the farm answers a repeated key with the first job, so a retry
        never queues a job twice. `last_location` is the job's URL afterwards."""
        key = idempotency_key or str(uuid.uuid4())
        self.last_idempotency_key = key
        body = json.dumps(spec, allow_nan=False).encode("utf-8")
        url = self._url("/v1/jobs")
        job, headers = self._request_json(
            "POST",
            url,
            body=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            retry=True,
        )
        location = headers.get("Location")
        self.last_location = (
            urllib.parse.urljoin(url, location) if location else self.job_url(job.get("id", ""))
        )
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """GET /v1/jobs/<id>; retried like submit (it changes nothing)."""
        job, _ = self._request_json("GET", self.job_url(job_id), retry=True)
        return job

    def models(self) -> list[dict[str, Any]]:
        """GET /v1/models: the farm's models with their live worker counts."""
        body, _ = self._request_json("GET", self._url("/v1/models"))
        return body["models"]

    def status(self) -> dict[str, Any]:
        """GET /v1/status: queue depth per model, live workers, the tenant's recent failures."""
        body, _ = self._request_json("GET", self._url("/v1/status"))
        return body

    def cancel(self, job_id: str) -> dict[str, Any]:
        """DELETE /v1/jobs/<id>: the job, ``canceled`` or ``canceling``; 409 when finished."""
        job, _ = self._request_json("DELETE", self.job_url(job_id))
        return job

    def events(
        self, job_id: str, timeout: float | None = None, *, cursor: SseCursor | None = None
    ) -> Iterator[tuple[str, Any]]:
        """GET /v1/jobs/<id>/events: (event name, data) pairs until the farm closes the stream
        (``progress``, ``status``, and last ``job`` with the final job object).

        With `cursor`, its last event id is sent as ``Last-Event-ID`` (the farm then sends the
        events after it) and the stream's ids and ``retry:`` are kept in it. The request is
        made at the first ``next()``; an HTTP error raises ApiError then. A broken stream or
        no bytes for `timeout` seconds (keep-alives count) raises ApiError with status 0."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if cursor is not None and cursor.last_event_id is not None:
            headers["Last-Event-ID"] = cursor.last_event_id
        request = self._request("GET", self.job_url(job_id) + "/events", headers=headers)
        response = self._open(request, timeout or self.timeout)
        with response:
            try:
                yield from iter_sse(response, cursor)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(request.full_url, exc, during="reading events") from None

    def follow(
        self,
        job_id: str,
        *,
        retries: int = STREAM_RETRIES,
        on_retry: Callable[[ApiError, float], None] | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """The events of `job_id` up to the final ``job``, across dropped connections.

        A stream that breaks, or ends before the ``job`` event, is opened again with
        ``Last-Event-ID``, so every event comes once and none is missed. Up to `retries`
        reconnects in a row (a stream that gets further, by event id, starts the count again;
        one without ids never does), each after a pause of the stream's ``retry:`` (else
        `backoff`) doubled each time, at most 30 s; `on_retry(error, pause)` is told of each.
        Then, or at once for an answer that retrying cannot change (401, 404, ...), the
        ApiError is raised: the caller may poll the job instead."""
        cursor = SseCursor()
        failures = 0
        while True:
            resumed_from = cursor.last_event_id
            try:
                for name, data in self.events(job_id, cursor=cursor):
                    if cursor.last_event_id != resumed_from:
                        failures = 0  # it got further: count the reconnects from here
                    yield name, data
                    if name == "job":
                        return
                error = ApiError(
                    0,
                    "stream_ended",
                    f"the events stream of {job_id} ended before the job did",
                    url=self.job_url(job_id) + "/events",
                )
            except ApiError as exc:
                if exc.status not in _STREAM_RETRY_STATUSES:
                    raise
                error = exc
            if failures >= retries:
                raise error
            base = cursor.retry_ms / 1000 if cursor.retry_ms is not None else self.backoff
            pause = base * 2**failures if error.retry_after is None else error.retry_after
            pause = min(max(pause, 0.0), 30.0)
            failures += 1
            if on_retry is not None:
                on_retry(error, pause)
            time.sleep(pause)

    def download_result(
        self, job_id: str, path: str | os.PathLike[str], *, sha256: str | None = None
    ) -> Path:
        """GET /v1/jobs/<id>/result into `path` (written atomically); returns the path.

        A 302 to a presigned storage URL is followed without the Authorization header (the
        key is only ever sent to the API's own origin); a 200 is the image itself. With
        `sha256` (the job's ``result.sha256``) the bytes are checked before the file appears."""
        url = self._url(result_path(urllib.parse.quote(job_id, safe="")))
        try:
            request = self._request("GET", url, headers={"Accept": "*/*"})
            response = self._open(request, self.timeout, redirects=True)
        except _Redirect as redirect:
            target = urllib.parse.urljoin(url, redirect.location)
            if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                raise ApiError(
                    redirect.status,
                    "bad_redirect",
                    f"{url} redirected to {target!r}, which is not an http(s) URL",
                    url=url,
                ) from None
            if _same_origin(target, self.url):
                request = self._request("GET", target, headers={"Accept": "*/*"})
                response = self._open(request, self.timeout)
            else:
                # A fresh request to the storage host: no Authorization header at all.
                plain = urllib.request.Request(target, headers={"User-Agent": USER_AGENT})
                response = self._open(plain, self.timeout, opener=urllib.request.build_opener())
        return self._save(response, Path(path), sha256)

    def job_url(self, job_id: str) -> str:
        return self._url("/v1/jobs/" + urllib.parse.quote(job_id, safe=""))

    # -- plumbing ------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.url + path

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib.request.Request:
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("User-Agent", USER_AGENT)
        request.add_header("Accept", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self.key:
            # Unredirected: even a redirect-following opener would not carry it elsewhere.
            request.add_unredirected_header("Authorization", f"Bearer {self.key}")
        return request

    def _open(
        self,
        request: urllib.request.Request,
        timeout: float,
        opener: urllib.request.OpenerDirector | None = None,
        redirects: bool = False,
    ) -> http.client.HTTPResponse:
        """The 2xx response to `request` (the caller closes it), else ApiError; with
        `redirects`, a 3xx raises _Redirect for the caller to follow (the API's own opener
        never follows one by itself)."""
        url = request.full_url
        try:
            return (opener or self._opener).open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                location = exc.headers.get("Location")
                if exc.code in _REDIRECTS and location:
                    if redirects:
                        raise _Redirect(exc.code, location) from None
                    raise ApiError(
                        exc.code,
                        "unexpected_redirect",
                        f"{url} answered {exc.code} to {location}; is --url the farm's API "
                        "address?",
                        url=url,
                    ) from None
                error = self._error(exc.code, exc.reason, exc.read(_CHUNK), url)
                if exc.code in (429, 503):
                    try:
                        error.retry_after = float(exc.headers.get("Retry-After", ""))
                    except ValueError:
                        pass  # absent, or an HTTP date: the backoff applies
                raise error from None
        except (OSError, http.client.HTTPException) as exc:
            # URLError (refused, DNS), timeouts and dropped connections all end up here.
            raise self._unreachable(request.full_url, exc) from None

    def _request_json(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = False,
    ) -> tuple[dict[str, Any], http.client.HTTPMessage]:
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                request = self._request(method, url, body, headers)
                with self._open(request, self.timeout) as response:
                    raw = response.read()
                    status, response_headers = response.status, response.headers
            except ApiError as exc:
                if attempt + 1 < attempts and exc.status in (0, 503):
                    time.sleep(self._delay(attempt, exc))
                    continue
                raise
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                raise ApiError(
                    status,
                    "bad_response",
                    f"{url} answered {status} with a body that is not JSON; is --url the "
                    "farm's API address?",
                    url=url,
                ) from None
            return payload, response_headers
        raise AssertionError("unreachable")  # the loop returns or raises

    def _delay(self, attempt: int, exc: ApiError) -> float:
        if exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), 30.0)
        return self.backoff * (2**attempt)

    def _error(self, status: int, reason: str, body: bytes, url: str) -> ApiError:
        try:
            err = json.loads(body)["error"]
            code, message = str(err["code"]), str(err["message"])
            details = [d for d in err.get("details") or [] if isinstance(d, dict)]
        except (ValueError, KeyError, TypeError):
            snippet = body[:200].decode("utf-8", "replace").strip()
            code = f"http_{status}"
            message = f"{url} answered {status} {reason}" + (f": {snippet}" if snippet else "")
            details = []
        return ApiError(status, code, message, details, url=url)

    def _unreachable(self, url: str, exc: BaseException, during: str = "") -> ApiError:
        reason = getattr(exc, "reason", exc)
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            return ApiError(
                0,
                "timeout",
                f"no answer from {url} within {self.timeout:g} s"
                + (f" while {during}" if during else ""),
                url=url,
            )
        if during:
            return ApiError(0, "connection_lost", f"{url}: connection lost while {during} ({text})")
        return ApiError(
            0,
            "unreachable",
            f"could not reach the farm at {url} ({text}): start it with `regionfarm up`, or "
            "pass --url (or set REGIONFARM_API_URL) for a farm elsewhere",
            url=url,
        )

    def _save(self, response: http.client.HTTPResponse, path: Path, sha256: str | None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        # The image gets the umask's mode; a failed or mismatched download leaves no file.
        with response, atomic_file(path) as f:
            try:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    f.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(
                    response.url, exc, during="downloading the result"
                ) from None
            if sha256 and digest.hexdigest() != sha256.lower():
                raise ApiError(
                    0,
                    "checksum_mismatch",
                    f"the downloaded result of {response.url} has sha256 "
                    f"{digest.hexdigest()}, the job says {sha256}; try the download again",
                )
        return path


class _Redirect(Exception):
    """A 3xx answer that the caller decides how to follow."""

    def __init__(self, status: int, location: str):
        super().__init__(f"{status} -> {location}")
        self.status, self.location = status, location
