"""Object storage for results and uploaded assets: S3-compatible, or a local directory.

The package's modules each hold one thing: `keys` (where objects live), `errors`, `base` (what
every backend does), `s3` and `local` (the backends). Import the names from here."""

from __future__ import annotations

from farm.storage.base import Storage, StoredObject
from farm.storage.errors import ObjectMissing, StorageError, StorageUnavailable
from farm.storage.keys import asset_key, job_object_key
from farm.storage.local import LocalStorage
from farm.storage.s3 import CONNECT_TIMEOUT_S, S3Storage
from schemas import Settings

__all__ = [
    "LocalStorage",
    "ObjectMissing",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "asset_key",
    "job_object_key",
    "make_storage",
]


def make_storage(settings: Settings) -> Storage:
    """S3 where `s3_endpoint_url` is set, else local files under ``data_dir / "storage"``."""
    if settings.s3_endpoint_url is None:
        return LocalStorage(settings.data_dir / "storage", settings.s3_prefix)
    return S3Storage(
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_prefix,
        settings.s3_public_endpoint_url,
        region=settings.s3_region,
        connect_timeout=min(CONNECT_TIMEOUT_S, settings.s3_timeout_seconds),
        read_timeout=settings.s3_timeout_seconds,
    )
