"""A stand-in worker for the API tests: a real Celery worker process that consumes the render
queue, records every message it receives, and plays the worker's side of the job record
(start, progress, cancel, finish) through JobRecords, so along farm/states.py's table, as the
job's metadata asks (``test_steps``, ``test_step_seconds``). The real render worker is tested
in tests/worker."""

from __future__ import annotations

import io
import json
import os
import time

from celery import Celery
from celery.signals import worker_ready
from PIL import Image

from farm import states
from farm.broker import celery_settings
from farm.records import JobRecords
from farm.redis_conn import connect
from farm.storage import job_object_key, make_storage
from schemas import Settings
from schemas.names import TASK_RENDER

settings = Settings()
app = Celery("recording-worker", set_as_current=True)
app.conf.update(celery_settings(settings))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)
client = connect(settings.redis_url)
records = JobRecords(client, retention_seconds=3600)
NAME = os.environ.get("TEST_WORKER_NAME", "recorder")


@worker_ready.connect
def _ready(**_: object) -> None:
    client.set("test:worker-ready", NAME)


@app.task(name=TASK_RENDER, bind=True)
def render(self, job_id: str) -> None:
    info = self.request.delivery_info or {}
    client.rpush(
        "test:received",
        json.dumps(
            {
                "job_id": job_id,
                "priority": info.get("priority"),
                "queue": info.get("routing_key"),
                "worker": NAME,
            }
        ),
    )
    status = records.start(
        job_id, NAME, holder=f"{NAME}:{os.getpid()}", lease_seconds=60, max_attempts=3
    )
    if status != states.RENDER:  # busy, ended or gone: farm/states.py says what start answers
        client.rpush("test:skipped", json.dumps({"job_id": job_id, "status": status}))
        return
    record = records.get(job_id)
    meta = json.loads(record["metadata"])
    spec = json.loads(record["spec"])
    steps = int(meta.get("test_steps", 2))
    for step in range(steps):
        if records.cancel_requested(job_id):
            records.finish(job_id, "canceled")
            return
        time.sleep(float(meta.get("test_step_seconds", 0.05)))
        records.set_progress(job_id, {"step": step + 1, "total": steps, "eta_seconds": 0.1})
    if meta.get("test_fail"):
        records.finish(job_id, "failed", error={"code": "internal", "message": "test failure"})
        return
    buffer = io.BytesIO()
    Image.new("RGB", (spec["width"], spec["height"]), (200, 100, 50)).save(buffer, "PNG")
    data = buffer.getvalue()
    storage = make_storage(settings)
    key = job_object_key(storage.prefix, record["tenant"], job_id, "image.png")
    stored = storage.put_bytes(key, data, "image/png")
    records.finish(
        job_id,
        "succeeded",
        result={
            "url": "",
            "key": key,
            "format": "png",
            "width": spec["width"],
            "height": spec["height"],
            "bytes": stored.size,
            "sha256": stored.sha256,
            "seed": spec["seed"],
            "render_seconds": 0.1,
        },
    )
