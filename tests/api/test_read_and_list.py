"""GET /v1/jobs/<id> and the tenant's job list: newest first, cursor pages, status filter."""

from __future__ import annotations

from farm import redis_keys


def test_get_answers_the_job_as_submitted(client, auth, spec):
    job = client.post("/v1/jobs", json=spec, headers=auth("acme")).json
    again = client.get(f"/v1/jobs/{job['id']}", headers=auth("acme"))
    assert again.status_code == 200
    assert again.json == job


def test_unknown_or_malformed_ids_are_404(client, auth):
    for jid in ("job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A", "nope", "job_01jdx3q7s9v5t0zq4w8n2c6b1a"):
        answer = client.get(f"/v1/jobs/{jid}", headers=auth("acme"))
        assert answer.status_code == 404
        assert answer.json["error"]["details"][0]["loc"] == ["job_id"]


def test_list_is_newest_first_and_pages_with_a_cursor(client, auth, make_spec):
    ids = [
        client.post("/v1/jobs", json=make_spec(seed=i), headers=auth("acme")).json["id"]
        for i in range(7)
    ]
    seen, cursor = [], None
    while True:
        query = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", query_string=query, headers=auth("acme")).json
        assert len(page["jobs"]) <= 3
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_list_filters_by_status(client, auth, make_spec):
    ids = [
        client.post("/v1/jobs", json=make_spec(seed=i), headers=auth("acme")).json["id"]
        for i in range(4)
    ]
    for jid in ids[:2]:
        client.delete(f"/v1/jobs/{jid}", headers=auth("acme"))
    canceled = client.get("/v1/jobs?status=canceled", headers=auth("acme")).json["jobs"]
    queued = client.get("/v1/jobs?status=queued", headers=auth("acme")).json["jobs"]
    assert [j["id"] for j in canceled] == ids[:2][::-1]
    assert [j["id"] for j in queued] == ids[2:][::-1]


def test_bad_list_queries_are_422_naming_the_parameter(client, auth):
    for query, loc in [
        ("status=done", ["query", "status"]),
        ("limit=0", ["query", "limit"]),
        ("limit=101", ["query", "limit"]),
        ("limit=x", ["query", "limit"]),
        ("cursor=abc", ["query", "cursor"]),
    ]:
        answer = client.get(f"/v1/jobs?{query}", headers=auth("acme"))
        assert answer.status_code == 422, query
        assert answer.json["error"]["details"][0]["loc"] == loc


def test_an_expired_record_drops_out_of_the_list(client, auth, make_spec, r):
    a = client.post("/v1/jobs", json=make_spec(seed=1), headers=auth("acme")).json["id"]
    b = client.post("/v1/jobs", json=make_spec(seed=2), headers=auth("acme")).json["id"]
    r.delete(redis_keys.job_key(a))  # what retention's expiry does
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth("acme")).json["jobs"]] == [b]
    assert r.zrange(redis_keys.tenant_jobs_key("acme"), 0, -1) == [b]


def test_result_url_is_the_public_one_when_the_farm_has_one(settings, r, auth, spec) -> None:
    """Behind a proxy, the API's answers carry the same result URL as webhooks and job.json:
    the farm's public address, not the host the request came to."""
    from api.app import create_app
    from farm.records import JobRecords

    app = create_app(settings.model_copy(update={"public_url": "https://farm.example/"}))
    client = app.test_client()
    jid = client.post("/v1/jobs", json=spec, headers=auth("acme")).json["id"]
    records = JobRecords(r, retention_seconds=3600)
    assert records.start(jid, "w@t", holder="t:1", lease_seconds=60, max_attempts=3) == "running"
    records.finish(jid, "succeeded", result={"key": "k", "format": "png", "url": ""})
    got = client.get(f"/v1/jobs/{jid}", headers=auth("acme")).json
    assert got["result"]["url"] == f"https://farm.example/v1/jobs/{jid}/result"
    app.extensions["regionfarm"].close()
