"""The API keys file: tenant -> sha256 of its key, and its webhook secret; no plain keys."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KEY_PREFIX",
    "TENANT_RE",
    "WEBHOOK_SECRET_PREFIX",
    "KeyRing",
    "KeysFileError",
    "Tenant",
    "add_key",
    "check_tenant_name",
    "hash_key",
    "load_keys",
]

log = logging.getLogger(__name__)

# Tenant names become parts of storage keys (`<prefix>/<tenant>/<job id>/...`), so they are
# restricted to characters that are safe in a key and in a TOML bare key.
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "rf_"
WEBHOOK_SECRET_PREFIX = "whsec_"
_FIELDS = ("key_sha256", "webhook_secret")


@dataclass(frozen=True)
class Tenant:
    """One tenant of the farm: its name, the sha256 of its API key and its webhook secret."""

    name: str
    key_sha256: str
    webhook_secret: str


class KeysFileError(Exception):
    """The keys file is missing or malformed; the message names the file and the problem."""


def hash_key(key: str) -> str:
    """The lowercase hex sha256 of an API key, as the keys file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_tenant_name(name: str) -> None:
    """Raise ValueError when `name` cannot be a tenant name."""
    if not isinstance(name, str) or not TENANT_RE.match(name):
        raise ValueError(
            f"tenant name {name!r} is not allowed: use 1 to 64 lowercase letters, digits, "
            "'_' or '-', starting with a letter or digit (it becomes part of storage keys)"
        )


def load_keys(path: str | os.PathLike[str]) -> dict[str, Tenant]:
    """The tenants of the keys file at `path`, keyed by key_sha256 (the API's per-request
    lookup: sha256(bearer token) -> Tenant). JSON, or TOML when the suffix is ``.toml``.

    Raises KeysFileError for a missing or unreadable file, bad JSON/TOML, a bad tenant name, a
    key_sha256 that is not 64 lowercase hex digits, two tenants with one hash, missing fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeysFileError(
            f"{path}: no such keys file; make one with `regionfarm keys add TENANT --file "
            f"{path}` or point REGIONFARM_API_KEYS_FILE at the right file"
        ) from None
    except UnicodeDecodeError as exc:
        raise KeysFileError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read the keys file ({exc.strerror or exc})") from None
    tenants = _parse(text, path)
    return {t.key_sha256: t for t in tenants.values()}


def _parse(text: str, path: Path) -> dict[str, Tenant]:
    """The tenants in a keys file's text, by name, in file order; raises KeysFileError."""
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise KeysFileError(f"{path}: not valid TOML: {exc}") from None
        table = "a [tenants] table"
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeysFileError(
                f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        table = 'a "tenants" object'
    if not isinstance(data, dict) or "tenants" not in data:
        raise KeysFileError(
            f"{path}: expected {table} mapping tenant names to key_sha256 and webhook_secret"
        )
    entries = data["tenants"]
    if not isinstance(entries, dict):
        raise KeysFileError(f"{path}: 'tenants' must map tenant names to entries")

    tenants: dict[str, Tenant] = {}
    owner_of_hash: dict[str, str] = {}
    for name, entry in entries.items():
        if not TENANT_RE.match(name):
            raise KeysFileError(
                f"{path}: tenant name {name!r} is not allowed: use 1 to 64 lowercase letters, "
                "digits, '_' or '-', starting with a letter or digit"
            )
        if not isinstance(entry, dict):
            raise KeysFileError(
                f"{path}: tenant {name!r}: expected an entry with key_sha256 and webhook_secret"
            )
        missing = [f for f in _FIELDS if f not in entry]
        if missing:
            raise KeysFileError(f"{path}: tenant {name!r}: missing {' and '.join(missing)}")
        digest, secret = entry["key_sha256"], entry["webhook_secret"]
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            # The value is not echoed: a plain key pasted here by mistake must not reach logs.
            what = f"a {len(digest)}-character string" if isinstance(digest, str) else "no string"
            raise KeysFileError(
                f"{path}: tenant {name!r}: key_sha256 must be 64 lowercase hex digits (the "
                f"sha256 of the key, as `regionfarm keys add` writes it), got {what}"
            )
        if not isinstance(secret, str) or not secret:
            raise KeysFileError(
                f"{path}: tenant {name!r}: webhook_secret must be a non-empty string"
            )
        if digest in owner_of_hash:
            raise KeysFileError(
                f"{path}: tenants {owner_of_hash[digest]!r} and {name!r} have the same "
                "key_sha256; each tenant needs its own key (`regionfarm keys add TENANT`)"
            )
        owner_of_hash[digest] = name
        tenants[name] = Tenant(name=name, key_sha256=digest, webhook_secret=secret)
    return tenants


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
        # An empty file (e.g. made with `touch`) is a file with no tenants yet.
        tenants = _parse(text, path) if text.strip() else {}
        previous = tenants.get(tenant)
        secret = previous.webhook_secret if previous else _new_webhook_secret()
        tenants[tenant] = Tenant(name=tenant, key_sha256=hash_key(key), webhook_secret=secret)
        is_toml = path.suffix.lower() == ".toml"
        _write_atomically(path, _dump_toml(tenants) if is_toml else _dump_json(tenants))
    return key


def _new_webhook_secret() -> str:
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


def _dump_json(tenants: dict[str, Tenant]) -> str:
    entries = {
        t.name: {"key_sha256": t.key_sha256, "webhook_secret": t.webhook_secret}
        for t in tenants.values()
    }
    return json.dumps({"tenants": entries}, indent=2) + "\n"


def _toml_string(value: str) -> str:
    """A TOML basic string; escapes what TOML requires (quote, backslash, control chars)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _dump_toml(tenants: dict[str, Tenant]) -> str:
    lines = [
        "# regionfarm API keys: the sha256 of each tenant's key (the keys themselves are not",
        "# stored) and its webhook secret. Written by `regionfarm keys add`.",
    ]
    if not tenants:
        lines += ["", "[tenants]"]
    for t in tenants.values():
        # Tenant names match TENANT_RE, which only admits characters of TOML bare keys.
        lines += [
            "",
            f"[tenants.{t.name}]",
            f"key_sha256 = {_toml_string(t.key_sha256)}",
            f"webhook_secret = {_toml_string(t.webhook_secret)}",
        ]
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old file or the new one, never half."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class KeyRing:
    """The API's view of the keys file: token -> Tenant, reloaded when the file changes.

    ``KeyRing(None)`` holds no tenants: auth is off. The file is read once at construction
    (a missing or malformed file raises KeysFileError, so a misconfigured API fails at
    start); afterwards :meth:`refresh` (also called by :meth:`lookup`) re-reads it when its
    mtime, size or inode changed, checking at most once per `check_interval` seconds, so
    `regionfarm keys add` takes effect on a running API without a restart. A file that goes
    missing or malformed later keeps the last good tenants (and logs a warning) rather than
    locking everybody out or opening the door.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path) if path is not None else None
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._by_hash: dict[str, Tenant] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = clock()
        if self.path is not None:
            self._stamp = self._stat()
            self._by_hash = load_keys(self.path)

    @classmethod
    def from_settings(cls, api_keys_file: str | os.PathLike[str] | None, api_keys: str | None
                      ) -> KeyRing:  # fmt: skip
        """The farm's keys: from the keys file, or from REGIONFARM_API_KEYS (the same JSON
        shape, for platforms that hand secrets over as environment variables). Both at once
        is refused: one source of truth."""
        if api_keys is None:
            return cls(api_keys_file)
        if api_keys_file is not None:
            raise KeysFileError(
                "both REGIONFARM_API_KEYS and REGIONFARM_API_KEYS_FILE are set: keep one"
            )
        ring = cls(None)
        tenants = _parse(api_keys, Path("REGIONFARM_API_KEYS.json"))
        ring._by_hash = {t.key_sha256: t for t in tenants.values()}  # fixed: no file to reload
        return ring

    @property
    def configured(self) -> bool:
        """True when a keys file was given (even one with no tenants yet)."""
        return self.path is not None

    @property
    def enabled(self) -> bool:
        """True when there is at least one tenant, i.e. requests must carry a key."""
        self.refresh()
        return bool(self._by_hash)

    def tenants(self) -> list[Tenant]:
        """Every tenant, in file order."""
        self.refresh()
        return list(self._by_hash.values())

    def by_name(self, name: str) -> Tenant | None:
        """The tenant called `name` (workers use it to find a webhook secret), or None."""
        self.refresh()
        return next((t for t in self._by_hash.values() if t.name == name), None)

    def lookup(self, token: str | None) -> Tenant | None:
        """The tenant whose key is `token`, or None. Only the hash of the token is looked up,
        so no comparison of secret bytes happens here."""
        if not token:
            return None
        self.refresh()
        return self._by_hash.get(hash_key(token))

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the file if it changed since the last load; True when it was reloaded.
        Without `force`, the file is looked at most once per `check_interval` seconds."""
        if self.path is None:
            return False
        now = self._clock()
        if not force and now - self._checked_at < self.check_interval:
            return False
        with self._lock:
            self._checked_at = now
            try:
                stamp = self._stat()
            except OSError as exc:
                log.warning("API keys file %s: %s; keeping the keys loaded before", self.path, exc)
                return False
            if stamp == self._stamp and not force:
                return False
            try:
                by_hash = load_keys(self.path)
            except KeysFileError as exc:
                log.warning("%s; keeping the keys loaded before", exc)
                return False
            # One reference swap: concurrent lookups see the old mapping or the new one.
            self._by_hash, self._stamp = by_hash, stamp
            return True

    def _stat(self) -> tuple[int, int, int]:
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is None:
                raise KeysFileError(
                    f"{self.path}: no such keys file; make one with `regionfarm keys add "
                    f"TENANT --file {self.path}` or unset REGIONFARM_API_KEYS_FILE"
                ) from None
            raise
        # The inode is part of the stamp: add_key replaces the file by rename, which changes
        # it even when mtime (coarse on some filesystems) and size happen to be equal.
        return (st.st_mtime_ns, st.st_size, st.st_ino)
