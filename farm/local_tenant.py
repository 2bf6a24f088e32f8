"""The `local` tenant of a farm with auth off: its name, and its webhook secret in the data dir."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from farm.keys import new_webhook_secret

__all__ = [
    "LOCAL_TENANT",
    "WEBHOOK_SECRET_FILE",
    "WebhookSecretError",
    "ensure_webhook_secret",
    "read_webhook_secret",
    "webhook_secret_path",
]

LOCAL_TENANT = "local"
"""Every caller's tenant when no API keys were configured at start (auth off)."""
WEBHOOK_SECRET_FILE = "webhook-secret"
"""The file in the data dir that holds the local tenant's webhook secret (mode 0600)."""


class WebhookSecretError(Exception):
    """The secret file cannot be read or made; the message names the file and what to do."""


def webhook_secret_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir).expanduser() / WEBHOOK_SECRET_FILE


def read_webhook_secret(data_dir: str | os.PathLike[str]) -> str | None:
    """The local tenant's webhook secret, or None when the data dir has none yet."""
    path = webhook_secret_path(data_dir)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise WebhookSecretError(f"{path}: cannot read the webhook secret ({exc})") from None
    if not secret or any(ch.isspace() for ch in secret):
        raise WebhookSecretError(
            f"{path}: not a webhook secret (one line, no spaces); delete the file and start "
            "the farm again to make a new one (receivers then need the new secret)"
        )
    return secret


def ensure_webhook_secret(data_dir: str | os.PathLike[str]) -> tuple[str, bool]:
    """The local tenant's webhook secret and whether it was made just now.

    Made once per data dir and kept across restarts: the first call writes a new
    ``whsec_...`` secret to ``<data dir>/webhook-secret`` with mode 0600; later calls (and
    other processes of the farm: the API's `up`, the webhook worker, `regionfarm keys`) read
    it. The file appears complete or not at all (written aside, then linked into place, which
    fails when another process got there first: its secret is the one kept).
    """
    existing = read_webhook_secret(data_dir)
    if existing is not None:
        return existing, False
    path = webhook_secret_path(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WebhookSecretError(
            f"{path}: cannot make the webhook secret ({exc.strerror or exc}); check the data "
            "dir's permissions or pass another --data-dir"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)  # mkstemp makes it 0600 already; say so anyway
            f.write(new_webhook_secret() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            made = True
        except FileExistsError:
            made = False  # another process made it between our read and now: keep theirs
        except OSError as exc:  # a filesystem without hard links (some mounts)
            raise WebhookSecretError(
                f"{path}: cannot make the webhook secret ({exc.strerror or exc}); put the data "
                "dir on a local filesystem, or write a secret (one line, whsec_...) there"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    secret = read_webhook_secret(data_dir)
    if secret is None:
        raise WebhookSecretError(f"{path}: the webhook secret vanished as it was made")
    return secret, made
