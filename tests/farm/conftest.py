"""Fixtures for the farm tests: settings for the session's S3 server (tests/conftest.py)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from farm.storage import make_storage
from schemas import Settings


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick; closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_settings(s3_server: str, tmp_path: Path) -> Settings:
    """Settings for the moto server with a fresh bucket of this test's own (already created)."""
    settings = Settings(
        s3_endpoint_url=s3_server,
        s3_bucket=f"test-{uuid.uuid4().hex[:16]}",
        s3_prefix="rf",
        data_dir=tmp_path,
    )
    make_storage(settings).ensure_bucket()
    return settings
