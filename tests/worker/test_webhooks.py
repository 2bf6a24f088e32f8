"""Webhook delivery against a real local receiver: signatures, SSRF refusals, retries, pinning,
and the webhook task's secrets and result URLs."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import socket
import ssl
import threading
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from farm.keys import KeyRing, add_key, load_keys
from farm.records import new_record
from schemas import Settings
from worker import webhooks
from worker.deliveries import WebhookSender
from worker.webhooks import (
    EVENTS,
    WebhookRefused,
    WebhookRetry,
    deliver,
    retry_delays,
    signature,
    verify,
)

NOW = 1_700_000_000.0
JOB = {"id": "j_123", "status": "succeeded", "result": {"url": "https://s3.example/x.png"}}
_real_getaddrinfo = socket.getaddrinfo


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Receiver:
    """What the local receiver saw, and how it answers (set `status` and `headers` per test)."""

    url: str = ""
    port: int = 0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        receiver.requests.append(Recorded(self.command, self.path, headers, body))
        self.send_response(receiver.status)
        for name, value in receiver.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_POST = do_GET = _answer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    # Join handler threads on close, so no socket outlives the test (ResourceWarning).
    daemon_threads = False
    block_on_close = True


def _serve(
    tls: ssl.SSLContext | None = None, *, family: int = socket.AF_INET
) -> Iterator[Receiver]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server_class = type("_Server6", (_Server,), {"address_family": family})
    server = server_class((host, 0), _Handler)
    receiver = Receiver()
    server.receiver = receiver  # type: ignore[attr-defined]
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: receiver.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    receiver.url = f"http{'s' if tls else ''}://{shown}:{receiver.port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Make `name` resolve to answers[name][i] on its i-th lookup (the last one thereafter);
    other names resolve for real. Returns the names looked up, in order."""
    looked_up: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host not in answers:
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        calls = looked_up.count(host)
        looked_up.append(host)
        addresses = answers[host][min(calls, len(answers[host]) - 1)]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


# --- signatures: checked against the contract's formula, computed here ------------------------


def contract_v1(secret: str, body: bytes, timestamp: int) -> str:
    """The contract's signature, written out: hex HMAC-SHA256 of "<t>.<body>" with the secret."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_parts(header: str) -> tuple[int, list[str]]:
    """A `Regionfarm-Signature` header's t and v1 values, read as a receiver reads them."""
    pairs = [part.split("=", 1) for part in header.split(",")]
    assert all(len(pair) == 2 for pair in pairs), header
    [timestamp] = [int(value) for key, value in pairs if key == "t"]
    return timestamp, [value for key, value in pairs if key == "v1"]


def test_signature_is_the_contracts_hmac() -> None:
    body = b'{"id":"j_1"}'
    # Computed outside Python: printf '1700000000.{"id":"j_1"}' | openssl dgst -sha256 -hmac s3cret
    known = "5e40fdae117ed2523b552b8869e12792a83fc730017a588355b467a6ccb516f7"
    assert contract_v1("s3cret", body, 1_700_000_000) == known
    assert signature("s3cret", body, 1_700_000_000) == f"t=1700000000,v1={known}"
    assert signature("s3cret", b"", 5) == f"t=5,v1={contract_v1('s3cret', b'', 5)}"
    unicode_secret = "whsec_\u00e9t\u00e9"  # UTF-8 bytes of the secret are the key
    assert signature(unicode_secret, body, 7).endswith(contract_v1(unicode_secret, body, 7))


def test_verify_accepts_what_the_contract_signs_and_nothing_else() -> None:
    body, t = b'{"id":"j_1"}', 1_700_000_000
    header = f"t={t},v1={contract_v1('s3cret', body, t)}"
    assert verify("s3cret", body, header, now=t + 299)
    assert not verify("wrong", body, header, now=t)
    assert not verify("s3cret", body + b" ", header, now=t)
    assert not verify("s3cret", body, header, now=t + 301)  # too old
    assert not verify("s3cret", body, header, now=t - 301)  # from the future
    assert verify("s3cret", body, header, now=t + 1000, tolerance_s=1000)
    # The timestamp is signed too: the same v1 under another t does not verify.
    assert not verify("s3cret", body, f"t={t + 1},v1={contract_v1('s3cret', body, t)}", now=t)
    # A rotated secret: a header carrying several v1 values verifies if any of them matches.
    assert verify("s3cret", body, f"{header},v1={contract_v1('old', body, t)}", now=t)
    old_first = f"t={t},v1={contract_v1('old', body, t)},v1={contract_v1('s3cret', body, t)}"
    assert verify("s3cret", body, old_first, now=t)
    for bad in ("", "t=abc,v1=00", "v1=00", f"t={t}", "garbage"):
        assert not verify("s3cret", body, bad, now=t)


# --- deliveries to the local receiver ---------------------------------------------------------


def test_loopback_receiver_refused_without_allowlist(receiver: Receiver) -> None:
    with pytest.raises(WebhookRefused, match="allow-list"):
        deliver(f"{receiver.url}/hook", JOB, secret="s", allowlist=[])
    with pytest.raises(WebhookRefused, match="loopback"):
        deliver(f"https://127.0.0.1:{receiver.port}/hook", JOB, secret="s", allowlist=[])
    # Another host's entry does not open loopback.
    with pytest.raises(WebhookRefused):
        deliver(f"{receiver.url}/hook", JOB, secret="s", allowlist=["hooks.internal"])
    assert receiver.requests == []


def test_allowlisted_delivery_is_signed_and_complete(receiver: Receiver) -> None:
    code = deliver(
        f"{receiver.url}/hook?team=a", JOB, secret="s3cret", allowlist=["127.0.0.1"], now=NOW
    )
    assert code == 200
    [seen] = receiver.requests
    assert (seen.method, seen.path) == ("POST", "/hook?team=a")
    assert seen.body == json.dumps(JOB, separators=(",", ":")).encode()
    assert json.loads(seen.body) == JOB
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "regionfarm-webhook/1"
    assert seen.headers["regionfarm-event"] == "job.succeeded"
    assert seen.headers["host"] == f"127.0.0.1:{receiver.port}"
    uuid.UUID(seen.headers["regionfarm-delivery"])
    timestamp, [v1] = signature_parts(seen.headers["regionfarm-signature"])
    assert timestamp == int(NOW)
    assert hmac.compare_digest(v1, contract_v1("s3cret", seen.body, timestamp))
    assert v1 != contract_v1("other", seen.body, timestamp)


@pytest.mark.parametrize("status", sorted(EVENTS))
def test_event_header_per_status(receiver: Receiver, status: str) -> None:
    job = {**JOB, "status": status}
    for _ in range(2):
        assert deliver(receiver.url, job, secret="s", allowlist=["127.0.0.1"]) == 200
    first, second = receiver.requests
    assert first.path == "/"
    assert first.headers["regionfarm-event"] == second.headers["regionfarm-event"]
    assert first.headers["regionfarm-event"] == f"job.{status}"
    assert first.headers["regionfarm-delivery"] != second.headers["regionfarm-delivery"]


def test_unfinished_job_is_a_caller_error(receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="'running'"):
        deliver(receiver.url, {**JOB, "status": "running"}, secret="s", allowlist=["127.0.0.1"])
    assert receiver.requests == []


def test_every_delivery_is_signed_so_no_secret_sends_nothing(receiver: Receiver) -> None:
    for secret in ("", None):
        with pytest.raises(ValueError, match="every webhook is signed"):
            deliver(receiver.url, JOB, secret=secret, allowlist=["127.0.0.1"])  # type: ignore[arg-type]
    assert receiver.requests == []


def test_allowlist_network_entry(receiver: Receiver) -> None:
    assert deliver(receiver.url, JOB, secret="s", allowlist=["127.0.0.0/8"]) == 200


def test_server_error_is_retried(receiver: Receiver) -> None:
    receiver.status = 500
    with pytest.raises(WebhookRetry, match="500") as caught:
        deliver(receiver.url, JOB, secret="s", allowlist=["127.0.0.1"])
    assert caught.value.retry_after is None
    assert len(receiver.requests) == 1


def test_retry_after_seconds_and_date(receiver: Receiver) -> None:
    receiver.status = 503
    receiver.headers = {"Retry-After": "7"}
    with pytest.raises(WebhookRetry, match="503") as caught:
        deliver(receiver.url, JOB, secret="s", allowlist=["127.0.0.1"])
    assert caught.value.retry_after == 7.0

    when = dt.datetime.fromtimestamp(NOW + 120, tz=dt.UTC)
    receiver.headers = {"Retry-After": format_datetime(when, usegmt=True)}
    with pytest.raises(WebhookRetry) as caught:
        deliver(receiver.url, JOB, secret="s", allowlist=["127.0.0.1"], now=NOW)
    assert caught.value.retry_after == pytest.approx(120)

    receiver.headers = {"Retry-After": "soon"}
    with pytest.raises(WebhookRetry) as caught:
        deliver(receiver.url, JOB, secret="s", allowlist=["127.0.0.1"], now=NOW)
    assert caught.value.retry_after is None


def test_client_error_is_retried_too(receiver: Receiver) -> None:
    # The contract retries every non-2xx answer: a 404 may be a receiver mid-deploy.
    receiver.status = 404
    with pytest.raises(WebhookRetry, match="404"):
        deliver(receiver.url, JOB, secret="s", allowlist=["127.0.0.1"])


def test_redirect_is_refused_and_not_followed(receiver: Receiver) -> None:
    receiver.status = 302
    receiver.headers = {"Location": f"{receiver.url}/elsewhere"}
    with pytest.raises(WebhookRefused, match="redirects are not followed"):
        deliver(f"{receiver.url}/hook", JOB, secret="s", allowlist=["127.0.0.1"])
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_connection_refused_is_retried() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WebhookRetry, match="ConnectionRefusedError"):
        deliver(f"http://127.0.0.1:{port}/hook", JOB, secret="s", allowlist=["127.0.0.1"])


def test_timeout_is_retried() -> None:
    # Listening but never accepting: the connect succeeds (backlog), the answer never comes.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(WebhookRetry, match="timed out"):
            deliver(
                f"http://127.0.0.1:{port}/", JOB, secret="s", allowlist=["127.0.0.1"], timeout_s=0.2
            )


# --- SSRF refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0x7f.1/hook",
        "https://[fd00:ec2::254]/",
        "http://example.com/hook",  # http only to allow-listed hosts
        "ftp://example.com/hook",
        "not a url",
    ],
)
def test_forbidden_targets_refused_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    looked_up = _fake_dns(monkeypatch, {})

    def no_connect(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be dialled for a refused URL")

    monkeypatch.setattr(webhooks, "_dial", no_connect)
    with pytest.raises(WebhookRefused, match="refused"):
        deliver(url, JOB, secret="s", allowlist=["192.0.2.0/24"])
    assert looked_up == []


def test_localhost_name_refused(receiver: Receiver) -> None:
    for url in (f"https://localhost:{receiver.port}/", f"http://localhost:{receiver.port}/"):
        with pytest.raises(WebhookRefused, match="localhost"):
            deliver(url, JOB, secret="s", allowlist=[])
    assert receiver.requests == []


@pytest.mark.parametrize(
    "answers",
    [
        # The name turns private between lookups, in either order: whichever lookup sees the
        # loopback address, nothing is sent (the one that is dialled is always checked).
        [["127.0.0.1"], ["93.184.216.34"]],
        [["93.184.216.34"], ["127.0.0.1"]],
        # One bad address in an answer is enough.
        [["93.184.216.34", "127.0.0.1"]],
        [["10.1.2.3"]],
    ],
)
def test_name_resolving_to_private_address_refused(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, answers: list[list[str]]
) -> None:
    looked_up = _fake_dns(monkeypatch, {"rebind.test": answers})
    with pytest.raises(WebhookRefused, match="rebind.test"):
        deliver(f"https://rebind.test:{receiver.port}/", JOB, secret="s", allowlist=[])
    assert looked_up  # the name was resolved at delivery time, not trusted from submit time
    assert receiver.requests == []


def test_allowlisted_name_dials_the_resolved_address_with_its_own_host_header(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    looked_up = _fake_dns(monkeypatch, {"hooks.internal": [["127.0.0.1"], ["192.0.2.99"]]})
    url = f"http://hooks.internal:{receiver.port}/in"
    assert deliver(url, JOB, secret="s", allowlist=["hooks.internal"]) == 200
    # One lookup, and the address it gave is the one dialled (a second would say 192.0.2.99).
    assert looked_up == ["hooks.internal"]
    [seen] = receiver.requests
    assert seen.headers["host"] == f"hooks.internal:{receiver.port}"


def test_ipv6_allowlisted_receiver() -> None:
    # The CI machine has IPv6 on loopback; a machine without it fails here, visibly.
    served = _serve(family=socket.AF_INET6)
    receiver = next(served)
    try:
        with pytest.raises(WebhookRefused, match="loopback"):
            deliver(f"https://[::1]:{receiver.port}/", JOB, secret="s", allowlist=[])
        assert deliver(f"{receiver.url}/v6", JOB, secret="s", allowlist=["::1"]) == 200
        [seen] = receiver.requests
        assert seen.headers["host"] == f"[::1]:{receiver.port}"
    finally:
        served.close()


# --- https: pinned address, original name for SNI and the certificate -------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA (ca.pem) and a server certificate for hook.test (hook.pem, hook.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    end = start + dt.timedelta(days=3)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("regionfarm test CA"))
        .issuer_name(name("regionfarm test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("hook.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hook.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("certs")
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "hook.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "hook.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder


@pytest.fixture
def tls_receiver(certificates: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificates / "hook.pem", certificates / "hook.key")
    # Trust the test CA instead of the system's roots; everything else as in production.
    monkeypatch.setattr(
        webhooks,
        "_tls_context",
        lambda: ssl.create_default_context(cafile=str(certificates / "ca.pem")),
    )
    yield from _serve(server_tls)


def test_https_pins_the_address_and_keeps_the_name(
    monkeypatch: pytest.MonkeyPatch, tls_receiver: Receiver
) -> None:
    _fake_dns(monkeypatch, {"hook.test": [["127.0.0.1"]]})
    url = f"https://hook.test:{tls_receiver.port}/tls"
    assert deliver(url, JOB, secret="s", allowlist=["hook.test"]) == 200
    assert tls_receiver.server_names == ["hook.test"]
    [seen] = tls_receiver.requests
    assert seen.headers["host"] == f"hook.test:{tls_receiver.port}"


def test_https_certificate_for_another_name_is_retried(
    monkeypatch: pytest.MonkeyPatch, tls_receiver: Receiver
) -> None:
    _fake_dns(monkeypatch, {"other.test": [["127.0.0.1"]]})
    url = f"https://other.test:{tls_receiver.port}/tls"
    with pytest.raises(WebhookRetry, match="certificate"):
        deliver(url, JOB, secret="s", allowlist=["other.test"])
    assert tls_receiver.requests == []


# --- the retry schedule -----------------------------------------------------------------------


def test_retry_delays_schedule() -> None:
    delays = retry_delays()
    assert delays[:4] == [10, 20, 40, 80]
    assert sum(delays) <= 24 * 3600
    assert sum(delays) + 3600 > 24 * 3600  # nothing more would have fit
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) == 3600
    assert retry_delays(total_s=70) == [10, 20, 40]
    assert retry_delays(total_s=5) == []
    with pytest.raises(ValueError, match="first_s"):
        retry_delays(first_s=0)


# --- the webhook task: whose secret, which result URL -------------------------------------------

JOB_ID = "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A"


class _Records:
    def __init__(self, record: dict[str, str]) -> None:
        self.record = record

    def get(self, job_id: str) -> dict[str, str] | None:
        return self.record if job_id == self.record["id"] else None


def _finished(tenant: str, hook: str, result_url: str = "") -> dict[str, str]:
    spec = {"model": "m", "kind": "regions", "priority": 5, "webhook": {"url": hook}}
    record = new_record(job_id=JOB_ID, tenant=tenant, spec=spec)
    key = f"{tenant}/{JOB_ID}/image.png"
    result = {"url": result_url, "key": key, "format": "png", "bytes": 3, "sha256": "ab"}
    record.update(status="succeeded", attempts="1", result=json.dumps(result))
    return record


def _send(sender: WebhookSender) -> None:
    task = types.SimpleNamespace(request=types.SimpleNamespace(retries=0))
    sender.task(task, JOB_ID)


def test_the_local_tenant_is_signed_with_the_data_dirs_secret_and_an_absolute_result_url(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        data_dir=tmp_path / "data",
        public_url="http://farm.test:8000/",
        webhook_allowlist=["127.0.0.1"],
    )
    record = _finished("local", f"{receiver.url}/hook")
    no_keys = KeyRing.from_settings(None, None)
    sender = WebhookSender(settings=settings, records=_Records(record), keys=no_keys, storage=None)
    _send(sender)
    _send(sender)
    first, second = receiver.requests
    # Made once in the data dir, readable only by its owner, and the same for every delivery.
    secret_file = tmp_path / "data" / "webhook-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    for seen in (first, second):
        timestamp, [v1] = signature_parts(seen.headers["regionfarm-signature"])
        assert hmac.compare_digest(v1, contract_v1(secret, seen.body, timestamp))
        job = json.loads(seen.body)
        assert job["result"]["url"] == f"http://farm.test:8000/v1/jobs/{JOB_ID}/result"


def test_a_keyed_tenant_is_signed_with_its_keys_file_secret_and_an_unknown_one_gets_nothing(
    receiver: Receiver, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.json"
    add_key(keys_file, "acme")
    [acme] = load_keys(keys_file).values()
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        data_dir=tmp_path / "data",
        webhook_allowlist=["127.0.0.1"],
    )
    keys = KeyRing.from_settings(keys_file, None)
    stored_url = f"https://farm.example/v1/jobs/{JOB_ID}/result"
    record = _finished("acme", f"{receiver.url}/hook", result_url=stored_url)
    _send(WebhookSender(settings=settings, records=_Records(record), keys=keys, storage=None))
    [seen] = receiver.requests
    timestamp, [v1] = signature_parts(seen.headers["regionfarm-signature"])
    assert hmac.compare_digest(v1, contract_v1(acme.webhook_secret, seen.body, timestamp))
    # No public URL in this worker's settings: the URL the render worker stored is kept.
    assert json.loads(seen.body)["result"]["url"] == stored_url
    # A tenant without a secret (gone from the keys file) gets nothing rather than an
    # unsigned call; and no secret file is made for it.
    gone = _finished("gone", f"{receiver.url}/hook")
    _send(WebhookSender(settings=settings, records=_Records(gone), keys=keys, storage=None))
    # Nor does `local` on a farm with keys: the data dir's secret is the keyless farm's only.
    local = _finished("local", f"{receiver.url}/hook")
    _send(WebhookSender(settings=settings, records=_Records(local), keys=keys, storage=None))
    assert len(receiver.requests) == 1
    assert not (tmp_path / "data").exists()


def test_the_readmes_receiver_snippet_accepts_a_delivery_and_refuses_a_forgery() -> None:
    """The README shows receivers how to check a signature; its snippet must work as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [snippet] = [b for b in readme.split("```python\n")[1:] if "compare_digest" in b]
    snippet = snippet.split("```")[0]
    body, secret = b'{"id":"job_1","status":"succeeded"}', "whsec_readme"
    header = webhooks.signature(secret, body, 1_700_000_000)
    for key, want in ((secret, True), ("whsec_other", False)):
        scope = {"hmac": hmac, "hashlib": hashlib, "header": header, "body": body, "secret": key}
        exec(snippet, scope)  # noqa: S102 (the README's own text, run as a receiver runs it)
        assert scope["ok"] is want
