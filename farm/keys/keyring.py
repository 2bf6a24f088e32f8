"""The API's keyring: token -> tenant, from the keys file (reloaded when it changes) or from
REGIONFARM_API_KEYS."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from farm.keys.file import KeysFileError, Tenant, hash_key, load_keys, parse_keys

__all__ = ["KeyRing"]

log = logging.getLogger("farm.keys")  # the package's name, the one operators configure


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
    def from_settings(
        cls,
        api_keys_file: str | os.PathLike[str] | None,
        api_keys: str | None,
        *,
        strict: bool = True,
    ) -> KeyRing:
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
        tenants = parse_keys(api_keys, Path("REGIONFARM_API_KEYS.json"))
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
