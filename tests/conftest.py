"""Shared fixtures: one model cache for the whole session, built-in tiny models loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """The cache every test and every subprocess shares (REGIONFARM_MODEL_CACHE), so the tiny
    models are built once per session, as they are once per machine in real use."""
    path = Path(os.environ.get("REGIONFARM_TEST_MODEL_CACHE") or tmp_path_factory.mktemp("models"))
    os.environ["REGIONFARM_MODEL_CACHE"] = str(path)
    return path
