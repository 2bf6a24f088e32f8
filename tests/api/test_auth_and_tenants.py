"""Bearer keys, tenants that see only their own jobs, auth off only without keys, and a keys
file that is emptied or broken while the API runs never lets a request in without a key."""

from __future__ import annotations

import re
import time

import pytest

from api.app import create_app
from farm.keys import KeysFileError, add_key

PUBLIC = {"/", "/healthz", "/readyz", "/metrics", "/v1/openapi.json"}
FAKE_ID = "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A"


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "web.static"):  # files: tests/api/test_web.py
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: FAKE_ID, rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.rule, path, method


def test_every_route_but_the_public_ones_answers_401_without_a_key(app, client):
    seen = 0
    for rule, path, method in _routes(app):
        answer = client.open(path, method=method)
        if rule in PUBLIC:
            assert answer.status_code != 401, rule
            continue
        seen += 1
        assert answer.status_code == 401, f"{method} {rule}"
        assert answer.json["error"]["code"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert seen >= 8  # the walk really covered the contract's routes


def test_a_wrong_key_or_scheme_is_a_401(client, keys):
    for header in ("Bearer nope", f"Basic {keys['acme']}", "Bearer ", keys["acme"]):
        answer = client.get("/v1/jobs", headers={"Authorization": header})
        assert answer.status_code == 401, header


def test_another_tenants_job_is_a_404_everywhere(client, auth, spec):
    job = client.post("/v1/jobs", json=spec, headers=auth("acme")).json
    jid = job["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{jid}"),
        ("DELETE", f"/v1/jobs/{jid}"),
        ("GET", f"/v1/jobs/{jid}/result"),
        ("GET", f"/v1/jobs/{jid}/events"),
    ]:
        foreign = client.open(path, method=method, headers=auth("globex"))
        unknown = client.open(path.replace(jid, FAKE_ID), method=method, headers=auth("globex"))
        assert foreign.status_code == unknown.status_code == 404, path
        assert foreign.json["error"]["code"] == unknown.json["error"]["code"] == "not_found"
    assert client.get("/v1/jobs", headers=auth("globex")).json["jobs"] == []
    # ... and the owner still has it, untouched by the other tenant's cancel.
    assert client.get(f"/v1/jobs/{jid}", headers=auth("acme")).json["status"] == "queued"


def test_a_key_added_while_the_api_runs_works_without_a_restart(client, keys_file, spec, wait_for):
    new_key = add_key(keys_file, "initech")
    headers = {"Authorization": f"Bearer {new_key}"}
    # The keys file is re-read at most once a second.
    wait_for(
        lambda: client.post("/v1/jobs", json=spec, headers=headers).status_code == 202,
        timeout=5,
        what="the new key to be accepted",
    )


def test_without_keys_auth_is_off_and_everyone_is_tenant_local(settings, spec, tmp_path, caplog):
    settings = settings.model_copy(update={"api_keys_file": None})
    with caplog.at_level("WARNING"):
        client = create_app(settings).test_client()
    assert any("auth is off" in r.getMessage() for r in caplog.records)
    job = client.post("/v1/jobs", json=spec).json
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert client.application.extensions["regionfarm"].records.get(job["id"])["tenant"] == "local"


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_public_routes_need_no_key(client, path):
    assert client.get(path).status_code in (200, 503)


def test_keys_can_come_from_the_environment_instead_of_a_file(settings, keys_file, keys, spec):
    inline = keys_file.read_text()  # the same JSON shape, as a platform's secret variable
    app = create_app(settings.model_copy(update={"api_keys_file": None, "api_keys": inline}))
    client = app.test_client()
    assert client.get("/v1/jobs").status_code == 401
    headers = {"Authorization": f"Bearer {keys['globex']}"}
    assert client.post("/v1/jobs", json=spec, headers=headers).status_code == 202
    with pytest.raises(KeysFileError, match="keep one"):
        create_app(settings.model_copy(update={"api_keys": inline}))


def _keyless_and_keyed(client, keys) -> list[int]:
    """The statuses of a request with no key, a wrong key, and each tenant's key."""
    headers = [{}, {"Authorization": "Bearer rf_wrong"}]
    headers += [{"Authorization": f"Bearer {k}"} for k in keys.values()]
    return [client.get("/v1/jobs", headers=h).status_code for h in headers]


def test_a_keys_file_emptied_while_the_api_runs_admits_nobody(client, keys_file, keys, wait_for):
    assert _keyless_and_keyed(client, keys) == [401, 401, 200, 200]
    keys_file.write_text('{"tenants": {}}')
    # Never "auth off": every answer is a 401, also while the change is being noticed.
    wait_for(
        lambda: _keyless_and_keyed(client, keys) == [401] * 4,
        timeout=5,
        what="the old keys to stop working",
    )
    keys_file.write_text("")  # a file emptied with `: >` is a file with no tenants too
    time.sleep(1.1)
    assert _keyless_and_keyed(client, keys) == [401] * 4
    assert client.get("/readyz").json["checks"]["keys"] == "ok"


def test_a_corrupt_keys_file_keeps_the_last_good_keys_and_readyz_says_so(
    client, keys_file, keys, wait_for, caplog
):
    good = keys_file.read_text()
    with caplog.at_level("ERROR", logger="farm.keys"):
        keys_file.write_text(good[: len(good) // 2])  # cut in the middle: not JSON
        ready = wait_for(
            lambda: (r := client.get("/readyz")).json["status"] == "degraded" and r,
            timeout=5,
            what="readyz to report the keys file",
        )
        for _ in range(20):
            assert _keyless_and_keyed(client, keys) == [401, 401, 200, 200]
    # Ready (it serves with the last good keys; a 503 would take every replica out at once),
    # and it says what is wrong.
    assert ready.status_code == 200
    assert ready.json["checks"]["keys"].startswith("invalid: the API keys file cannot be used")
    assert "acme" not in ready.get_data(as_text=True)  # what /readyz says names no tenant
    logged = [r for r in caplog.records if r.name == "farm.keys" and r.levelname == "ERROR"]
    assert len(logged) == 1 and str(keys_file) in logged[0].getMessage()

    keys_file.unlink()  # gone: still the last good keys, and readyz says "missing"
    wait_for(
        lambda: client.get("/readyz").json["checks"]["keys"].startswith("missing"),
        timeout=5,
        what="readyz to report the missing file",
    )
    assert _keyless_and_keyed(client, keys) == [401, 401, 200, 200]
    keys_file.write_text(good)
    wait_for(lambda: client.get("/readyz").json["status"] == "ok", timeout=5, what="readyz ok")


def test_a_keys_file_with_no_tenant_at_start_means_auth_on(settings, keys_file, spec, caplog):
    keys_file.write_text('{"tenants": {}}')
    with caplog.at_level("WARNING"):
        client = create_app(settings).test_client()
    assert any("list no tenant" in r.getMessage() for r in caplog.records)
    assert not any("auth is off" in r.getMessage() for r in caplog.records)
    answer = client.post("/v1/jobs", json=spec)
    assert answer.status_code == 401 and answer.json["error"]["code"] == "unauthorized"
    assert client.get("/readyz").status_code == 200  # nothing is wrong with the file


def test_an_app_made_while_the_keys_file_is_broken_admits_nobody_unless_strict(
    settings, keys_file, keys
):
    keys_file.write_text('{"tenants": ')
    with pytest.raises(KeysFileError, match="not valid JSON"):
        create_app(settings)  # a misconfigured API fails at start
    # What a gunicorn worker restarted while the file is broken makes: it keeps answering.
    client = create_app(settings, strict_keys=False).test_client()
    assert _keyless_and_keyed(client, keys) == [401] * 4
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["keys"].startswith("invalid")
