"""What a storage operation raises: each error carries the code a client sees."""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ObjectMissing", "StorageError", "StorageUnavailable"]


class StorageError(Exception):
    """A storage operation failed; `code` is the error code a client sees."""

    code: ClassVar[str] = "storage_error"


class StorageUnavailable(StorageError):
    """Storage cannot be used now. `transient` is False where waiting will not help (a missing
    bucket, refused credentials): the message then says what to change."""

    code: ClassVar[str] = "storage_unavailable"

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class ObjectMissing(StorageError):
    """The key does not exist."""

    code: ClassVar[str] = "not_found"
