"""Weights checked against the sha256 digests recorded next to them (`SHA256SUMS`).

A model directory holding a `SHA256SUMS` file (the format `sha256sum` writes and `sha256sum -c`
reads) is loaded only if every file it lists has its digest; so is a single weights file that
the `SHA256SUMS` of its directory lists. The shipped toy models carry one; any model directory
may."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ModelUnavailable

SUMS_FILE = "SHA256SUMS"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sums(sums: Path) -> dict[str, str]:
    """{relative path: digest} from a SHA256SUMS file."""
    entries = {}
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ModelUnavailable(
                f"{sums}: line {number} is not '<sha256>  <file>'; regenerate the file with "
                "sha256sum"
            )
        entries[name.strip()] = digest.lower()
    return entries


def verify(source: str) -> None:
    """Raise ModelUnavailable if a weights file of `source` (a directory or one file) differs
    from its recorded digest; do nothing where no digest is recorded."""
    path = Path(source)
    if path.is_dir():
        sums, wanted = path / SUMS_FILE, None
    elif path.is_file():
        sums, wanted = path.parent / SUMS_FILE, path.name
    else:
        return
    if not sums.is_file():
        return
    for name, digest in read_sums(sums).items():
        if wanted is not None and name != wanted:
            continue
        target = sums.parent / name
        if not target.is_file():
            raise ModelUnavailable(
                f"{target} is listed in {sums} but missing; restore the model's files"
            )
        actual = file_digest(target)
        if actual != digest:
            raise ModelUnavailable(
                f"{target} does not match its recorded sha256 ({actual[:12]}... instead of "
                f"{digest[:12]}... in {sums}): the file is damaged or was changed; restore it "
                "(git checkout, or train the model again with its script)"
            )
