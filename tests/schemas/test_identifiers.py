"""One pattern per identifier, matched in full everywhere: a trailing newline, a slash, `..`,
upper case or one character too many never pass, in Python checks or in pydantic fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.identifiers import (
    ASSET_ID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    JOB_ID_PATTERN,
    SHA256_PATTERN,
    TENANT_PATTERN,
    asset_id,
    check_tenant_name,
    is_asset_id,
    is_idempotency_key,
    is_job_id,
    is_sha256,
    is_tenant,
)

ROOT = Path(__file__).resolve().parents[2]
JOB = "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A"
SHA = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", ["acme", "a", "0", "b-2_x", "x" * 64, "9lives"])
def test_good_tenant_names(name):
    assert is_tenant(name) and check_tenant_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "acme\n",
        "\nacme",
        "acme\r",
        "a/b",
        "..",
        "../x",
        "Acme",
        "x" * 65,
        "-x",
        "_x",
        "a b",
        "",
        "ä",
        "acme\x00",
        None,
        7,
    ],
)
def test_bad_tenant_names_fail_and_the_error_says_the_rule(name):
    assert not is_tenant(name)
    with pytest.raises(ValueError) as info:
        check_tenant_name(name)
    assert TENANT_PATTERN in str(info.value) and "1 to 64 lowercase" in str(info.value)


def test_job_ids_asset_ids_and_hashes_match_in_full_only():
    assert is_job_id(JOB) and is_sha256(SHA) and is_asset_id(f"asset:{SHA}")
    for bad in (JOB + "\n", JOB.lower(), JOB[:-1], JOB + "0", JOB.replace("1", "I"), " " + JOB):
        assert not is_job_id(bad), repr(bad)
    for bad in (SHA + "\n", SHA.upper(), SHA[:-1], SHA + "0"):
        assert not is_sha256(bad) and not is_asset_id(f"asset:{bad}"), repr(bad)
    assert not is_asset_id(SHA) and not is_asset_id(f"asset:{SHA}\n")
    assert asset_id(SHA) == f"asset:{SHA}"
    with pytest.raises(ValueError, match="sha256"):
        asset_id("../../x")


def test_server_made_job_ids_match_the_pattern():
    from farm.ids import new_job_id

    assert all(is_job_id(new_job_id()) for _ in range(200))


@pytest.mark.parametrize("key", ["k", "x" * 255, "a b~!", "550e8400-e29b-41d4-a716-446655440000"])
def test_good_idempotency_keys(key):
    assert is_idempotency_key(key)


@pytest.mark.parametrize("key", ["", "x" * 256, "k\n", "k\t", "cl\u00e9", "\x7f", None])
def test_bad_idempotency_keys(key):
    assert not is_idempotency_key(key)


def test_pydantic_fields_refuse_a_trailing_newline():
    from schemas.job import AssetInfo, Job

    AssetInfo(id=f"asset:{SHA}", width=1, height=1, sha256=SHA)
    for fields in ({"id": f"asset:{SHA}\n"}, {"sha256": f"{SHA}\n"}, {"id": f"x-asset:{SHA}"}):
        with pytest.raises(ValidationError):
            AssetInfo(**{"id": f"asset:{SHA}", "width": 1, "height": 1, "sha256": SHA, **fields})
    pattern = Job.model_json_schema()["properties"]["id"]["pattern"]
    assert re.fullmatch(pattern.removeprefix("^").removesuffix("$"), JOB)

    def id_errors(value: str) -> list[str]:
        with pytest.raises(ValidationError) as info:  # the other fields are missing
            Job.model_validate({"id": value})
        return [e["type"] for e in info.value.errors() if e["loc"] == ("id",)]

    assert id_errors(JOB) == [] and id_errors(JOB + "\n") == ["string_pattern_mismatch"]


def test_storage_keys_take_only_full_matches():
    from farm.storage import asset_key, job_object_key

    assert job_object_key("", "acme", JOB, "job.json") == f"acme/{JOB}/job.json"
    assert asset_key("p", "acme", SHA, "png") == f"p/acme/assets/{SHA}.png"
    for tenant, job in (("acme\n", JOB), ("acme", JOB + "\n"), ("..", JOB), ("a/b", JOB)):
        with pytest.raises(ValueError, match="invalid"):
            job_object_key("", tenant, job, "job.json")
    with pytest.raises(ValueError, match="invalid"):
        asset_key("", "acme", SHA + "\n", "png")


def test_each_pattern_is_written_once_in_the_product_code():
    patterns = [
        TENANT_PATTERN,
        JOB_ID_PATTERN,
        SHA256_PATTERN,
        ASSET_ID_PATTERN,
        IDEMPOTENCY_KEY_PATTERN,
        "0-9A-HJKMNP-TV-Z",
        "[0-9a-f]{64}",
    ]
    found = []
    for package in ("api", "cli", "farm", "schemas", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "identifiers.py":
                continue
            text = path.read_text()
            found += [f"{path.relative_to(ROOT)}: {p}" for p in patterns if p in text]
    assert found == []
