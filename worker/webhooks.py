"""Webhook delivery: signed POSTs of a finished job, pinned to the address that was checked."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import string
import time
import uuid
from collections.abc import Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

from schemas.webhooks import _why_forbidden, host_allowed, webhook_url_problem

__all__ = [
    "EVENTS",
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_TOLERANCE_S",
    "USER_AGENT",
    "WebhookRefused",
    "WebhookRetry",
    "deliver",
    "retry_delays",
    "signature",
    "verify",
]

EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed", "canceled": "job.canceled"}
"""The `Regionfarm-Event` header for each final job status."""

USER_AGENT = "regionfarm-webhook/1"
"""The User-Agent of every delivery."""

MAX_RESPONSE_BYTES = 64 * 1024
"""Bytes of a receiver's answer that are read (and discarded); the rest is never read."""

SIGNATURE_TOLERANCE_S = 300
"""Seconds, either way, that `verify` lets a signature's timestamp differ from the clock."""


class WebhookRefused(Exception):
    """A delivery that must not be retried: the URL is invalid, its host is (or now resolves to)
    a loopback, private, link-local or metadata address that the allow-list does not name, or
    the receiver answered with a redirect."""


class WebhookRetry(Exception):
    """A delivery that failed for now: a connection error, a timeout or a non-2xx answer.

    `retry_after` is the receiver's Retry-After in seconds (never negative), or None when it
    sent none; the caller should wait at least that long, within its own schedule's bounds.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `Regionfarm-Signature` value: `t=<timestamp>,v1=<hex HMAC-SHA256>` of
    `b"<timestamp>." + body`, keyed by `secret`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `header` (a `Regionfarm-Signature`) signs `body` with `secret`, recently.

    This is the receiver's recipe, in any language:

    1. Split the header on "," into `key=value` pairs; take `t` and every `v1`.
    2. Refuse when `t` is more than `tolerance_s` seconds from your clock: an old, replayed
       call is refused even though its signature is genuine.
    3. Compute the hex HMAC-SHA256 of `"<t>." + <the raw request body, as received>` keyed
       by your webhook secret, and compare it with each `v1` in constant time.

    Verify the raw bytes before parsing them as JSON: re-serialised JSON need not match.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).rpartition("v1=")[2]
    # Compare every candidate, not stopping at the first match, so the time taken does not
    # depend on which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    return matched


def retry_delays(
    total_s: float = 24 * 3600, first_s: float = 10, factor: float = 2, cap_s: float = 3600
) -> list[float]:
    """The backoff schedule, in seconds between attempts, for "retried with backoff on non-2xx
    for up to 24 hours": `first_s`, then each `factor` times the last, at most `cap_s`, for as
    many retries as fit in `total_s` (10, 20, 40, ... 2560, then 3600 until 24 h are spent)."""
    if first_s <= 0 or factor < 1 or cap_s <= 0:
        raise ValueError(
            f"retry_delays needs first_s > 0, factor >= 1 and cap_s > 0 "
            f"(got first_s={first_s}, factor={factor}, cap_s={cap_s})"
        )
    delays: list[float] = []
    delay = float(min(first_s, cap_s))
    spent = 0.0
    while spent + delay <= total_s:
        delays.append(delay)
        spent += delay
        delay = min(delay * factor, float(cap_s))
    return delays


def deliver(
    url: str,
    job: dict,
    *,
    secret: str,
    allowlist: Sequence[str],
    timeout_s: float = 10.0,
    now: float | None = None,
) -> int:
    """POST the final `job` object to `url`; return the receiver's 2xx status code.

    The body is `job` as compact JSON; headers name the event (`Regionfarm-Event`), a fresh
    delivery id (`Regionfarm-Delivery`, new on every attempt) and the signature with the
    tenant's webhook `secret` (`Regionfarm-Signature`, see `signature` and `verify`). Every
    delivery is signed: an empty `secret` is a caller error (ValueError), nothing is sent.

    The URL is checked again here, with the farm's `allowlist`: a name may resolve differently
    than when the job was submitted. The host is resolved once, every address of the answer is
    checked, and the connection goes to one of those addresses, so a second lookup (DNS
    rebinding) cannot move it; the Host header, and for https the TLS server name and the
    certificate check, still use the URL's host. Redirects are not followed. `timeout_s`
    bounds the connect and each read, not the whole call.

    Raises WebhookRefused (never retry) or WebhookRetry (retry later; see `retry_delays`).
    `now` (unix seconds) stands in for the clock, for the signature and Retry-After dates.
    """
    if not secret:
        raise ValueError(
            "every webhook is signed: pass the tenant's webhook secret (the keys file's "
            "webhook_secret, or the local farm's, see `regionfarm keys webhook-secret`)"
        )
    status = job.get("status")
    if status not in EVENTS:
        raise ValueError(
            f"webhooks are sent only for finished jobs ({', '.join(EVENTS)}); "
            f"this job's status is {status!r}"
        )
    parts, host, port, addresses = _checked_target(url, allowlist)
    tls = parts.scheme.lower() == "https"

    timestamp = int(time.time() if now is None else now)
    body = json.dumps(job, separators=(",", ":"), sort_keys=False).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Regionfarm-Event": EVENTS[status],
        "Regionfarm-Delivery": str(uuid.uuid4()),
        "Regionfarm-Signature": signature(secret, body, timestamp),
    }
    # Escape spaces, control and non-ASCII characters, which http.client refuses to send;
    # existing %-escapes and reserved characters pass through unchanged.
    target = quote(parts.path or "/", safe=string.punctuation)
    if parts.query:
        target += "?" + quote(parts.query, safe=string.punctuation)

    conn = _PinnedConnection(
        host, port, addresses, timeout=timeout_s, tls=_tls_context() if tls else None
    )
    return _post(conn, f"{host}:{port}", target, body, headers, now)


def _checked_target(url: str, allowlist: Sequence[str]):
    """The URL's parts, host and port, and the addresses to dial, checked against the farm's
    rules; raises WebhookRefused."""
    # A cheap check first (no lookup), so an invalid or plainly forbidden URL is refused
    # before anything touches the network, and the URL is known to parse below.
    problem = webhook_url_problem(url, allowlist=allowlist, resolve=False)
    if problem:
        raise WebhookRefused(f"webhook URL refused: {problem}")
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses = _resolve(host, port)
    problem = webhook_url_problem(url, allowlist=allowlist, resolve=True)
    if problem:
        raise WebhookRefused(f"webhook URL refused: {problem}")
    if not host_allowed(host, parts.port, allowlist):
        # The addresses we will dial, checked with the same rules as the URL: our lookup, not
        # webhook_url_problem's own, decides where the connection goes.
        for address in addresses:
            why = _address_problem(address[4][0])
            if why:
                raise WebhookRefused(
                    f"webhook URL refused: host {host!r} now resolves to {address[4][0]}, "
                    f"{why}; add it to the farm's webhook allow-list if it is meant to be "
                    "reached"
                )
    return parts, host, port, addresses


def _post(conn, where: str, target: str, body: bytes, headers: dict, now: float | None) -> int:
    """Send the signed delivery on a pinned connection; the receiver's answer as deliver's."""
    try:
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise WebhookRetry(
                f"webhook to {where} failed: {_describe(exc)}; it will be retried"
            ) from exc
        code = response.status
        if 200 <= code < 300:
            return code
        if 300 <= code < 400:
            location = response.getheader("Location") or "no Location"
            raise WebhookRefused(
                f"webhook receiver {where} answered {code} {response.reason} ({location}): "
                "redirects are not followed; set the webhook URL to the final address"
            )
        raise WebhookRetry(
            f"webhook receiver {where} answered {code} {response.reason}; it will be retried",
            retry_after=_retry_after(response.getheader("Retry-After"), now),
        )
    finally:
        conn.close()


AddrInfo = tuple[int, int, int, str, tuple]


def _resolve(host: str, port: int) -> list[AddrInfo]:
    """Look `host` up once; a failed lookup may be a passing DNS outage, so it is retried."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookRetry(
            f"webhook host {host!r} could not be resolved: {_describe(exc)}; it will be retried"
        ) from exc
    unique: list[AddrInfo] = []
    for info in infos:
        if info not in unique:
            unique.append(info)
    if not unique:
        raise WebhookRetry(f"webhook host {host!r} resolved to no address; it will be retried")
    return unique


def _address_problem(address: str) -> str | None:
    """Why a resolved address must not be dialled, or None: `schemas.webhooks`'s rules."""
    try:
        # Link-local IPv6 answers carry a zone ("fe80::1%eth0") that ipaddress rejects.
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    return _why_forbidden(parsed)


def _tls_context() -> ssl.SSLContext:
    """The TLS settings for https receivers: the system's trusted roots, hostname checked."""
    return ssl.create_default_context()


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to `host` that dials only the given, already-checked addresses."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: Sequence[AddrInfo],
        *,
        timeout: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = list(addresses)
        self._tls = tls
        if tls is not None:
            # So the Host header omits the port exactly when it is https's own.
            self.default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        sock = _dial(self._addresses, self.timeout)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


def _dial(addresses: Sequence[AddrInfo], timeout: float | None) -> socket.socket:
    """Connect to the first of `addresses` that answers, as socket.create_connection does."""
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None  # _resolve never returns an empty list
    raise error


def _retry_after(value: str | None, now: float | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are always GMT; "-0000" parses without a zone
        when = when.replace(tzinfo=UTC)
    clock = time.time() if now is None else now
    return max(0.0, when.timestamp() - clock)


def _describe(exc: BaseException) -> str:
    """An exception as words for an error message, its type when it has no text."""
    text = str(exc)
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return f"timed out ({text})" if text else "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
