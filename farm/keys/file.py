"""The API keys file's format: tenant -> sha256 of its key and its webhook secret, as JSON or
TOML (by suffix); no plain keys. Reading, checking and writing the text."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from schemas.identifiers import check_tenant_name, is_sha256

__all__ = [
    "KeysFileError",
    "Tenant",
    "dump_keys",
    "hash_key",
    "load_keys",
    "parse_keys",
]

# Tenant names (TENANT_RE, check_tenant_name) are defined once, in schemas.identifiers: they
# become parts of storage keys and TOML bare keys.
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
    tenants = parse_keys(text, path)
    return {t.key_sha256: t for t in tenants.values()}


def parse_keys(text: str, path: Path) -> dict[str, Tenant]:
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


def dump_keys(tenants: dict[str, Tenant], path: Path) -> str:
    """The text of a keys file at `path` listing `tenants`: TOML when the suffix is ``.toml``,
    else JSON (as `parse_keys` reads them)."""
    return _dump_toml(tenants) if path.suffix.lower() == ".toml" else _dump_json(tenants)
