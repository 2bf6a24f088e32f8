"""Storage in an S3-compatible bucket (AWS, MinIO, Garage, SeaweedFS, moto), through boto3."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from farm.storage.base import Storage, StoredObject
from farm.storage.errors import ObjectMissing, StorageError, StorageUnavailable
from farm.storage.keys import norm_prefix

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_ATTEMPTS",
    "MULTIPART_CHUNK_BYTES",
    "MULTIPART_THRESHOLD_BYTES",
    "READ_TIMEOUT_S",
    "S3Storage",
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

_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Throttling answers are 4xx on some servers but mean the same as a 503: try again later.
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"})


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
        region: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        multipart_threshold: int = MULTIPART_THRESHOLD_BYTES,
    ) -> None:
        self.endpoint_url, self.bucket, self.prefix = endpoint_url, bucket, norm_prefix(prefix)
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
        # The settings read AWS_REGION (the deployment files' name); botocore reads only
        # AWS_DEFAULT_REGION and its config file.
        region = region or session.region_name or "us-east-1"
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
