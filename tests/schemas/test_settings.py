"""Settings come from REGIONFARM_* variables or keyword arguments, with the contract's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import MAX_PIXELS, MAX_REQUEST_BYTES, Settings

ALL_VARS = [
    "REDIS_URL",
    "S3_ENDPOINT_URL",
    "S3_BUCKET",
    "S3_PREFIX",
    "S3_PUBLIC_ENDPOINT_URL",
    "API_KEYS_FILE",
    "MODELS_FILE",
    "DEFAULT_MODEL",
    "MAX_PIXELS",
    "MAX_REQUEST_BYTES",
    "MAX_REGIONS",
    "DATA_DIR",
    "MODEL_CACHE",
    "RETENTION_DAYS",
    "JOB_TIME_LIMIT",
    "WEBHOOK_ALLOWLIST",
    "TORCH_THREADS",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ALL_VARS:
        monkeypatch.delenv(f"REGIONFARM_{name}", raising=False)


def test_defaults_follow_the_contract():
    s = Settings()
    assert s.redis_url is None and s.s3_endpoint_url is None and s.s3_public_endpoint_url is None
    assert (s.s3_bucket, s.s3_prefix) == ("regionfarm", "")
    assert s.api_keys_file is None and s.models_file is None
    assert s.default_model == "sd15-lcm"
    assert (s.max_pixels, s.max_request_bytes) == (8388608, 33554432)
    assert (s.max_pixels, s.max_request_bytes) == (MAX_PIXELS, MAX_REQUEST_BYTES)
    assert s.max_regions == 64
    assert s.data_dir == Path(".regionfarm")
    assert s.model_cache == Path("~/.cache/regionfarm/models").expanduser()
    assert (s.retention_days, s.job_time_limit) == (7, 3600.0)
    assert s.webhook_allowlist == [] and s.torch_threads is None


def test_every_field_has_a_description():
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_settings_are_read_from_prefixed_environment_variables(monkeypatch, tmp_path):
    env = {
        "REDIS_URL": "redis://broker:6379/0",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "S3_BUCKET": "renders",
        "S3_PREFIX": "prod",
        "S3_PUBLIC_ENDPOINT_URL": "https://files.example.com",
        "API_KEYS_FILE": str(tmp_path / "keys.json"),
        "MODELS_FILE": str(tmp_path / "models.toml"),
        "DEFAULT_MODEL": "tiny-random",
        "MAX_PIXELS": "1048576",
        "MAX_REQUEST_BYTES": "1048576",
        "MAX_REGIONS": "16",
        "DATA_DIR": str(tmp_path / "data"),
        "MODEL_CACHE": str(tmp_path / "cache"),
        "RETENTION_DAYS": "3",
        "JOB_TIME_LIMIT": "90.5",
        "WEBHOOK_ALLOWLIST": "hooks.internal, 10.0.0.0/8,,",
        "TORCH_THREADS": "4",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"REGIONFARM_{name}", value)
    s = Settings()
    assert s.redis_url == "redis://broker:6379/0" and s.s3_endpoint_url == "http://minio:9000"
    assert (s.s3_bucket, s.s3_prefix) == ("renders", "prod")
    assert s.s3_public_endpoint_url == "https://files.example.com"
    assert s.api_keys_file == tmp_path / "keys.json" and s.models_file == tmp_path / "models.toml"
    assert s.default_model == "tiny-random"
    assert (s.max_pixels, s.max_request_bytes, s.max_regions) == (1048576, 1048576, 16)
    assert s.data_dir == tmp_path / "data" and s.model_cache == tmp_path / "cache"
    assert (s.retention_days, s.job_time_limit, s.torch_threads) == (3, 90.5, 4)
    assert s.webhook_allowlist == ["hooks.internal", "10.0.0.0/8"]


def test_unprefixed_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere")
    assert Settings().redis_url is None


def test_empty_variables_count_as_unset(monkeypatch):
    monkeypatch.setenv("REGIONFARM_REDIS_URL", "")
    monkeypatch.setenv("REGIONFARM_TORCH_THREADS", "")
    monkeypatch.setenv("REGIONFARM_WEBHOOK_ALLOWLIST", "")
    s = Settings()
    assert s.redis_url is None and s.torch_threads is None and s.webhook_allowlist == []


def test_keyword_arguments_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REGIONFARM_S3_BUCKET", "from-env")
    s = Settings(s3_bucket="from-kwargs", data_dir=tmp_path, max_pixels=4096)
    assert (s.s3_bucket, s.data_dir, s.max_pixels) == ("from-kwargs", tmp_path, 4096)


@pytest.mark.parametrize(
    ("value", "hosts"),
    [
        ("a.example.com", ["a.example.com"]),
        ("a.example.com,B.example.com", ["a.example.com", "b.example.com"]),
        (" a.example.com , 10.0.0.5 ,", ["a.example.com", "10.0.0.5"]),
        ('["x.example", "y.example"]', ["x.example", "y.example"]),
        ("", []),
    ],
)
def test_webhook_allowlist_is_comma_separated(monkeypatch, value, hosts):
    monkeypatch.setenv("REGIONFARM_WEBHOOK_ALLOWLIST", value)
    assert Settings().webhook_allowlist == hosts
    assert Settings(webhook_allowlist=value).webhook_allowlist == hosts


def test_webhook_allowlist_takes_a_list_as_keyword():
    assert Settings(webhook_allowlist=["A.com", " b.com "]).webhook_allowlist == ["a.com", "b.com"]


def test_home_is_expanded_in_paths():
    s = Settings(model_cache="~/models", data_dir="~/farm")
    assert s.model_cache == Path.home() / "models" and s.data_dir == Path.home() / "farm"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_pixels": 0},
        {"max_regions": 0},
        {"max_regions": 65},
        {"torch_threads": 0},
        {"job_time_limit": 0},
        {"job_time_limit": float("inf")},
        {"retention_days": 0},
        {"redis_urll": "typo"},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValidationError):
        Settings(**kwargs)


def test_bad_environment_value_is_refused(monkeypatch):
    monkeypatch.setenv("REGIONFARM_MAX_PIXELS", "lots")
    with pytest.raises(ValidationError):
        Settings()
