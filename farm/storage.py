"""Object storage for results and uploaded assets: S3-compatible, or a local directory."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from schemas import Settings
from schemas.identifiers import JOB_ID_RE as _JOB_ID
from schemas.identifiers import SHA256_RE as _SHA256
from schemas.identifiers import TENANT_RE as _TENANT

__all__ = [
    "LocalStorage",
    "ObjectMissing",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "asset_key",
    "job_object_key",
    "make_storage",
]

CONNECT_TIMEOUT_S = 5.0
"""Seconds to wait for a TCP connection to the S3 endpoint, per attempt."""
READ_TIMEOUT_S = 60.0
"""Seconds to wait for the endpoint's next bytes on an open connection, per attempt."""
MAX_ATTEMPTS = 3
"""Attempts per S3 request (first try included) on connection errors, throttling and 5xx."""
MULTIPART_THRESHOLD_BYTES = 16 * 1024 * 1024
"""Bodies larger than this many bytes are uploaded in parts."""
MULTIPART_CHUNK_BYTES = 8 * 1024 * 1024
"""Bytes per part of a multipart upload (S3's minimum is 5 MiB)."""

IMAGE_EXTENSIONS = frozenset({"png", "webp", "jpeg", "jpg"})
ASSET_EXTENSIONS = IMAGE_EXTENSIONS | {"json"}
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Throttling answers are 4xx on some servers but mean the same as a 503: try again later.
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"})


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} for an object key: {value!r}")
    return value


def _norm_prefix(prefix: str) -> str:
    """``"a/b/"``, ``"/a/b"`` and ``"a/b"`` all give ``"a/b"``; ``""`` stays ``""``."""
    text = prefix.strip("/")
    for part in text.split("/") if text else []:
        if part in (".", "..") or not _PREFIX_PART.fullmatch(part):
            raise ValueError(f"invalid storage prefix {prefix!r}: use letters, digits, . _ - and /")
    return text


def _join(prefix: str, *parts: str) -> str:
    return "/".join([p for p in [_norm_prefix(prefix)] if p] + list(parts))


def job_object_key(prefix: str, tenant: str, job_id: str, name: str) -> str:
    """``<prefix>/<tenant>/<job id>/<name>``, name being ``image.<ext>`` or ``job.json``."""
    stem, _, ext = name.partition(".") if isinstance(name, str) else ("", "", "")
    if name != "job.json" and not (stem == "image" and ext in IMAGE_EXTENSIONS):
        raise ValueError(f"invalid object name {name!r}: use job.json or image.<png|webp|jpeg|jpg>")
    return _join(prefix, _check(_TENANT, tenant, "tenant"), _check(_JOB_ID, job_id, "job id"), name)


def asset_key(prefix: str, tenant: str, sha256: str, ext: str) -> str:
    """``<prefix>/<tenant>/assets/<sha256>.<ext>``."""
    if ext not in ASSET_EXTENSIONS:
        raise ValueError(f"invalid asset extension {ext!r}: use one of {sorted(ASSET_EXTENSIONS)}")
    sha = _check(_SHA256, sha256, "sha256 (64 lowercase hex digits)")
    return _join(prefix, _check(_TENANT, tenant, "tenant"), "assets", f"{sha}.{ext}")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str | None
    content_type: str | None


class StorageError(Exception):
    """A storage operation failed; `code` is the error code a client sees."""

    code: ClassVar[str] = "storage_error"


class StorageUnavailable(StorageError):
    """Storage cannot be used now. `transient` is False where waiting will not help (a missing
    bucket, refused credentials): the message then says what to change."""

    code: ClassVar[str] = "storage_unavailable"

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class ObjectMissing(StorageError):
    """The key does not exist."""

    code: ClassVar[str] = "not_found"


class Storage(ABC):
    """Objects by full key (built with `job_object_key` / `asset_key` from `prefix`)."""

    prefix: str

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Write `data`, then read its size and sha256 back; StorageUnavailable if they differ."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(key, data, content_type, digest)
        stored = self.head(key)
        if stored is None or stored.size != len(data) or stored.sha256 != digest:
            raise StorageUnavailable(
                f"{self}: {key} did not read back as written (wrote {len(data)} bytes sha256 "
                f"{digest}, read back {stored}); check the storage server's health"
            )
        return stored

    @abstractmethod
    def _write(self, key: str, data: bytes, content_type: str, digest: str) -> None: ...
    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...
    @abstractmethod
    def head(self, key: str) -> StoredObject | None: ...
    @abstractmethod
    def delete(self, key: str) -> None: ...
    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...
    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[tuple[str, float]]: ...
    @abstractmethod
    def check(self) -> None: ...
    @abstractmethod
    def ensure_bucket(self) -> None: ...

    def presigned_url(
        self, key: str, expires_s: int = 3600, filename: str | None = None
    ) -> str | None:
        """A GET URL for `key`, or None where the API must serve the bytes itself."""
        return None

    def local_path(self, key: str) -> Path | None:
        """The file for `key` (which may not exist) where storage is a local directory, else
        None."""
        return None

    @staticmethod
    def _refuse_empty(prefix: str) -> None:
        # An empty prefix would match every object in the bucket: a bug, never retention.
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix; refusing to delete all")


class S3Storage(Storage):
    """An S3-compatible bucket (AWS, MinIO, Garage, SeaweedFS, moto)."""

    delete_batch = 1000
    """Keys listed and deleted per request in `delete_prefix` (S3's most per DeleteObjects)."""

    def __init__(
        self,
        endpoint_url: str | None,
        bucket: str,
        prefix: str = "",
        public_endpoint_url: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        multipart_threshold: int = MULTIPART_THRESHOLD_BYTES,
    ) -> None:
        self.endpoint_url, self.bucket, self.prefix = endpoint_url, bucket, _norm_prefix(prefix)
        self.multipart_threshold = multipart_threshold
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # boto3 >= 1.36 sends CRC32 checksums by default, which older non-AWS servers refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        # botocore reads AWS_DEFAULT_REGION only; the deployment docs name AWS_REGION.
        region = os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
        self._client = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self._presigner = self._client
        if public_endpoint_url:
            self._presigner = session.client(
                "s3", endpoint_url=public_endpoint_url, region_name=region, config=config
            )
        # With "when_required" DeleteObjects carries a CRC32 only; servers predating flexible
        # checksums (older Garage, SeaweedFS) insist on the Content-MD5 that AWS also accepts.
        self._client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)

    def __str__(self) -> str:
        return f"S3 endpoint {self.endpoint_url or 'AWS'} bucket {self.bucket!r}"

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        what = f"{action} {key!r}" if key else action
        try:
            yield
        except ParamValidationError:
            raise  # a bug in the caller, not a storage problem
        except ClientError as exc:
            err, code = exc.response.get("Error", {}), _code(exc)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            said = f"{code or 'error'} (HTTP {status}) {err.get('Message') or ''}".strip()
            if code == "NoSuchBucket":
                msg = f"{self}: the bucket does not exist; create it or fix REGIONFARM_S3_BUCKET"
                raise StorageUnavailable(msg, transient=False) from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(f"{self}: no object {key!r}") from exc
            if status in (401, 403) or code in _DENIED:
                raise StorageUnavailable(
                    f"{self}: {what} was refused: {said}; check AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY and the bucket's policy",
                    transient=False,
                ) from exc
            if status >= 500 or code in _THROTTLED:
                raise StorageUnavailable(
                    f"{self}: {what} failed: {said}; the server is failing or overloaded"
                ) from exc
            raise StorageError(f"{self}: {what} failed: {said}") from exc
        except NoCredentialsError as exc:
            raise StorageUnavailable(
                f"{self}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                transient=False,
            ) from exc
        except (BotoCoreError, Boto3Error) as exc:
            # Connection refused, DNS, timeouts, a body cut short: the server is unreachable.
            raise StorageUnavailable(
                f"{self}: {what} failed: {exc}; check that the server is running and "
                "reachable at REGIONFARM_S3_ENDPOINT_URL"
            ) from exc

    def _write(self, key: str, data: bytes, content_type: str, digest: str) -> None:
        extra = {"ContentType": content_type, "Metadata": {"sha256": digest}}
        with self._errors("put", key):
            if len(data) > self.multipart_threshold:
                transfer = TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=MULTIPART_CHUNK_BYTES,
                )
                # An upload cut short by an outage stays open on the server (its abort failed
                # too): the next attempt for the key aborts it first, and a failure tries now.
                self.abort_uploads(key)
                try:
                    self._client.upload_fileobj(
                        io.BytesIO(data), self.bucket, key, ExtraArgs=extra, Config=transfer
                    )
                except Exception:
                    with suppress(Exception):
                        self.abort_uploads(key)
                    raise
            else:
                md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5, **extra
                )

    def abort_uploads(self, key: str) -> int:
        """Abort the unfinished multipart uploads of exactly `key`; how many there were."""
        count = 0
        pages = self._client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=self.bucket, Prefix=key):
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )
                    count += 1
        return count

    def get_bytes(self, key: str) -> bytes:
        with self._errors("get", key):
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def head(self, key: str) -> StoredObject | None:
        try:
            with self._errors("head", key):
                resp = self._client.head_object(Bucket=self.bucket, Key=key)
        except ObjectMissing:
            return None
        sha = resp.get("Metadata", {}).get("sha256")
        return StoredObject(key, int(resp["ContentLength"]), sha, resp.get("ContentType"))

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        self._refuse_empty(prefix)
        count, after = 0, ""
        with self._errors("delete prefix", prefix):
            while True:
                # StartAfter, not a continuation token: deleting while listing leaves it valid.
                start = {"StartAfter": after} if after else {}
                page = self._client.list_objects_v2(
                    Bucket=self.bucket, Prefix=prefix, MaxKeys=self.delete_batch, **start
                )
                keys = [obj["Key"] for obj in page.get("Contents", [])]
                if not keys:
                    return count
                resp = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                )
                if resp.get("Errors"):
                    raise StorageError(f"{self}: could not delete {resp['Errors'][:3]}")
                count, after = count + len(keys), keys[-1]

    def list_keys(self, prefix: str) -> Iterator[tuple[str, float]]:
        pages = self._client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"], obj["LastModified"].timestamp()

    def presigned_url(
        self, key: str, expires_s: int = 3600, filename: str | None = None
    ) -> str | None:
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise ValueError(f"expires_s must be 1 to 604800 seconds (S3's limit), not {expires_s}")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            safe = _FILENAME_UNSAFE.sub("_", filename)
            params["ResponseContentDisposition"] = f'attachment; filename="{safe}"'
        with self._errors("presign", key):  # local signing, no request
            return self._presigner.generate_presigned_url("get_object", params, expires_s)

    def _bucket_exists(self) -> bool:
        try:
            with self._errors("check"):
                self._client.head_bucket(Bucket=self.bucket)
        except ObjectMissing:  # a HEAD answer has no error code: this 404 is the bucket's
            return False
        return True

    def check(self) -> None:
        if not self._bucket_exists():
            raise StorageUnavailable(
                f"{self}: the bucket does not exist; create it (`ensure_bucket`) or fix "
                "REGIONFARM_S3_BUCKET",
                transient=False,
            )

    def ensure_bucket(self) -> None:
        if self._bucket_exists():
            return
        region = self._client.meta.region_name
        # us-east-1 is the one region that refuses an explicit LocationConstraint.
        where: dict[str, Any] = {}
        if region != "us-east-1":
            where["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            with self._errors("create bucket"):
                self._client.create_bucket(Bucket=self.bucket, **where)
        except StorageError as exc:
            code = _code(exc.__cause__) if isinstance(exc.__cause__, ClientError) else ""
            if code == "BucketAlreadyExists":
                msg = f"{self}: the name is another account's; choose another REGIONFARM_S3_BUCKET"
                raise StorageUnavailable(msg, transient=False) from exc
            if code != "BucketAlreadyOwnedByYou":  # that one: another process was quicker
                raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _add_content_md5(request: Any, **_: Any) -> None:
    body = request.body
    if isinstance(body, bytes) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode()


class LocalStorage(Storage):
    """Files under `root`, one per key; the sha256 and content type in a hidden sidecar."""

    def __init__(self, root: Path, prefix: str = "") -> None:
        # Absolute: a relative root would follow whatever directory a caller runs from (Flask
        # resolves relative send_file paths against the app package, for one).
        self.root, self.prefix = Path(root).resolve(), _norm_prefix(prefix)

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
        tmp: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _write_file(path, data)
            st = tmp.stat()
            # The sidecar names the size and mtime of the data it describes and goes in first:
            # whatever a crash leaves, a head that finds them unequal recomputes the hash.
            meta = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            meta["content_type"] = content_type
            os.replace(_write_file(meta_path, json.dumps(meta).encode()), meta_path)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageUnavailable(f"{self}: cannot write {key!r}: {exc}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)  # gone already unless something failed

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


def _write_file(path: Path, data: bytes) -> Path:
    """Write `data` to a new temp file beside `path` and fsync it; return the temp's path."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":  # the rename itself is durable only once the directory is synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_storage(settings: Settings) -> Storage:
    """S3 where `s3_endpoint_url` is set, else local files under ``data_dir / "storage"``."""
    if settings.s3_endpoint_url is None:
        return LocalStorage(settings.data_dir / "storage", settings.s3_prefix)
    return S3Storage(
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_prefix,
        settings.s3_public_endpoint_url,
        connect_timeout=min(CONNECT_TIMEOUT_S, settings.s3_timeout_seconds),
        read_timeout=settings.s3_timeout_seconds,
    )
