"""POST /v1/jobs and /v1/jobs/batch: what is queued, what is refused, and that a refusal
queues nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from farm import redis_keys
from farm.broker import queue_depth
from schemas import Settings, encode_png_data_uri
from schemas.defaults import SEED_MAX


def test_submit_answers_202_with_the_normalized_job_and_queues_one_message(
    client, auth, spec, depth
):
    answer = client.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert answer.status_code == 202
    job = answer.json
    assert answer.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["attempts"] == 0
    assert job["model"] == "tiny-random" and job["kind"] == "regions"
    # The seed is drawn and stored, defaults are filled in: the job re-renders exactly.
    assert 0 <= job["spec"]["seed"] <= SEED_MAX
    assert job["spec"]["steps"] == 5 and job["spec"]["guidance_scale"] == 1.0
    assert job["created_at"].endswith("Z") and job["started_at"] is None
    assert depth() == 1


def test_two_submits_of_one_spec_draw_different_seeds_but_keep_a_given_one(client, auth, spec):
    a = client.post("/v1/jobs", json=spec, headers=auth("acme")).json
    b = client.post("/v1/jobs", json=spec, headers=auth("acme")).json
    assert a["spec"]["seed"] != b["spec"]["seed"]
    given = client.post("/v1/jobs", json={**spec, "seed": 7}, headers=auth("acme")).json
    assert given["spec"]["seed"] == 7


def test_model_omitted_uses_the_farms_default(client, auth, spec):
    del spec["model"]
    assert client.post("/v1/jobs", json=spec, headers=auth("acme")).json["model"] == "tiny-random"


def test_a_known_model_without_workers_is_accepted_and_waits_in_its_queue(client, auth, spec, r):
    answer = client.post("/v1/jobs", json={**spec, "model": "sd15-lcm"}, headers=auth("acme"))
    assert answer.status_code == 202
    assert queue_depth(r, "sd15-lcm") == 1


def test_unknown_model_is_a_422_naming_model(client, auth, spec, depth):
    answer = client.post("/v1/jobs", json={**spec, "model": "nope"}, headers=auth("acme"))
    assert answer.status_code == 422
    assert [d["loc"] for d in answer.json["error"]["details"]] == [["model"]]
    assert depth() == 0


def test_422_names_every_bad_field_by_its_json_path(client, auth, spec, depth):
    spec["width"] = 250
    spec["regions"][2]["mask_strength"] = 3
    spec["colour"] = "red"
    answer = client.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert answer.status_code == 422
    error = answer.json["error"]
    assert error["code"] == "invalid_spec"
    locs = sorted(json.dumps(d["loc"]) for d in error["details"])
    assert locs == sorted(
        json.dumps(x) for x in (["width"], ["regions", 2, "mask_strength"], ["colour"])
    )
    assert depth() == 0


def test_a_mask_of_the_wrong_size_is_a_422_at_its_region(client, auth, make_spec):
    spec = make_spec()
    spec["regions"][1]["mask"] = encode_png_data_uri(np.ones((64, 64), dtype=bool))
    answer = client.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert answer.status_code == 422
    assert [d["loc"] for d in answer.json["error"]["details"]] == [["regions", 1, "mask"]]


def test_malformed_json_is_a_400_and_wrong_content_type_a_415(client, auth, depth):
    bad = client.post(
        "/v1/jobs", data=b'{"kind": ', content_type="application/json", headers=auth("acme")
    )
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_json"
    text = client.post("/v1/jobs", data=b"{}", content_type="text/plain", headers=auth("acme"))
    assert text.status_code == 415 and text.json["error"]["code"] == "unsupported_media_type"
    assert depth() == 0


def test_a_body_over_max_request_bytes_is_a_413_before_it_is_read(settings, auth, spec):
    from api.app import create_app

    small = create_app(settings.model_copy(update={"max_request_bytes": 2048})).test_client()
    spec["background"]["prompt"] = "sky " * 500  # the body is now well over 2048 bytes
    answer = small.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert answer.status_code == 413
    assert answer.json["error"]["code"] == "request_too_large"
    assert "2048" in answer.json["error"]["message"]


def test_canvas_over_max_pixels_is_a_422(settings, auth, make_spec):
    from api.app import create_app

    small = create_app(settings.model_copy(update={"max_pixels": 128 * 128})).test_client()
    answer = small.post("/v1/jobs", json=make_spec(), headers=auth("acme"))
    assert answer.status_code == 422
    assert {"width", "height"} <= {d["loc"][0] for d in answer.json["error"]["details"]}


def test_a_webhook_to_a_private_address_is_refused(client, auth, spec):
    spec["webhook"] = {"url": "https://10.0.0.8/hook"}
    answer = client.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert answer.status_code == 422
    assert answer.json["error"]["details"][0]["loc"] == ["webhook", "url"]


def test_the_queued_jobs_quota_answers_429_and_queues_nothing_more(settings, auth, spec, depth):
    from api.app import create_app

    capped = create_app(settings.model_copy(update={"max_queued_jobs": 2})).test_client()
    for _ in range(2):
        assert capped.post("/v1/jobs", json=spec, headers=auth("acme")).status_code == 202
    over = capped.post("/v1/jobs", json=spec, headers=auth("acme"))
    assert over.status_code == 429 and over.json["error"]["code"] == "quota_exceeded"
    # The quota is per tenant: another tenant still submits.
    assert capped.post("/v1/jobs", json=spec, headers=auth("globex")).status_code == 202
    assert depth() == 3
    # A canceled job frees its place.
    first = capped.get("/v1/jobs", headers=auth("acme")).json["jobs"][0]
    assert capped.delete(f"/v1/jobs/{first['id']}", headers=auth("acme")).status_code == 202
    assert capped.post("/v1/jobs", json=spec, headers=auth("acme")).status_code == 202


def test_broker_down_is_a_503_and_nothing_is_queued(settings, auth, spec, keys_file):
    from api.app import create_app

    down = Settings(
        redis_url="redis://127.0.0.1:1/0", data_dir=settings.data_dir, api_keys_file=keys_file
    )
    answer = create_app(down).test_client().post("/v1/jobs", json=spec, headers=auth("acme"))
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "broker_unavailable"


def test_a_failed_dispatch_leaves_no_record_and_no_message(app, client, auth, spec, r, depth):
    celery = app.extensions["regionfarm"].celery

    def refuse(*args, **kwargs):
        raise ConnectionError("broker went away")

    original = celery.send_task
    celery.send_task = refuse
    try:
        answer = client.post("/v1/jobs", json=spec, headers=auth("acme"))
    finally:
        celery.send_task = original
    assert answer.status_code == 503
    assert client.get("/v1/jobs", headers=auth("acme")).json["jobs"] == []
    assert depth() == 0
    assert r.scard(redis_keys.tenant_queued_key("acme")) == 0 and not r.keys(redis_keys.JOB_PATTERN)


def test_batch_of_jobs_queues_them_all_in_order(client, auth, make_spec, depth):
    specs = [make_spec(seed=i) for i in range(3)]
    answer = client.post("/v1/jobs/batch", json={"jobs": specs}, headers=auth("acme"))
    assert answer.status_code == 202
    assert [j["spec"]["seed"] for j in answer.json["jobs"]] == [0, 1, 2]
    assert depth() == 3


def test_batch_of_one_spec_with_seeds(client, auth, spec, depth):
    answer = client.post(
        "/v1/jobs/batch", json={"job": spec, "seeds": [5, 6, 7, 8]}, headers=auth("acme")
    )
    assert answer.status_code == 202
    assert [j["spec"]["seed"] for j in answer.json["jobs"]] == [5, 6, 7, 8]
    assert depth() == 4


def test_batch_is_validated_whole_before_anything_is_queued(client, auth, make_spec, depth):
    good, bad = make_spec(), make_spec(width=12)
    bad["regions"][1]["prompt_strength"] = -1
    answer = client.post("/v1/jobs/batch", json={"jobs": [good, bad]}, headers=auth("acme"))
    assert answer.status_code == 422
    locs = [d["loc"] for d in answer.json["error"]["details"]]
    assert ["jobs", 1, "width"] in locs and ["jobs", 1, "regions", 1, "prompt_strength"] in locs
    assert depth() == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"jobs": []}, ["jobs"]),
        ({"jobs": [{}] * 101}, ["jobs"]),
        ({"seeds": [1]}, ["jobs"]),
        ({"job": {}}, ["seeds"]),
        ({"job": {}, "seeds": [1], "jobs": [{}]}, ["jobs"]),
        ({"job": {"kind": "image", "background": {"prompt": "x"}}, "seeds": [-1]}, ["seeds", 0]),
        ({"jobz": []}, ["jobz"]),
    ],
)
def test_batch_shape_errors_name_the_field(client, auth, body, loc, depth):
    answer = client.post("/v1/jobs/batch", json=body, headers=auth("acme"))
    assert answer.status_code == 422
    assert loc in [d["loc"] for d in answer.json["error"]["details"]]
    assert depth() == 0


def test_batch_over_the_quota_queues_none_of_it(settings, auth, make_spec, depth):
    from api.app import create_app

    capped = create_app(settings.model_copy(update={"max_queued_jobs": 3})).test_client()
    answer = capped.post("/v1/jobs/batch", json={"jobs": [make_spec()] * 4}, headers=auth("acme"))
    assert answer.status_code == 429
    assert depth() == 0
