"""The local farm's webhook secret: made once in the data dir, private, kept, one per farm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from farm.local_tenant import (
    WebhookSecretError,
    ensure_webhook_secret,
    read_webhook_secret,
    webhook_secret_path,
)


def test_made_once_with_mode_0600_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert read_webhook_secret(data) is None
    secret, made = ensure_webhook_secret(data)
    assert made and secret.startswith("whsec_") and len(secret) > 40
    path = webhook_secret_path(data)
    assert path == data / "webhook-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_webhook_secret(data) == (secret, False)
    assert read_webhook_secret(data) == secret
    # No temporary file is left beside it.
    assert [p.name for p in data.iterdir()] == ["webhook-secret"]
    # Another data dir is another farm, with its own secret.
    assert ensure_webhook_secret(tmp_path / "other")[0] != secret


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    code = (
        "import sys; from farm.local_tenant import ensure_webhook_secret; "
        "print(ensure_webhook_secret(sys.argv[1])[0])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    outputs = {proc.communicate(timeout=60)[0].decode().strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs == {webhook_secret_path(tmp_path).read_text().strip()}


def test_a_damaged_secret_file_is_reported_not_replaced(tmp_path: Path) -> None:
    path = webhook_secret_path(tmp_path)
    path.write_text("two words\n")
    with pytest.raises(WebhookSecretError, match="webhook-secret"):
        ensure_webhook_secret(tmp_path)
    assert path.read_text() == "two words\n"
    path.write_text("")
    with pytest.raises(WebhookSecretError, match="delete the file"):
        read_webhook_secret(tmp_path)
