"""The semantic palette page: ``/`` and its static files under ``/web/``, public (no key).

The page is plain HTML, CSS and ES modules in ``api/static/``, written by hand: no build step,
no toolchain, nothing fetched from a CDN. It asks the user for an API key and sends it only to
the v1 API, like any other client.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

__all__ = ["CONTENT_SECURITY_POLICY", "bp"]

STATIC = Path(__file__).parent / "static"
"""The page's files, shipped as package data of `api` (pyproject.toml)."""

bp = Blueprint("web", __name__, static_folder=STATIC, static_url_path="/web")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    # Previews and results may be presigned storage URLs on another host; masks are data URIs.
    "img-src 'self' data: blob: http: https:; connect-src 'self' http: https:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Scripts and styles only from this server: prompts typed by users never run as code."""


@bp.get("/")
def index() -> Response:
    # Read whole (a few KB): no file stays open behind the answer.
    return Response((STATIC / "index.html").read_bytes(), mimetype="text/html")


@bp.after_request
def _headers(response: Response) -> Response:
    # Revalidated on every load (ETag): a farm upgrade never leaves a stale module behind.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
