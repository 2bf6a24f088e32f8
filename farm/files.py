"""Atomic file writes: readers see the old file or the new one, never half of one, and the new
one survives a crash once the write returns."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "write_atomically"]


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A new file opened for writing beside `path`; when the block ends without an error it is
    fsynced and renamed over `path`, and the directory is synced so the rename is durable.
    An error in the block removes the file and leaves `path` as it was.

    The temp file is ``.<name>.<random>.tmp`` (hidden: local storage never lists it). With
    `mode` the new file gets exactly that mode, else the one the umask gives."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already unless something failed
    _fsync_dir(path.parent)


def write_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` (see `atomic_file`)."""
    with atomic_file(path, mode=mode) as f:
        f.write(data)


def _fsync_dir(directory: Path) -> None:
    if os.name == "posix":  # a rename is durable only once its directory is synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
