"""The API keys file: tenant -> sha256 of its key, and its webhook secret; no plain keys."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.identifiers import TENANT_RE, check_tenant_name, is_sha256

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
    "new_webhook_secret",
]

log = logging.getLogger(__name__)

# Tenant names (TENANT_RE, check_tenant_name) are defined once, in schemas.identifiers: they
# become parts of storage keys and TOML bare keys.
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
    """The keys file is missing or malformed; the message names the file and the problem.
    `reason` is ``missing``, ``unreadable`` or ``invalid``: what /readyz may say in public
    (the message can name tenants)."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def hash_key(key: str) -> str:
    """The lowercase hex sha256 of an API key, as the keys file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(path: str | os.PathLike[str]) -> dict[str, Tenant]:
    """The tenants of the keys file at `path`, keyed by key_sha256 (the API's per-request
    lookup: sha256(bearer token) -> Tenant). JSON, or TOML when the suffix is ``.toml``.

    An empty file (or one of whitespace only, as `touch` or `: >` leave it) has no tenants.
    Raises KeysFileError for a missing or unreadable file, bad JSON/TOML, a bad tenant name, a
    key_sha256 that is not 64 lowercase hex digits, two tenants with one hash, missing fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeysFileError(
            f"{path}: no such keys file; make one with `regionfarm keys add TENANT --file "
            f"{path}` or point REGIONFARM_API_KEYS_FILE at the right file",
            reason="missing",
        ) from None
    except UnicodeDecodeError as exc:
        raise KeysFileError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise KeysFileError(
            f"{path}: cannot read the keys file ({exc.strerror or exc})", reason="unreadable"
        ) from None
    tenants = _parse(text, path)
    return {t.key_sha256: t for t in tenants.values()}


def _parse(text: str, path: Path) -> dict[str, Tenant]:
    """The tenants in a keys file's text, by name, in file order; raises KeysFileError.
    Empty text (a file made with `touch`, or emptied with `: >`) has no tenants yet."""
    if not text.strip():
        return {}
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
        try:
            check_tenant_name(name)
        except ValueError as exc:
            raise KeysFileError(f"{path}: {exc}") from None
        if not isinstance(entry, dict):
            raise KeysFileError(
                f"{path}: tenant {name!r}: expected an entry with key_sha256 and webhook_secret"
            )
        missing = [f for f in _FIELDS if f not in entry]
        if missing:
            raise KeysFileError(f"{path}: tenant {name!r}: missing {' and '.join(missing)}")
        digest, secret = entry["key_sha256"], entry["webhook_secret"]
        if not is_sha256(digest):
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
        tenants = _parse(text, path)
        previous = tenants.get(tenant)
        secret = previous.webhook_secret if previous else new_webhook_secret()
        tenants[tenant] = Tenant(name=tenant, key_sha256=hash_key(key), webhook_secret=secret)
        is_toml = path.suffix.lower() == ".toml"
        _write_atomically(path, _dump_toml(tenants) if is_toml else _dump_json(tenants))
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
    """The API's view of the keys: token -> Tenant, the file reloaded when it changes.

    Whether auth is on (:attr:`configured`) is decided once, when the ring is made, and never
    changes: on with a keys file (even one listing no tenant yet: it admits nobody) or with
    REGIONFARM_API_KEYS, off with neither (``KeyRing(None)``). The file is read at
    construction (a missing or malformed file raises KeysFileError, so a misconfigured API
    fails at start; with ``strict=False`` it is a ring that admits nobody and reports the
    problem, for a process whose file was checked before); afterwards :meth:`refresh` (also called by :meth:`lookup`) re-reads it
    when its mtime, size, inode or ctime changed, at most once per `check_interval` seconds,
    so `regionfarm keys add` takes effect on a running API without a restart. A file emptied
    of tenants admits nobody; a file that goes missing, unreadable or invalid keeps the last
    good tenants, logs the problem once and reports it in :attr:`problem` until it is fixed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        strict: bool = True,
    ):
        self.path = Path(path) if path is not None else None
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._configured = self.path is not None
        self._by_hash: dict[str, Tenant] = {}
        self._stamp: tuple[int, ...] | None = None
        self._problem: KeysFileError | None = None
        self._loaded = self.path is None  # a good load has happened (nothing to load: True)
        self._checked_at = clock()
        if self.path is not None:
            try:
                stamp: tuple[int, ...] | None = self._stat()  # first: a later change shows
            except OSError:
                stamp = None  # load_keys says what is wrong
            try:
                self._by_hash = load_keys(self.path)
                self._loaded = True
            except KeysFileError as exc:
                if strict:
                    raise
                self._report(exc)  # auth on, nobody admitted until the file is fixed
            self._stamp = stamp

    @classmethod
    def from_settings(cls, api_keys_file: str | os.PathLike[str] | None, api_keys: str | None,
                      *, strict: bool = True) -> KeyRing:  # fmt: skip
        """The farm's keys: from the keys file, or from REGIONFARM_API_KEYS (the same JSON
        shape, for platforms that hand secrets over as environment variables). Both at once
        is refused: one source of truth. `strict` as for the constructor (the file only)."""
        if api_keys is None:
            return cls(api_keys_file, strict=strict)
        if api_keys_file is not None:
            raise KeysFileError(
                "both REGIONFARM_API_KEYS and REGIONFARM_API_KEYS_FILE are set: keep one"
            )
        ring = cls(None)
        tenants = _parse(api_keys, Path("REGIONFARM_API_KEYS.json"))
        ring._by_hash = {t.key_sha256: t for t in tenants.values()}  # fixed: no file to reload
        ring._configured = True
        ring._loaded = True
        return ring

    @property
    def configured(self) -> bool:
        """True when keys are configured, i.e. auth is on: every /v1 request needs a key of a
        listed tenant. Fixed at construction; a keys file with no tenant still counts."""
        return self._configured

    @property
    def problem(self) -> KeysFileError | None:
        """What is wrong with the keys file since the last good load (its `reason`: missing,
        unreadable, invalid), or None. While it is set, the last good keys stay in use."""
        self.refresh()
        return self._problem

    @property
    def loaded(self) -> bool:
        """True once a good set of keys was loaded (always, with no keys file to load): while
        :attr:`problem` is set, False means this process admits nobody (it started with a
        broken file), True that it serves with the last good keys."""
        return self._loaded

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
        """Reload the file if it changed since the last look; True when it was reloaded.
        Without `force`, the file is looked at most once per `check_interval` seconds."""
        if self.path is None:
            return False
        now = self._clock()
        if not force and now - self._checked_at < self.check_interval:
            return False
        with self._lock:
            self._checked_at = now
            try:
                stamp: tuple[int, ...] | None = self._stat()
            except OSError:
                stamp = None  # missing or not stat-able: load_keys below says what is wrong
            if stamp is not None and stamp == self._stamp and not force:
                return False
            try:
                by_hash = load_keys(self.path)
            except KeysFileError as exc:
                # The stamp of the bad file is kept, so it is read again only once it changes.
                self._stamp = stamp
                self._report(exc)
                return False
            # One reference swap: concurrent lookups see the old mapping or the new one.
            self._by_hash, self._stamp, self._loaded = by_hash, stamp, True
            if self._problem is not None:
                log.warning(
                    "API keys file %s is good again: %d tenant(s) loaded", self.path, len(by_hash)
                )
                self._problem = None
            if not by_hash:
                log.warning(
                    "API keys file %s lists no tenant: every /v1 request is refused (401) "
                    "until `regionfarm keys add TENANT`",
                    self.path,
                )
            return True

    def _report(self, problem: KeysFileError) -> None:
        """Keep `problem` for :attr:`problem`; log it once, not at every look at the file."""
        if self._problem is None or str(problem) != str(self._problem):
            log.error(
                "%s; the API keeps the %d tenant(s) loaded before until the file is fixed "
                "(GET /readyz reports it)",
                problem,
                len(self._by_hash),
            )
        self._problem = problem

    def _stat(self) -> tuple[int, ...]:
        assert self.path is not None
        st = self.path.stat()
        # The inode is part of the stamp: add_key replaces the file by rename, which changes
        # it even when mtime (coarse on some filesystems) and size happen to be equal. The
        # ctime is too: `chmod` changes it (and whether the file can be read), not the mtime.
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
