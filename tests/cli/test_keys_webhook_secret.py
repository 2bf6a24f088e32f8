"""`regionfarm keys webhook-secret`: the local farm's secret, or a keyed tenant's, on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from farm.keys import add_key

BIN = Path(sys.executable).parent / "regionfarm"


def _keys(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    return subprocess.run(
        [str(BIN), "keys", *args],
        cwd=cwd,
        env={**clean, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_local_secret_is_made_once_and_printed_alone_on_stdout(tmp_path: Path) -> None:
    first = _keys("webhook-secret", "--data-dir", "farm", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip()
    assert first.stdout == secret + "\n" and secret.startswith("whsec_")
    assert "made just now" in first.stderr and "webhook-secret" in first.stderr
    stored = tmp_path / "farm" / "webhook-secret"
    assert stored.read_text().strip() == secret and stored.stat().st_mode & 0o777 == 0o600
    # Again, and through REGIONFARM_DATA_DIR, and as tenant "local": the same secret, kept.
    again = _keys("webhook-secret", cwd=tmp_path, REGIONFARM_DATA_DIR=str(tmp_path / "farm"))
    assert again.returncode == 0 and again.stdout.strip() == secret
    assert "made just now" not in again.stderr
    named = _keys("webhook-secret", "local", "--data-dir", "farm", cwd=tmp_path)
    assert named.returncode == 0 and named.stdout.strip() == secret
    # The default data dir is ./.regionfarm, as for `regionfarm up`.
    default = _keys("webhook-secret", cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / ".regionfarm" / "webhook-secret").is_file()


def test_a_keyed_tenants_secret_comes_from_the_keys_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "farm" / "api-keys.json"  # the file `up --data-dir farm` reads
    add_key(keys_file, "acme")
    expected = json.loads(keys_file.read_text())["tenants"]["acme"]["webhook_secret"]
    done = _keys("webhook-secret", "acme", "--data-dir", "farm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"
    other = tmp_path / "other.json"
    add_key(other, "beta")
    by_file = _keys("webhook-secret", "beta", "--file", str(other), cwd=tmp_path)
    assert (
        by_file.stdout.strip() == json.loads(other.read_text())["tenants"]["beta"]["webhook_secret"]
    )


def test_an_unknown_or_invalid_tenant_exits_2_naming_it(tmp_path: Path) -> None:
    add_key(tmp_path / "keys.json", "acme")
    unknown = _keys("webhook-secret", "nobody", "--file", "keys.json", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "TENANT" in unknown.stderr and "'nobody'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    invalid = _keys("webhook-secret", "Bad/Name", cwd=tmp_path)
    assert invalid.returncode == 2 and "TENANT" in invalid.stderr and invalid.stdout == ""
    assert not (tmp_path / ".regionfarm").exists()  # nothing was made for a refused call


def test_help_names_the_command_and_the_signature() -> None:
    listing = subprocess.run(
        [str(BIN), "keys", "--help"], check=False, capture_output=True, text=True, timeout=60
    )
    assert "webhook-secret" in listing.stdout
    detail = subprocess.run(
        [str(BIN), "keys", "webhook-secret", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Regionfarm-Signature" in detail.stdout and "HMAC-SHA256" in detail.stdout
