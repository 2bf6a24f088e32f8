"""Prometheus metrics of a worker process: render time, outcomes, failures, GPU memory."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = ["FAILURES", "GPU_MEMORY", "JOBS", "RENDER_SECONDS", "serve"]

RENDER_SECONDS = Histogram(
    "regionfarm_worker_render_seconds",
    "Seconds per render, from the first step to the encoded image.",
    ["model"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
)
JOBS = Counter("regionfarm_worker_jobs_total", "Jobs this worker ran, by outcome.", ["status"])
FAILURES = Counter("regionfarm_worker_failures_total", "Failed jobs by error code.", ["code"])
GPU_MEMORY = Gauge(
    "regionfarm_worker_gpu_peak_bytes", "Peak GPU memory of the last render (CUDA only)."
)


def serve(port: int) -> None:
    """Serve /metrics on `port` (a thread of this process)."""
    start_http_server(port)
