"""Bearer API keys to tenants; tenants see only their own jobs and assets."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, g, request

from api.errors import ApiError
from api.state import state
from farm.local_tenant import LOCAL_TENANT

__all__ = ["LOCAL_TENANT", "PUBLIC_PATHS", "install_auth", "still_admitted", "tenant"]

PUBLIC_PATHS = frozenset({"/v1/openapi.json"})
"""Paths under /v1 that need no key; everything outside /v1 needs none either."""


def tenant() -> str:
    """The tenant of the current request (set before the view runs)."""
    return g.tenant


def still_admitted() -> Callable[[], bool]:
    """For an answer that outlives its request (an event stream): a check, to call now and
    then, that the request's key still admits its tenant. A key removed from the keys file
    ends such a stream, as it refuses new requests."""
    keys, who = state().keys, tenant()
    if not keys.configured:
        return lambda: True
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()

    def check() -> bool:
        found = keys.lookup(token)
        return found is not None and found.name == who

    return check


def _authenticate() -> str:
    keys = state().keys
    # Decided once, at start: a keys file that loses its last tenant admits nobody, it never
    # switches auth off.
    if not keys.configured:
        return LOCAL_TENANT
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="regionfarm"'},
        )
    found = keys.lookup(token.strip())  # re-reads a changed keys file: no restart needed
    if found is None:
        raise ApiError(
            401,
            "unauthorized",
            "unknown API key: check it, or make one with `regionfarm keys add TENANT`",
            headers={"WWW-Authenticate": 'Bearer realm="regionfarm", error="invalid_token"'},
        )
    return found.name


def install_auth(app: Flask) -> None:
    @app.before_request
    def _check_key() -> None:
        path = request.path
        if path.startswith("/v1/") and path not in PUBLIC_PATHS:
            g.tenant = _authenticate()
