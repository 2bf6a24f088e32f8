"""The Flask app factory: ``create_app(settings)`` wires the blueprints to one process's state."""

from __future__ import annotations

import logging

from flask import Flask

from api import assets, health, jobs, models, openapi, status, web
from api.auth import install_auth
from api.errors import register_error_handlers
from api.metrics import bp as metrics_bp
from api.metrics import install_metrics
from api.state import AppState
from farm.broker import make_celery
from farm.keys import KeyRing
from farm.records import JobRecords
from farm.redis_conn import connect
from farm.retention import retention_seconds
from farm.storage import Storage, StorageError, make_storage
from schemas import Settings, load_models

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, storage: Storage | None = None, strict_keys: bool = True
) -> Flask:
    """Build the API. `settings` None reads ``REGIONFARM_*`` from the environment (gunicorn's
    ``api.app:create_app()``); tests pass their own. A keys file that cannot be loaded is an
    error, unless `strict_keys` is False: then the app admits nobody and /readyz says why (the
    processes that `regionfarm api` forks, after it checked the file: one restarted while
    the file is broken keeps answering, and gunicorn does not stop the whole server)."""
    settings = settings if settings is not None else Settings()
    if not settings.redis_url:
        raise ValueError(
            "REGIONFARM_REDIS_URL is not set: point it at Redis, or start the farm with "
            "`regionfarm up`, which runs an embedded Redis"
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # keep the contract's field order in answers
    client = connect(settings.redis_url)
    keys = KeyRing.from_settings(settings.api_keys_file, settings.api_keys, strict=strict_keys)
    if not keys.configured:
        log.warning("no API keys configured: auth is off and every caller is tenant 'local'")
    elif not keys.tenants() and keys.problem is None:  # a problem is logged by the ring
        log.warning(
            "the API keys list no tenant: every /v1 request is refused (401) until "
            "`regionfarm keys add TENANT`"
        )
    storage = storage if storage is not None else make_storage(settings)
    try:
        storage.ensure_bucket()
    except StorageError as exc:  # not fatal: /readyz reports it until storage answers
        log.warning("storage not ready at start: %s", exc)
    app.extensions["regionfarm"] = AppState(
        settings=settings,
        redis=client,
        records=JobRecords(client, retention_seconds=retention_seconds(settings.retention_days)),
        storage=storage,
        celery=make_celery(settings, "regionfarm-api"),
        keys=keys,
        models=load_models(settings.models_file),
    )
    install_metrics(app)
    install_auth(app)
    register_error_handlers(app)
    for bp in (jobs.bp, assets.bp, models.bp, status.bp, health.bp, metrics_bp, openapi.bp, web.bp):
        app.register_blueprint(bp)
    return app
