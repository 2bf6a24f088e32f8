"""farm.storage on both backends: a local directory and a real S3 server (moto, over HTTP)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from farm.storage import (
    LocalStorage,
    ObjectMissing,
    S3Storage,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredObject,
    asset_key,
    job_object_key,
    make_storage,
)
from schemas import Settings

from .conftest import free_port

JOB = "job_01JDQ4ZK5V8YQ2W3X4Y5Z6A7B8"
JOB2 = "job_01JDQ4ZK5V8YQ2W3X4Y5Z6A7B9"
SHA = "ab" * 32
DEAD_TIMEOUT_S = 1.0
"""Connect/read timeout, in seconds, of the clients pointed at a closed port."""


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend in turn; S3 asks for moto only when its case runs."""
    if request.param == "s3":
        return make_storage(request.getfixturevalue("s3_settings"))
    store = make_storage(Settings(data_dir=tmp_path, s3_prefix="rf"))
    store.ensure_bucket()
    return store


def test_make_storage_picks_the_backend(tmp_path: Path, s3_settings: Settings) -> None:
    local = make_storage(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "storage"
    assert isinstance(make_storage(s3_settings), S3Storage)


def test_round_trip(storage: Storage) -> None:
    key = job_object_key(storage.prefix, "acme", JOB, "image.png")
    data = os.urandom(1000)
    stored = storage.put_bytes(key, data, "image/png")
    expected = StoredObject(key, 1000, hashlib.sha256(data).hexdigest(), "image/png")
    assert stored == expected
    assert storage.head(key) == expected
    assert storage.get_bytes(key) == data

    other = os.urandom(10)  # an overwrite is seen at once, sidecar included
    assert storage.put_bytes(key, other, "image/png").sha256 == hashlib.sha256(other).hexdigest()
    assert storage.get_bytes(key) == other

    storage.delete(key)
    assert storage.head(key) is None
    storage.delete(key)  # absent is fine


def test_missing_objects(storage: Storage) -> None:
    key = asset_key(storage.prefix, "acme", SHA, "png")
    assert storage.head(key) is None
    with pytest.raises(ObjectMissing) as info:
        storage.get_bytes(key)
    assert info.value.code == "not_found"
    if isinstance(storage, LocalStorage):
        path = storage.local_path(key)
        assert path is not None and not path.exists()


def test_put_verifies_what_it_wrote(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    key = job_object_key(storage.prefix, "acme", JOB, "job.json")

    def corrupted(k: str) -> StoredObject:
        return StoredObject(k, 2, "0" * 64, "application/json")

    monkeypatch.setattr(storage, "head", corrupted)  # our read-back, not boto3's
    with pytest.raises(StorageUnavailable, match="did not read back"):
        storage.put_bytes(key, b"{}", "application/json")


def test_list_keys_and_delete_prefix(storage: Storage) -> None:
    before = time.time() - 5
    keys = [job_object_key(storage.prefix, "acme", JOB, n) for n in ("image.png", "job.json")]
    keys.append(job_object_key(storage.prefix, "acme", JOB2, "job.json"))
    keys.append(asset_key(storage.prefix, "acme", SHA, "webp"))
    keys.append(job_object_key(storage.prefix, "other", JOB, "job.json"))
    for key in keys:
        storage.put_bytes(key, key.encode(), "application/octet-stream")

    listed = list(storage.list_keys(f"{storage.prefix}/acme/"))
    assert [k for k, _ in listed] == sorted(keys[:4])
    assert all(before < mtime < time.time() + 5 for _, mtime in listed)
    assert [k for k, _ in storage.list_keys(f"{storage.prefix}/acme/{JOB}/")] == keys[:2]
    assert list(storage.list_keys(f"{storage.prefix}/nobody/")) == []

    if isinstance(storage, S3Storage):
        storage.delete_batch = 1  # one key a round: the listing must survive the deletes
    assert storage.delete_prefix(f"{storage.prefix}/acme/{JOB}/") == 2
    assert storage.delete_prefix(f"{storage.prefix}/acme/{JOB}/") == 0
    remaining = sorted(k for k, _ in storage.list_keys(f"{storage.prefix}/"))
    assert remaining == sorted(keys[2:])
    if isinstance(storage, LocalStorage):  # the job's emptied directory goes too
        assert not (storage.root / storage.prefix / "acme" / JOB).exists()
        assert (storage.root / storage.prefix / "acme" / JOB2).is_dir()
    with pytest.raises(ValueError, match="non-empty"):
        storage.delete_prefix("")


def test_large_object_round_trips(storage: Storage) -> None:
    key = job_object_key(storage.prefix, "acme", JOB, "image.webp")
    data = os.urandom(20 * 1024 * 1024)
    stored = storage.put_bytes(key, data, "image/webp")
    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.get_bytes(key) == data
    if isinstance(storage, S3Storage):  # a multipart ETag is "<md5 of part md5s>-<parts>"
        s3 = boto3.client("s3", endpoint_url=storage.endpoint_url)
        assert s3.head_object(Bucket=storage.bucket, Key=key)["ETag"].endswith('-3"')


@pytest.mark.parametrize(
    "prefix, expected",
    [("", "acme/"), ("a/b", "a/b/acme/"), ("a/b/", "a/b/acme/"), ("/a/", "a/acme/")],
)
def test_key_layout(prefix: str, expected: str) -> None:
    assert job_object_key(prefix, "acme", JOB, "image.png") == f"{expected}{JOB}/image.png"
    assert job_object_key(prefix, "acme", JOB, "job.json") == f"{expected}{JOB}/job.json"
    assert asset_key(prefix, "acme", SHA, "jpg") == f"{expected}assets/{SHA}.jpg"


@pytest.mark.parametrize(
    "tenant, job_id, name",
    [
        ("ac/me", JOB, "job.json"),
        ("..", JOB, "job.json"),
        ("Acme", JOB, "job.json"),
        ("acme\n", JOB, "job.json"),
        ("-acme", JOB, "job.json"),
        ("a" * 65, JOB, "job.json"),
        ("acme", "job_01JDQ4ZK5V8YQ2W3X4Y5Z6A7BI", "job.json"),  # I is not Crockford base32
        ("acme", "job_01JDQ4ZK5V8YQ2W3X4Y5Z6A7B", "job.json"),  # 25 characters
        ("acme", "../../etc", "job.json"),
        ("acme", JOB, "image.gif"),
        ("acme", JOB, "image.json"),
        ("acme", JOB, "../job.json"),
    ],
)
def test_job_key_refuses_bad_parts(tenant: str, job_id: str, name: str) -> None:
    with pytest.raises(ValueError):
        job_object_key("", tenant, job_id, name)


@pytest.mark.parametrize(
    "prefix, tenant, sha, ext",
    [
        ("", "acme", SHA.upper(), "png"),
        ("", "acme", SHA[:-1], "png"),
        ("", "acme", SHA, "exe"),
        ("", "ac/me", SHA, "png"),
        ("a/../b", "acme", SHA, "png"),
        ("a\\b", "acme", SHA, "png"),
    ],
)
def test_asset_key_refuses_bad_parts(prefix: str, tenant: str, sha: str, ext: str) -> None:
    with pytest.raises(ValueError):
        asset_key(prefix, tenant, sha, ext)


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a//b", "", "a/.hidden", "a/b/"]
)
def test_local_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    store = LocalStorage(tmp_path / "root")
    for call in (
        lambda: store.put_bytes(key, b"x", "text/plain"),
        lambda: store.get_bytes(key),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.local_path(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert not (tmp_path / "x").exists()


def test_local_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="outside"):
        LocalStorage(tmp_path / "root").put_bytes("link/f", b"x", "text/plain")


def test_local_serves_files_itself(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    key = job_object_key("", "acme", JOB, "image.png")
    store.put_bytes(key, b"png", "image/png")
    assert store.presigned_url(key) is None
    path = store.local_path(key)
    assert path is not None and path.read_bytes() == b"png"
    # A file whose sidecar is gone (copied in by hand) still heads, with a recomputed hash.
    next(path.parent.glob(".*.meta.json")).unlink()
    assert store.head(key) == StoredObject(key, 3, hashlib.sha256(b"png").hexdigest(), "image/png")


def _download(url: str) -> tuple[bytes, str | None]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read(), resp.headers.get("Content-Disposition")


def test_presigned_url_downloads(s3_settings: Settings) -> None:
    store = make_storage(s3_settings)
    key = job_object_key(store.prefix, "acme", JOB, "image.png")
    data = os.urandom(5000)
    store.put_bytes(key, data, "image/png")
    assert store.local_path(key) is None

    url = store.presigned_url(key, expires_s=60, filename='out"put.png')
    assert url is not None and "X-Amz-Signature=" in url
    body, disposition = _download(url)
    assert body == data
    assert disposition == 'attachment; filename="out_put.png"'
    with pytest.raises(ValueError):
        store.presigned_url(key, expires_s=0)


def test_presigned_url_for_the_public_endpoint(s3_settings: Settings) -> None:
    public = s3_settings.s3_endpoint_url.replace("127.0.0.1", "localhost")
    store = make_storage(s3_settings.model_copy(update={"s3_public_endpoint_url": public}))
    key = asset_key(store.prefix, "acme", SHA, "png")
    store.put_bytes(key, b"asset", "image/png")
    url = store.presigned_url(key)
    assert url is not None and urllib.parse.urlsplit(url).hostname == "localhost"
    assert _download(url)[0] == b"asset"


def test_region_comes_from_aws_region(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    settings = Settings(s3_endpoint_url=s3_server, s3_bucket=f"test-{uuid.uuid4().hex[:16]}")
    assert settings.s3_region == "eu-west-3"
    store = make_storage(settings)
    url = store.presigned_url("k")
    assert url is not None and "%2Feu-west-3%2Fs3%2F" in url
    store.ensure_bucket()  # outside us-east-1 it must name its LocationConstraint
    store.ensure_bucket()
    store.check()


def test_check_and_ensure_bucket(s3_settings: Settings) -> None:
    store = make_storage(s3_settings)
    store.check()
    store.ensure_bucket()  # idempotent
    missing = make_storage(s3_settings.model_copy(update={"s3_bucket": "never-made"}))
    with pytest.raises(StorageUnavailable, match="never-made.*does not exist") as info:
        missing.check()
    assert not info.value.transient
    with pytest.raises(StorageUnavailable):
        missing.get_bytes("rf/k")


def test_local_check(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "storage")
    with pytest.raises(StorageUnavailable, match="storage"):
        store.check()
    store.ensure_bucket()
    store.check()


def test_dead_endpoint_is_storage_unavailable(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3Storage(
        endpoint,
        "b",
        connect_timeout=DEAD_TIMEOUT_S,
        read_timeout=DEAD_TIMEOUT_S,
        max_attempts=2,
    )
    key = job_object_key("", "acme", JOB, "job.json")
    calls = {
        "check": store.check,
        "put": lambda: store.put_bytes(key, b"{}", "application/json"),
        "get": lambda: store.get_bytes(key),
        "head": lambda: store.head(key),
        "delete": lambda: store.delete(key),
        "list": lambda: list(store.list_keys("acme/")),
        "delete_prefix": lambda: store.delete_prefix("acme/"),
        "ensure_bucket": store.ensure_bucket,
    }
    for name, call in calls.items():
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            call()
        assert time.monotonic() - start < 5, name
        assert type(info.value) is StorageUnavailable, name
        assert not isinstance(info.value, BotoCoreError)
        assert info.value.transient and info.value.code == "storage_unavailable"
        assert endpoint in str(info.value) and "REGIONFARM_S3_ENDPOINT_URL" in str(info.value)
    # Presigning makes no request, so it works with the server down.
    assert (store.presigned_url(key) or "").startswith(f"{endpoint}/b/acme/")


def test_silent_endpoint_times_out(aws_env: None) -> None:
    with socket.socket() as sock:  # accepts connections (the kernel does) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        store = S3Storage(endpoint, "b", read_timeout=0.5, max_attempts=1)
        start = time.monotonic()
        with pytest.raises(StorageUnavailable, match="timeout"):
            store.get_bytes("k")
        assert time.monotonic() - start < 5


@pytest.fixture
def failing_server() -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """An HTTP server answering every request with the S3 error at the head of its list."""
    answers: list[tuple[int, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, code = answers[0]
            body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "status, code, error, transient",
    [
        (503, "SlowDown", StorageUnavailable, True),
        (500, "InternalError", StorageUnavailable, True),
        (403, "AccessDenied", StorageUnavailable, False),
        (404, "NoSuchBucket", StorageUnavailable, False),
        (404, "NoSuchKey", ObjectMissing, None),
        (400, "InvalidArgument", StorageError, None),
    ],
)
def test_server_errors_are_translated(
    aws_env: None,
    failing_server: tuple[str, list[tuple[int, str]]],
    status: int,
    code: str,
    error: type[StorageError],
    transient: bool | None,
) -> None:
    endpoint, answers = failing_server
    answers.append((status, code))
    store = S3Storage(endpoint, "b", max_attempts=1)
    with pytest.raises(StorageError) as info:
        store.get_bytes("k")
    assert type(info.value) is error and endpoint in str(info.value)
    assert getattr(info.value, "transient", None) is transient
