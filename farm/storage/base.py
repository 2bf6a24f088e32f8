"""What every storage backend does: objects by full key, written and then verified."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from farm.storage.errors import StorageUnavailable

__all__ = ["Storage", "StoredObject"]


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str | None
    content_type: str | None


class Storage(ABC):
    """Objects by full key (built with `job_object_key` / `asset_key` from `prefix`)."""

    prefix: str

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Write `data`, then read its size and sha256 back; StorageUnavailable if they differ."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(key, data, content_type, digest)
        stored = self.head(key)
        if stored is None or stored.size != len(data) or stored.sha256 != digest:
            raise StorageUnavailable(
                f"{self}: {key} did not read back as written (wrote {len(data)} bytes sha256 "
                f"{digest}, read back {stored}); check the storage server's health"
            )
        return stored

    @abstractmethod
    def _write(self, key: str, data: bytes, content_type: str, digest: str) -> None: ...
    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...
    @abstractmethod
    def head(self, key: str) -> StoredObject | None: ...
    @abstractmethod
    def delete(self, key: str) -> None: ...
    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...
    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[tuple[str, float]]: ...
    @abstractmethod
    def check(self) -> None: ...
    @abstractmethod
    def ensure_bucket(self) -> None: ...

    def presigned_url(
        self, key: str, expires_s: int = 3600, filename: str | None = None
    ) -> str | None:
        """A GET URL for `key`, or None where the API must serve the bytes itself."""
        return None

    def local_path(self, key: str) -> Path | None:
        """The file for `key` (which may not exist) where storage is a local directory, else
        None."""
        return None

    @staticmethod
    def _refuse_empty(prefix: str) -> None:
        # An empty prefix would match every object in the bucket: a bug, never retention.
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix; refusing to delete all")
