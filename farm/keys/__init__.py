"""The API keys: the keys file (tenant -> sha256 of its key, and its webhook secret; no plain
keys), the CLI's writer of it and the API's keyring.

The package's modules each hold one thing: `file` (the file's format), `writer` (`regionfarm
keys add`) and `keyring` (the API's view). Import the names from here."""

from __future__ import annotations

from farm.keys.file import KeysFileError, Tenant, hash_key, load_keys
from farm.keys.keyring import KeyRing
from farm.keys.writer import KEY_PREFIX, WEBHOOK_SECRET_PREFIX, add_key, new_webhook_secret
from schemas.identifiers import TENANT_RE, check_tenant_name

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
