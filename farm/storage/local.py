"""Storage in a local directory: one file per key, its sha256 and content type in a hidden
sidecar, every write atomic."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path

from farm.files import atomic_file
from farm.storage.base import Storage, StoredObject
from farm.storage.errors import ObjectMissing, StorageUnavailable
from farm.storage.keys import norm_prefix

__all__ = ["LocalStorage"]


class LocalStorage(Storage):
    """Files under `root`, one per key; the sha256 and content type in a hidden sidecar."""

    def __init__(self, root: Path, prefix: str = "") -> None:
        # Absolute: a relative root would follow whatever directory a caller runs from (Flask
        # resolves relative send_file paths against the app package, for one).
        self.root, self.prefix = Path(root).resolve(), norm_prefix(prefix)

    def __str__(self) -> str:
        return f"local storage {str(self.root)!r}"

    def _path(self, key: str) -> Path:
        parts = key.split("/") if isinstance(key, str) else [""]
        # A leading "." also keeps keys off the temp and sidecar files, which all start so.
        if any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            raise ValueError(f"invalid storage key {key!r}: empty, absolute, or with . or \\ parts")
        path = self.root.joinpath(*parts)
        # Symlinks inside the root must not lead out of it either.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key {key!r} leads outside {self.root}")
        return path

    @staticmethod
    def _meta(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def _write(self, key: str, data: bytes, content_type: str, digest: str) -> None:
        path, meta_path = self._path(key), self._meta(self._path(key))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as f:
                f.write(data)
                f.flush()
                st = os.fstat(f.fileno())
                # The sidecar names the size and mtime of the data it describes and goes in
                # first (its block ends before the data's): whatever a crash leaves, a head
                # that finds them unequal recomputes the hash.
                meta = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                meta["content_type"] = content_type
                with atomic_file(meta_path) as m:
                    m.write(json.dumps(meta).encode())
        except OSError as exc:
            raise StorageUnavailable(f"{self}: cannot write {key!r}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(f"{self}: no object {key!r}") from exc
        except OSError as exc:
            raise StorageUnavailable(f"{self}: cannot read {key!r}: {exc}") from exc

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            st = path.stat()
            if not path.is_file():
                return None
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            meta = json.loads(self._meta(path).read_bytes())
        except (OSError, ValueError):
            meta = {}
        if meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns:
            return StoredObject(key, st.st_size, meta.get("sha256"), meta.get("content_type"))
        sha = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        return StoredObject(key, st.st_size, sha.hexdigest(), mimetypes.guess_type(path.name)[0])

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            self._meta(path).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"{self}: cannot delete {key!r}: {exc}") from exc

    def _start(self, prefix: str) -> Path:  # the deepest directory holding all of `prefix`
        head = prefix.rpartition("/")[0]
        return self._path(head) if head else self.root

    def delete_prefix(self, prefix: str) -> int:
        self._refuse_empty(prefix)
        keys = [key for key, _ in self.list_keys(prefix)]
        for key in keys:
            self.delete(key)
        # Prune the emptied directories under the prefix (a job's own); never those above it,
        # where a concurrent put may have just made the directory it is about to write in.
        for dirpath, _, _ in os.walk(self._start(prefix), topdown=False):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel != "." and (rel + "/").startswith(prefix):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # not empty
        return len(keys)

    def list_keys(self, prefix: str) -> Iterator[tuple[str, float]]:
        for dirpath, dirnames, filenames in os.walk(self._start(prefix)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if not name.startswith(".") and key.startswith(prefix):
                    try:
                        yield key, (Path(dirpath) / name).stat().st_mtime
                    except FileNotFoundError:
                        continue  # deleted while we walked

    def local_path(self, key: str) -> Path | None:
        return self._path(key)  # whether it exists is the caller's to check, as with send_file

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(
                f"{self} is missing or not writable; create it (`ensure_bucket`) or point "
                "REGIONFARM_DATA_DIR at a writable directory",
                transient=False,
            )

    def ensure_bucket(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"{self}: cannot create it: {exc}", transient=False) from exc
        self.check()
