"""`regionfarm keys` and farm.keys: the API keys file holds hashes only and never loses entries."""

from __future__ import annotations

import argparse
import json
import stat
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli import keys_cmd
from farm.keys import KeyRing, KeysFileError, Tenant, add_key, hash_key, load_keys


def run_keys(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    keys_cmd.add_parsers(sub)
    args = parser.parse_args(["keys", *argv])
    return args.handler(args)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("REGIONFARM_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("REGIONFARM_DATA_DIR", str(tmp_path / "data"))


def add(capsys, path: Path, tenant: str) -> str:
    assert run_keys("add", tenant, "--file", str(path)) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # the key alone on its own line, for scripts
    return out.strip()


def test_add_prints_a_key_that_only_its_hash_finds(capsys, tmp_path):
    path = tmp_path / "keys.json"
    key = add(capsys, path, "acme")
    assert key.startswith("rf_") and len(key) > 40
    text = path.read_text()
    assert key not in text
    assert hash_key(key) in text
    tenants = load_keys(path)
    tenant = tenants[hash_key(key)]
    assert tenant.name == "acme" and tenant.webhook_secret.startswith("whsec_")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stderr_says_where_it_wrote_and_that_the_key_is_not_stored(capsys, tmp_path):
    path = tmp_path / "elsewhere" / "keys.json"
    assert run_keys("add", "acme", "--file", str(path)) == 0
    err = capsys.readouterr().err
    assert str(path) in err and "not stored in plain text" in err
    assert f"REGIONFARM_API_KEYS_FILE={path}" in err  # not the default file: say how to use it


def test_default_file_is_in_the_data_dir_and_needs_no_hint(capsys, tmp_path):
    assert run_keys("add", "acme") == 0
    captured = capsys.readouterr()
    path = tmp_path / "data" / "api-keys.json"
    assert load_keys(path)[hash_key(captured.out.strip())].name == "acme"
    assert "REGIONFARM_API_KEYS_FILE" not in captured.err


def test_env_keys_file_is_the_default(capsys, monkeypatch, tmp_path):
    path = tmp_path / "env-keys.json"
    monkeypatch.setenv("REGIONFARM_API_KEYS_FILE", str(path))
    key = add(capsys, path, "acme")
    assert run_keys("add", "beta") == 0
    assert {t.name for t in load_keys(path).values()} == {"acme", "beta"}
    assert hash_key(key) in load_keys(path)


def test_a_second_tenant_keeps_the_first_and_readding_replaces_the_hash_only(capsys, tmp_path):
    path = tmp_path / "keys.json"
    first = add(capsys, path, "acme")
    beta = add(capsys, path, "beta")
    secret = load_keys(path)[hash_key(first)].webhook_secret
    again = add(capsys, path, "acme")
    tenants = load_keys(path)
    assert hash_key(first) not in tenants  # a tenant has one key: the old one stops working
    assert tenants[hash_key(again)] == Tenant("acme", hash_key(again), secret)
    assert tenants[hash_key(beta)].name == "beta"
    assert list(json.loads(path.read_text())["tenants"]) == ["acme", "beta"]


def test_readding_says_the_previous_key_stops_working(capsys, tmp_path):
    path = tmp_path / "keys.json"
    add(capsys, path, "acme")
    assert run_keys("add", "acme", "--file", str(path)) == 0
    assert "previous key of 'acme' no longer works" in capsys.readouterr().err


def test_toml_round_trip(capsys, tmp_path):
    path = tmp_path / "keys.toml"
    a = add(capsys, path, "acme")
    b = add(capsys, path, "b-2_x")
    data = tomllib.loads(path.read_text())
    assert set(data["tenants"]) == {"acme", "b-2_x"}
    assert data["tenants"]["acme"]["key_sha256"] == hash_key(a)
    tenants = load_keys(path)
    assert tenants[hash_key(b)].name == "b-2_x"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_toml_keeps_a_hand_written_secret_with_quotes(capsys, tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(
        '[tenants.acme]\nkey_sha256 = "' + "0" * 64 + '"\n'
        "webhook_secret = 'has \"quotes\" and \\\\ and ünïcode'\n"
    )
    add(capsys, path, "beta")
    acme = next(t for t in load_keys(path).values() if t.name == "acme")
    assert acme.webhook_secret == 'has "quotes" and \\\\ and ünïcode'


BAD_TENANTS = ["acme\n", "a/b", "..", "../x", "Acme", "x" * 65, "-x", "a b", "", "ä", "\nacme"]


@pytest.mark.parametrize("tenant", BAD_TENANTS)
def test_bad_tenant_exits_2_naming_the_rule_and_writes_nothing(capsys, tmp_path, tenant):
    path = tmp_path / "keys.json"
    assert run_keys("add", "--file", str(path), "--", tenant) == 2
    captured = capsys.readouterr()
    assert "TENANT" in captured.err and captured.out == ""
    assert "[a-z0-9][a-z0-9_-]{0,63}" in captured.err and "1 to 64 lowercase" in captured.err
    assert not path.exists()
    # An existing file is not touched either (and no lock file is made beside it).
    path.write_text('{"tenants": {}}')
    assert run_keys("add", "--file", str(path), "--", tenant) == 2
    assert path.read_text() == '{"tenants": {}}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_the_cli_refuses_what_the_keys_file_would_refuse(capsys, tmp_path):
    # "acme\n" passed the old `^...$` + .match check and made a keys file that did not load.
    path = tmp_path / "keys.json"
    add(capsys, path, "acme")
    for name in BAD_TENANTS:
        run_keys("add", "--file", str(path), "--", name)
    assert [t.name for t in load_keys(path).values()] == ["acme"]
    with pytest.raises(ValueError, match="not allowed"):
        add_key(path, "acme\n")


def test_add_to_a_corrupt_file_exits_2_and_leaves_it(capsys, tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"tenants": {')
    assert run_keys("add", "acme", "--file", str(path)) == 2
    assert str(path) in capsys.readouterr().err
    assert path.read_text() == '{"tenants": {'


def test_list_prints_names_only(capsys, tmp_path):
    path = tmp_path / "keys.json"
    add(capsys, path, "zeta")
    add(capsys, path, "acme")
    assert run_keys("list", "--file", str(path)) == 0
    out = capsys.readouterr().out
    assert out.split() == ["acme", "zeta"]
    for tenant in load_keys(path).values():
        assert tenant.key_sha256 not in out and tenant.webhook_secret not in out


def test_list_of_a_missing_file_exits_2(capsys, tmp_path):
    assert run_keys("list", "--file", str(tmp_path / "none.json")) == 2
    assert "none.json" in capsys.readouterr().err


def test_concurrent_add_key_calls_lose_nothing(tmp_path):
    path = tmp_path / "keys.json"
    barrier = threading.Barrier(8)  # all eight read-modify-write at the same moment

    def worker(i: int) -> str:
        barrier.wait()
        return add_key(path, f"t{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = {f"t{i}": key for i, key in enumerate(pool.map(worker, range(8)))}
    tenants = load_keys(path)
    assert {t.name for t in tenants.values()} == set(keys)
    for name, key in keys.items():
        assert tenants[hash_key(key)].name == name


def test_keyring_picks_up_a_new_key_after_the_file_changes(tmp_path):
    path = tmp_path / "keys.json"
    first = add_key(path, "acme")
    now = [0.0]
    ring = KeyRing(path, clock=lambda: now[0])
    assert ring.configured and ring.problem is None
    assert ring.lookup(first).name == "acme"
    assert ring.lookup("rf_wrong") is None and ring.lookup("") is None and ring.lookup(None) is None

    second = add_key(path, "beta")
    now[0] = 0.5
    assert ring.lookup(second) is None  # looked at most once per second
    now[0] = 1.5
    assert ring.lookup(second).name == "beta"
    assert ring.by_name("acme").key_sha256 == hash_key(first)
    assert [t.name for t in ring.tenants()] == ["acme", "beta"]

    replaced = add_key(path, "acme")
    now[0] = 3.0
    assert ring.lookup(first) is None and ring.lookup(replaced).name == "acme"


def test_keyring_keeps_the_last_good_keys_when_the_file_breaks(tmp_path, caplog):
    path = tmp_path / "keys.json"
    key = add_key(path, "acme")
    ring = KeyRing(path, check_interval=0)
    path.write_text("{ not json")
    assert ring.refresh() is False
    assert ring.lookup(key).name == "acme"
    assert str(path) in caplog.text
    assert ring.configured and ring.problem.reason == "invalid"


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_broken_keys_file_is_logged_once_and_reported_until_it_is_fixed(tmp_path, caplog):
    path = tmp_path / "keys.json"
    key = add_key(path, "acme")
    ring = KeyRing(path, check_interval=0)
    with caplog.at_level("WARNING", logger="farm.keys"):
        path.write_text('{"tenants": {"acme": ')
        for _ in range(50):  # fifty requests while it is broken: one log line
            assert ring.lookup(key).name == "acme"
        assert len(_errors(caplog)) == 1 and str(path) in _errors(caplog)[0]
        assert ring.problem.reason == "invalid" and str(path) in str(ring.problem)

        path.unlink()  # another problem: logged once more, still the last good keys
        for _ in range(20):
            assert ring.lookup(key).name == "acme"
        assert len(_errors(caplog)) == 2 and ring.problem.reason == "missing"

        path.mkdir()  # in the way of the file: it cannot be read
        assert ring.lookup(key).name == "acme" and ring.problem.reason == "unreadable"
        path.rmdir()

        fixed = add_key(path, "beta")
        assert ring.lookup(fixed).name == "beta" and ring.problem is None
        assert ring.lookup(key) is None  # the fixed file has no acme: its key is gone
        assert "good again" in caplog.text
        assert len(_errors(caplog)) == 3


def test_a_chmod_that_makes_the_file_unreadable_is_seen(tmp_path, monkeypatch):
    # chmod changes no mtime or size, only the ctime, which is part of the stamp.
    path = tmp_path / "keys.json"
    key = add_key(path, "acme")
    ring = KeyRing(path, check_interval=0)
    real_read = Path.read_text

    def read(self, *args, **kwargs):
        if self == path and not self.stat().st_mode & stat.S_IRUSR:
            raise PermissionError(13, "Permission denied")  # what a non-root reader gets
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read)
    path.chmod(0o200)
    assert ring.lookup(key).name == "acme" and ring.problem.reason == "unreadable"
    path.chmod(0o600)
    assert ring.lookup(key).name == "acme" and ring.problem is None


def test_a_keys_file_emptied_of_tenants_admits_nobody_and_stays_configured(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "acme")
    ring = KeyRing(path, check_interval=0)
    for empty in ('{"tenants": {}}', "", "  \n"):
        path.write_text(empty)
        assert ring.lookup(key) is None, repr(empty)
        assert ring.configured and ring.tenants() == [] and ring.problem is None
        add_key(path, "acme")  # back to one tenant for the next round
        assert ring.tenants() != []


def test_keys_from_the_environment_are_configured_even_with_no_tenant():
    ring = KeyRing.from_settings(None, '{"tenants": {}}')
    assert ring.configured and ring.tenants() == [] and ring.problem is None


def test_keyring_without_a_file_is_off(tmp_path):
    ring = KeyRing(None)
    assert not ring.configured and ring.problem is None
    assert ring.lookup("anything") is None and ring.refresh() is False
    with pytest.raises(KeysFileError, match="no such keys file"):
        KeyRing(tmp_path / "missing.json")


def test_keys_file_error_names_the_file_for_corrupt_json(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{\n  "tenants": {\n    "acme": \n  }\n}\n')
    with pytest.raises(KeysFileError) as info:
        load_keys(path)
    assert str(path) in str(info.value) and "line 4" in str(info.value)


def test_keys_file_error_names_the_file_for_corrupt_toml(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text("[tenants.acme]\nkey_sha256 = \n")
    with pytest.raises(KeysFileError, match="not valid TOML") as info:
        load_keys(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def entry(digest: str = "a" * 64, secret: str = "whsec_x") -> dict:
    return {"key_sha256": digest, "webhook_secret": secret}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"tenants": {"acme": entry("A" * 64)}}, "64 lowercase hex"),
        ({"tenants": {"acme": entry("rf_plainkeypastedhere")}}, "64 lowercase hex"),
        ({"tenants": {"acme": entry("a" * 63)}}, "64 lowercase hex"),
        ({"tenants": {"Acme": entry()}}, "'Acme' is not allowed"),
        ({"tenants": {"a": entry(), "b": entry()}}, "'a' and 'b' have the same key_sha256"),
        ({"tenants": {"acme": {"key_sha256": "a" * 64}}}, "missing webhook_secret"),
        ({"tenants": {"acme": {}}}, "missing key_sha256 and webhook_secret"),
        ({"tenants": {"acme": "a" * 64}}, "expected an entry"),
        ({"tenants": []}, "'tenants' must map"),
        ({}, '"tenants" object'),
    ],
)
def test_keys_file_error_names_the_file_and_the_problem(tmp_path, data, problem):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(data))
    with pytest.raises(KeysFileError) as info:
        load_keys(path)
    assert str(path) in str(info.value) and problem in str(info.value)
    assert "rf_plainkeypastedhere" not in str(info.value)  # a pasted key is not echoed


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(KeysFileError, match="missing.json: no such keys file"):
        load_keys(tmp_path / "missing.json")


def test_an_empty_tenants_table_loads_as_no_tenants_and_auth_stays_on(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"tenants": {}}')
    assert load_keys(path) == {}
    assert KeyRing(path).configured  # a keys file with no tenant yet: auth on, nobody admitted
    path.write_text("")  # as `touch` makes it
    assert load_keys(path) == {} and KeyRing(path).configured


def test_a_keys_file_with_no_tenant_is_auth_on_for_the_bind_check(tmp_path, capsys):
    from cli.api_cmd import _check_bind
    from schemas import Settings

    path = tmp_path / "keys.json"
    path.write_text('{"tenants": {}}')
    with_file = Settings(api_keys_file=path, api_keys=None, data_dir=tmp_path)
    assert _check_bind(with_file, "0.0.0.0", False) is None  # auth on: nobody is admitted
    without = Settings(api_keys_file=None, api_keys=None, data_dir=tmp_path)
    assert _check_bind(without, "0.0.0.0", False) == 2
    assert "--insecure" in capsys.readouterr().err
    assert _check_bind(without, "127.0.0.1", False) is None


def test_the_regionfarm_command_refuses_bad_names_with_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    binary = Path(sys.executable).parent / "regionfarm"
    path = tmp_path / "keys.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    for name in ("acme\n", "a/b", "..", "Acme", "x" * 65):
        argv = [str(binary), "keys", "add", "--file", str(path), "--", name]
        done = subprocess.run(argv, env=env, check=False, capture_output=True, text=True)
        assert done.returncode == 2, (name, done.stderr)
        assert "[a-z0-9][a-z0-9_-]{0,63}" in done.stderr and "Traceback" not in done.stderr
        assert done.stdout == "" and not path.exists()
