"""`regionfarm keys add TENANT`, `keys list` and `keys webhook-secret`: the API keys file, and
the webhook secrets that receivers verify signatures with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from cli.api_cmd import DEFAULT_KEYS_FILE
from farm.keys import KeysFileError, add_key, check_tenant_name, load_keys
from farm.local_tenant import (
    LOCAL_TENANT,
    WebhookSecretError,
    ensure_webhook_secret,
    webhook_secret_path,
)
from schemas import Settings
from schemas.identifiers import TENANT_PATTERN

EXIT_ERROR, EXIT_BAD_INPUT = 1, 2
DEFAULT_FILE_NAME = DEFAULT_KEYS_FILE


def add_parsers(sub) -> None:
    p = sub.add_parser("keys", help="make API keys for tenants (the keys file)")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    file_help = (
        "the keys file (.json, or .toml); default: REGIONFARM_API_KEYS_FILE, else "
        f"<REGIONFARM_DATA_DIR>/{DEFAULT_FILE_NAME} (data dir default ./.regionfarm)"
    )

    add = keys_sub.add_parser(
        "add",
        help="make a new API key for TENANT and print it once",
        description="Make a new API key for TENANT, print it once on stdout and write its "
        "sha256 (and a webhook secret) into the keys file. A tenant has one key: a new key "
        "replaces the old one, which stops working.",
    )
    add.add_argument("tenant", metavar="TENANT", help=f"tenant name: {TENANT_PATTERN}")
    add.add_argument("--file", type=Path, metavar="PATH", help=file_help)
    add.set_defaults(handler=run_add)

    ls = keys_sub.add_parser("list", help="print the tenants in the keys file")
    ls.add_argument("--file", type=Path, metavar="PATH", help=file_help)
    ls.set_defaults(handler=run_list)

    hook = keys_sub.add_parser(
        "webhook-secret",
        help="print the secret that signs a tenant's webhooks (default: the local farm's)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""Print the webhook secret that signs TENANT's webhooks, from the keys file.

With no TENANT (or {LOCAL_TENANT!r} when the keys file has no such tenant): the secret of
the local farm, where auth is off and every caller is tenant {LOCAL_TENANT!r}. It is kept in
<data dir>/webhook-secret (mode 0600), made there if missing; `regionfarm up` prints it at
start.

Every webhook carries the header
  Regionfarm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
keyed by this secret: receivers compute the same HMAC and compare.""",
    )
    hook.add_argument(
        "tenant", metavar="TENANT", nargs="?", help="a tenant of the keys file (default: local)"
    )
    hook.add_argument("--file", type=Path, metavar="PATH", help=file_help)
    hook.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the local farm's data dir (default REGIONFARM_DATA_DIR or ./.regionfarm)",
    )
    hook.set_defaults(handler=run_webhook_secret)


def fail(message: str, code: int) -> int:
    print(f"regionfarm: {message}", file=sys.stderr)
    return code


def _settings_paths() -> tuple[Path | None, Path]:
    """(REGIONFARM_API_KEYS_FILE or None, <data dir>/api-keys.json), from the environment."""
    settings = Settings()
    return settings.api_keys_file, settings.data_dir / DEFAULT_FILE_NAME


def resolve_keys_file(file: Path | None) -> tuple[Path, Path]:
    """(the file to use, the file the farm reads without --file); raises ValueError when the
    REGIONFARM_* environment is invalid."""
    try:
        env_file, data_dir_file = _settings_paths()
    except ValidationError as exc:
        problems = "; ".join(
            f"REGIONFARM_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ValueError(f"invalid environment: {problems}") from None
    default = env_file or data_dir_file
    return (file or default), default


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def run_add(args: argparse.Namespace) -> int:
    try:
        check_tenant_name(args.tenant)
    except ValueError as exc:
        return fail(f"TENANT: {exc}", EXIT_BAD_INPUT)
    try:
        path, default = resolve_keys_file(args.file)
    except ValueError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    # Only for the message below; add_key itself re-reads the file under its lock.
    try:
        had_key = path.exists() and any(t.name == args.tenant for t in load_keys(path).values())
    except KeysFileError:
        had_key = False  # add_key reports the problem with the file
    try:
        key = add_key(path, args.tenant)
    except KeysFileError as exc:
        return fail(f"{exc}\nFix or move the file, or pass --file PATH.", EXIT_BAD_INPUT)
    except OSError as exc:
        return fail(f"{path}: cannot write the keys file ({exc.strerror or exc})", EXIT_ERROR)

    # The key alone on stdout, so that `KEY=$(regionfarm keys add acme)` captures it.
    print(key, flush=True)
    replaced = f"; the previous key of {args.tenant!r} no longer works" if had_key else ""
    print(
        f"regionfarm: wrote the sha256 of a new key for tenant {args.tenant!r} to {path}"
        f"{replaced}. The key itself is not stored in plain text: keep it now, it cannot be "
        "shown again.",
        file=sys.stderr,
    )
    if not _same_file(path, default):
        print(
            f"regionfarm: {path} is not the file the farm reads by default ({default}); start "
            f"the API with REGIONFARM_API_KEYS_FILE={path}",
            file=sys.stderr,
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    try:
        path, _ = resolve_keys_file(args.file)
    except ValueError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    try:
        tenants = load_keys(path)
    except KeysFileError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    # Names only: hashes and webhook secrets stay in the file.
    for name in sorted(t.name for t in tenants.values()):
        print(name)
    if not tenants:
        print(f"regionfarm: {path} has no tenants yet", file=sys.stderr)
    return 0


def run_webhook_secret(args: argparse.Namespace) -> int:
    tenant = args.tenant
    if tenant is not None:
        try:
            check_tenant_name(tenant)
        except ValueError as exc:
            return fail(f"TENANT: {exc}", EXIT_BAD_INPUT)
    try:
        resolve_keys_file(args.file)  # refuses an invalid REGIONFARM_* environment
    except ValueError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    settings = Settings()
    data_dir = args.data_dir or settings.data_dir
    # The file that `regionfarm up --data-dir DIR` reads, as for `keys add`.
    path = args.file or settings.api_keys_file or data_dir / DEFAULT_FILE_NAME
    if tenant is not None and (args.file is not None or path.exists()):
        try:
            tenants = load_keys(path)
        except KeysFileError as exc:
            return fail(str(exc), EXIT_BAD_INPUT)
        found = next((t for t in tenants.values() if t.name == tenant), None)
        if found is not None:
            print(found.webhook_secret)
            return 0
    if tenant not in (None, LOCAL_TENANT):
        return fail(
            f"TENANT: {path} has no tenant {tenant!r}: add it with `regionfarm keys add "
            f"{tenant}`, or pass --file with the farm's keys file",
            EXIT_BAD_INPUT,
        )
    try:
        secret, made = ensure_webhook_secret(data_dir)
    except WebhookSecretError as exc:
        return fail(str(exc), EXIT_ERROR)
    # The secret alone on stdout, so that `SECRET=$(regionfarm keys webhook-secret)` takes it.
    print(secret, flush=True)
    print(
        f"regionfarm: the webhook secret of tenant {LOCAL_TENANT!r} (a farm without API keys), "
        f"{'made just now and ' if made else ''}kept in {webhook_secret_path(data_dir)}",
        file=sys.stderr,
    )
    return 0
