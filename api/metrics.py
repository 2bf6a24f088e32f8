"""Prometheus metrics of the API: requests, submit latency, jobs by status, queue depth."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from api.state import AppState, state
from farm.broker import queue_depth
from farm.redis_conn import redis_errors

__all__ = ["REQUESTS", "SUBMIT_SECONDS", "bp", "install_metrics"]

REQUESTS = Counter(
    "regionfarm_api_requests_total",
    "API requests by route, method and status.",
    ["route", "method", "status"],
)
SUBMIT_SECONDS = Histogram(
    "regionfarm_api_submit_seconds",
    "Seconds from a submit request to its answer.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

bp = Blueprint("metrics", __name__)


class FarmCollector(Collector):
    """Read at scrape time from Redis, so every API process reports the same farm-wide values."""

    def __init__(self, app_state: AppState) -> None:
        self.state = app_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "regionfarm_jobs", "Jobs by status (final ones: ever).", labels=["status"]
        )
        depth = GaugeMetricFamily(
            "regionfarm_queue_depth", "Messages waiting per model queue.", labels=["model"]
        )
        try:
            for status, count in self.state.records.status_counts().items():
                jobs.add_metric([status], count)
            for model in self.state.models:
                depth.add_metric([model], queue_depth(self.state.redis, model))
        except redis_errors:
            return  # the broker is down: /readyz says so; the scrape still succeeds
        yield jobs
        yield depth


def _multiprocess() -> bool:
    """Whether prometheus_client keeps its values in per-process files (it decides at import,
    from PROMETHEUS_MULTIPROC_DIR, which `regionfarm api` sets for gunicorn)."""
    return values.ValueClass is not values.MutexValue


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()
    if _multiprocess():
        # Under gunicorn each worker process writes its counters to files; merge them all.
        MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    farm = CollectorRegistry()
    farm.register(FarmCollector(state()))
    return Response(text + generate_latest(farm), mimetype=CONTENT_TYPE_LATEST)


def install_metrics(app: Flask) -> None:
    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(rule, request.method, str(response.status_code)).inc()
        return response
