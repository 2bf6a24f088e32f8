"""Assets (upload, use, isolation), models with live workers, health, readiness and metrics."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from api.app import create_app
from farm import redis_keys
from farm.workers import beat


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, "PNG")
    return buffer.getvalue()


def _stripe(width: int = 256, height: int = 128) -> bytes:
    mask = np.zeros((height, width), dtype=bool)
    mask[:, : width // 2] = True
    return _png(mask)


def test_upload_raw_then_use_the_asset_as_a_mask(client, auth, make_spec):
    data = _stripe()
    answer = client.post("/v1/assets", data=data, content_type="image/png", headers=auth("acme"))
    assert answer.status_code == 201
    sha = hashlib.sha256(data).hexdigest()
    assert answer.json["id"] == f"asset:{sha}" and answer.json["sha256"] == sha
    assert (answer.json["width"], answer.json["height"]) == (256, 128)
    spec = make_spec()
    spec["regions"][0]["mask"] = answer.json["id"]
    job = client.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert job.status_code == 202
    assert job.json["spec"]["regions"][0]["mask"] == answer.json["id"]


def test_upload_multipart_field_file(client, auth):
    answer = client.post(
        "/v1/assets",
        data={"file": (io.BytesIO(_stripe()), "mask.png")},
        content_type="multipart/form-data",
        headers=auth("acme"),
    )
    assert answer.status_code == 201


def test_another_tenants_asset_is_unknown(client, auth, make_spec):
    asset = client.post(
        "/v1/assets", data=_stripe(), content_type="image/png", headers=auth("acme")
    ).json["id"]
    spec = make_spec()
    spec["regions"][2]["mask"] = asset
    answer = client.post("/v1/jobs", json=spec, headers=auth("globex"))
    assert answer.status_code == 422
    detail = answer.json["error"]["details"][0]
    assert detail["loc"] == ["regions", 2, "mask"] and "unknown asset" in detail["msg"]


def test_bad_uploads_are_refused_with_the_contracts_codes(client, auth, settings):
    text = client.post("/v1/assets", data=b"hello", content_type="text/plain", headers=auth("acme"))
    assert text.status_code == 415
    junk = client.post(
        "/v1/assets", data=b"not a png", content_type="image/png", headers=auth("acme")
    )
    assert junk.status_code == 422 and junk.json["error"]["code"] == "invalid_asset"
    missing = client.post(
        "/v1/assets",
        data={"other": (io.BytesIO(b"x"), "x")},
        content_type="multipart/form-data",
        headers=auth("acme"),
    )
    assert missing.status_code == 422 and missing.json["error"]["details"][0]["loc"] == ["file"]
    small = create_app(settings.model_copy(update={"max_pixels": 64 * 64})).test_client()
    huge = small.post("/v1/assets", data=_stripe(), content_type="image/png", headers=auth("acme"))
    assert huge.status_code == 422


def test_models_lists_the_file_with_live_worker_counts(client, auth, r):
    beat(r, "gpu0@a", "tiny-random")
    beat(r, "gpu1@a", "tiny-random")
    beat(r, "gpu0@b", "sd15-lcm", ttl=1)
    r.delete(redis_keys.worker_key("gpu0@b"))  # its heartbeat expired
    models = {m["name"]: m for m in client.get("/v1/models", headers=auth("acme")).json["models"]}
    assert models["tiny-random"]["workers"] == 2 and models["tiny-random"]["live"]
    assert models["sd15-lcm"]["workers"] == 0 and not models["sd15-lcm"]["live"]
    assert models["tiny-random"]["default"] and models["tiny-random"]["steps"] == 5


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json["status"] == "ok"
    ready = client.get("/readyz")
    checks = {"broker": "ok", "storage": "ok", "keys": "ok"}  # keys: auth is on here
    assert ready.status_code == 200 and ready.json["checks"] == checks


def test_readyz_names_the_broker_when_it_is_down(settings):
    down = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    answer = down.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "not_ready"
    assert [d["loc"] for d in answer.json["error"]["details"]] == [["broker"]]


def test_metrics_count_requests_jobs_and_queue_depth(client, auth, spec):
    client.post("/v1/jobs", json=spec, headers=auth("acme"))
    client.post("/v1/jobs", json={"bad": 1}, headers=auth("acme"))
    text = client.get("/metrics").data.decode()
    assert 'regionfarm_api_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert 'regionfarm_api_requests_total{method="POST",route="/v1/jobs",status="422"}' in text
    assert 'regionfarm_api_submit_seconds_count{route="job"}' in text
    assert 'regionfarm_jobs{status="queued"} 1.0' in text
    assert 'regionfarm_queue_depth{model="tiny-random"} 1.0' in text


def test_an_upload_over_max_request_bytes_is_a_413(settings, auth):
    small = create_app(settings.model_copy(update={"max_request_bytes": 2048})).test_client()
    noise = np.random.default_rng(0).integers(0, 2, size=(128, 256)).astype(bool)
    answer = small.post(
        "/v1/assets", data=_png(noise), content_type="image/png", headers=auth("acme")
    )
    assert answer.status_code == 413


def test_readyz_names_storage_when_it_is_down_and_uploads_answer_503(settings, auth):
    down = settings.model_copy(
        update={"s3_endpoint_url": "http://127.0.0.1:1", "s3_bucket": "nowhere"}
    )
    client = create_app(down).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert [d["loc"] for d in ready.json["error"]["details"]] == [["storage"]]
    upload = client.post(
        "/v1/assets", data=_stripe(), content_type="image/png", headers=auth("acme")
    )
    assert upload.status_code == 503 and upload.json["error"]["code"] == "storage_unavailable"


def test_status_shows_queues_workers_and_the_tenants_recent_failures(client, auth, spec, r, app):
    beat(r, "gpu0@a", "tiny-random", {"device": "cuda:0"})
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    records = app.extensions["regionfarm"].records
    assert records.start(jid, "gpu0@a", holder="a:1", lease_seconds=30, max_attempts=3) == "running"
    records.finish(jid, "failed", error={"code": "out_of_memory", "message": "too big"})
    client.post("/v1/jobs", json=spec, headers=auth("acme"))
    status = client.get("/v1/status", headers=auth("acme")).json
    queues = {q["model"]: q for q in status["queues"]}
    # Both messages wait: no worker consumed them (the record of the first says failed).
    assert queues["tiny-random"] == {"model": "tiny-random", "queued": 2, "workers": 1}
    assert status["workers"][0]["name"] == "gpu0@a" and status["workers"][0]["device"] == "cuda:0"
    assert [f["id"] for f in status["recent_failures"]] == [jid]
    assert status["recent_failures"][0]["error"]["code"] == "out_of_memory"
    # Another tenant sees the farm's queues but not these failures.
    assert client.get("/v1/status", headers=auth("globex")).json["recent_failures"] == []
