"""`regionfarm keys add`: a new key for a tenant, its hash written into the keys file under a
lock, atomically; and new webhook secrets."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from farm.files import write_atomically
from farm.keys.file import KeysFileError, Tenant, dump_keys, hash_key, parse_keys
from schemas.identifiers import check_tenant_name

__all__ = ["KEY_PREFIX", "WEBHOOK_SECRET_PREFIX", "add_key", "new_webhook_secret"]

KEY_PREFIX = "rf_"
WEBHOOK_SECRET_PREFIX = "whsec_"


def add_key(path: str | os.PathLike[str], tenant: str) -> str:
    """Make a new API key for `tenant`, store its sha256 in the keys file and return the key.

    A tenant has one key: adding a key for a tenant that has one replaces the old key's hash,
    so the old key stops working; its webhook secret is kept (receivers keep verifying), and
    a new one (``whsec_...``) is made only for a tenant that has none. Other tenants are kept
    as they are. The file (and its directory) is created when missing, with mode 0600, and
    written atomically (temp file + rename); an existing file keeps its mode. Concurrent
    calls (threads or processes) are serialized by an exclusive flock on ``<file>.lock``, so
    none loses another's entry. Only the known fields of each entry are written back.

    Raises ValueError for a bad tenant name, KeysFileError when the existing file is
    malformed (it is left untouched), OSError when it cannot be written.
    """
    check_tenant_name(tenant)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with _locked(path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except UnicodeDecodeError as exc:
            raise KeysFileError(f"{path}: not UTF-8 text ({exc})") from None
        tenants = parse_keys(text, path)
        previous = tenants.get(tenant)
        secret = previous.webhook_secret if previous else new_webhook_secret()
        tenants[tenant] = Tenant(name=tenant, key_sha256=hash_key(key), webhook_secret=secret)
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o600
        write_atomically(path, dump_keys(tenants, path).encode("utf-8"), mode=mode)
    return key


def new_webhook_secret() -> str:
    """A new webhook secret (``whsec_...``), as the keys file and the local farm keep them."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``<path>.lock`` (a file beside `path`, never removed: removing
    it would let two writers lock two different files)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
