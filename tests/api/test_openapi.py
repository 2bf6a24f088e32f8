"""The OpenAPI document: generated, valid OpenAPI 3.1, covering every route, examples valid."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from api.openapi import OPERATIONS, document
from schemas import JobSpec


def test_the_served_document_is_valid_openapi_3_1(client):
    doc = client.get("/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_of_the_url_map_is_documented_and_nothing_else(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("web."):
            continue  # the web page and its files are not part of the REST contract
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), path))
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert routes == documented


def test_every_documented_example_validates_against_its_model():
    checked = 0
    for op in OPERATIONS:
        for resp in op.responses.values():
            if resp.model is not None and resp.example is not None:
                resp.model.model_validate(resp.example)
                checked += 1
        if op.request is not None and op.request_example is not None:
            op.request.model_validate(op.request_example)
            checked += 1
    assert checked >= 10


def test_the_spec_example_is_a_spec_the_api_accepts(client, auth):
    from api.openapi_examples import SPEC

    answer = client.post("/v1/jobs", json={**SPEC, "model": "tiny-random"}, headers=auth("acme"))
    assert answer.status_code == 202


def test_the_job_schema_is_the_pydantic_models(client):
    schemas = client.get("/v1/openapi.json").json["components"]["schemas"]
    assert set(schemas["JobSpec"]["properties"]) == set(JobSpec.model_fields)
    # Field descriptions come from the models, not from hand-written text.
    assert schemas["Region"]["properties"]["mask_std"].get("description")


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/{job_id}/events"])
def test_protected_operations_declare_401_and_public_ones_no_security(path):
    doc = document()
    for operation in doc["paths"][path].values():
        assert "401" in operation["responses"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
