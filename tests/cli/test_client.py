"""cli.client and `regionfarm submit` against a stub of the v1 API on a real local HTTP server."""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli import submit_cmd
from cli.client import STREAM_RETRIES, ApiClient, ApiError, SseCursor, iter_sse

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()


class Farm:
    """What the stub farm was asked, and how it answers; shared by its handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.storage_requests: list[dict[str, str]] = []
        self.required_key: str | None = None
        self.unavailable = 0  # how many POSTs still answer 503
        self.crowded_once = False  # job_crowded's first events request answered 429
        self.go_on = threading.Event()  # job_slow's stream goes on only once this is set
        self.api_url = self.storage_url = ""

    def posts(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, json.loads(b)) for m, p, h, b in self.requests if m == "POST"]

    def final_job(self, job_id: str) -> dict[str, Any]:
        case = job_id.removeprefix("job_")
        job: dict[str, Any] = {
            "id": job_id,
            "status": "succeeded",
            "model": "tiny-random",
            "progress": {"step": 5, "total": 5, "eta_seconds": 0.0},
            "result": {
                "url": f"{self.api_url}/v1/jobs/{job_id}/result",
                "format": "png",
                "bytes": len(IMAGE),
                "sha256": IMAGE_SHA,
                "seed": 7,
                "render_seconds": 0.5,
            },
            "error": None,
        }
        if case == "fail":
            job.update(
                status="failed",
                result=None,
                error={"code": "out_of_memory", "message": "use a smaller canvas"},
            )
        elif case == "badsum":
            job["result"]["sha256"] = "0" * 64
        elif case == "webp":
            job["result"]["format"] = "webp"
        return job


def error_body(code: str, message: str, details: list | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass  # keep the test output clean

    @property
    def farm(self) -> Farm:
        return self.server.farm

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class ApiHandler(_Handler):
    def record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.farm.lock:
            self.farm.requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def authorized(self) -> bool:
        wanted = self.farm.required_key
        if wanted and self.headers.get("Authorization") != f"Bearer {wanted}":
            self.send_json(401, error_body("unauthorized", "missing or wrong API key"))
            return False
        return True

    def do_POST(self) -> None:
        body = self.record()
        if not self.authorized():
            return
        if self.path != "/v1/jobs":
            return self.send_json(404, error_body("not_found", "no such route"))
        with self.farm.lock:
            unavailable, self.farm.unavailable = self.farm.unavailable, self.farm.unavailable - 1
        if unavailable > 0:
            return self.send_json(
                503, error_body("broker_unavailable", "redis is down"), {"Retry-After": "0"}
            )
        spec = json.loads(body)
        if spec.get("width") == 1001:
            details = [
                {"loc": ["width"], "msg": "must be a multiple of 8"},
                {"loc": ["regions", 2, "mask"], "msg": "the mask is empty"},
            ]
            return self.send_json(422, error_body("invalid_spec", "2 invalid fields", details))
        job_id = "job_" + (spec.get("metadata") or {}).get("case", "ok")
        job = {"id": job_id, "status": "queued", "model": spec.get("model", "sd15-lcm")}
        self.send_json(202, job, {"Location": f"/v1/jobs/{job_id}"})

    def do_GET(self) -> None:
        self.record()
        if not self.authorized():
            return
        parts = self.path.split("/")  # ["", "v1", "jobs", id, ...]
        job_id = parts[3]
        tail = parts[4] if len(parts) > 4 else ""
        final = self.farm.final_job(job_id)
        if tail == "":
            return self.send_json(200, final)
        if tail == "events" and job_id == "job_slow":
            return self.send_chunked_events(final)
        if tail == "events" and job_id == "job_crowded" and not self.farm.crowded_once:
            self.farm.crowded_once = True  # the tenant's stream slots are all taken, once
            body = error_body("too_many_streams", "100 event streams are already open")
            return self.send_json(429, body, {"Retry-After": "0.05"})
        if tail == "events" and job_id in ("job_drop", "job_dead", "job_crowded"):
            return self.send_resumable_events(job_id, final)
        if tail == "events":
            return self.send_events(job_id, final)
        if tail == "result":
            if job_id == "job_local":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(IMAGE)))
                self.end_headers()
                self.wfile.write(IMAGE)
                return
            location = f"{self.farm.storage_url}/bucket/t/{job_id}/image.png?X-Amz-Signature=s"
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_json(404, error_body("not_found", "no such route"))

    def send_events(self, job_id: str, final: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        out = [
            ": keep-alive\n\n",
            'event: status\ndata: {"status": "queued"}\n\n',
            ": keep-alive\n\n",
            'event: status\r\ndata: {"status": "running"}\r\n\r\n',
            # One event's JSON split over two data lines: joined with "\n", still JSON.
            'event: progress\ndata: {"step": 1,\ndata: "total": 5, "eta_seconds": 2.0}\n\n',
        ]
        if job_id == "job_broken":
            # The stream dies mid-event and never sends the final job: the client polls.
            out.append('event: progress\ndata: {"step": 2, "tot')
        else:
            out += [
                f'event: progress\ndata: {{"step": {n}, "total": 5, "eta_seconds": 0.1}}\n\n'
                for n in range(2, 6)
            ]
            out.append(f"event: job\ndata: {json.dumps(final)}\n\n")
        for chunk in out:
            self.wfile.write(chunk.encode())
            self.wfile.flush()

    def send_resumable_events(self, job_id: str, final: dict[str, Any]) -> None:
        """Events with ids, as the farm sends them. job_drop: the first connection drops in
        the middle of the 4th event; a reconnect with Last-Event-ID 3 gets the rest from
        there. job_dead: every connection drops before any event."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        events = [
            ("status", {"status": "running"}),
            *[("progress", {"step": n, "total": 5}) for n in range(1, 6)],
            ("job", final),
        ]
        blocks = ["retry: 10\n\n"] + [
            f"id: {n}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
            for n, (name, data) in enumerate(events, 1)
        ]
        last = self.headers.get("Last-Event-ID")
        if job_id == "job_dead":
            out = blocks[0]
        elif last is None:
            out = "".join(blocks[:4]) + blocks[4][:20]  # cut off in the middle of event 4
        else:
            out = blocks[0] + "".join(blocks[int(last) + 1 :])
        self.wfile.write(out.encode())
        self.wfile.flush()

    def send_chunked_events(self, final: dict[str, Any]) -> None:
        """HTTP/1.1 chunked, as gunicorn streams: the first event, then the rest only once the
        test has read that first one (a client that buffers the stream never gets there)."""
        self.protocol_version = "HTTP/1.1"
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(text: str) -> None:
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        chunk('event: status\ndata: {"status": "running"}\n\n')
        if self.farm.go_on.wait(5):
            chunk(": keep-alive\n\n")
            chunk('event: progress\ndata: {"step": 5, "total": 5}\n\nevent: job\n')
            chunk(f"data: {json.dumps(final)}\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_DELETE(self) -> None:
        self.record()
        job_id = self.path.split("/")[3]
        if job_id == "job_ok":
            return self.send_json(409, error_body("conflict", "job job_ok already succeeded"))
        self.send_json(202, {"id": job_id, "status": "canceling"})


class StorageHandler(_Handler):
    """A second host, like S3 behind a presigned URL: an API key must never reach it."""

    def do_GET(self) -> None:
        with self.farm.lock:
            self.farm.storage_requests.append(dict(self.headers))
        if "Authorization" in self.headers:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"<Error><Code>InvalidArgument</Code>two auth mechanisms</Error>")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)


def serve(handler: type[BaseHTTPRequestHandler], farm: Farm):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.farm = farm  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def farm() -> Iterator[Farm]:
    state = Farm()
    api, api_thread, state.api_url = serve(ApiHandler, state)
    storage, storage_thread, state.storage_url = serve(StorageHandler, state)
    yield state
    for server, thread in ((api, api_thread), (storage, storage_thread)):
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens: the port was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the client ----------------------------------------------------------------------------


def test_submit_sends_json_with_key_and_idempotency_key_and_returns_the_job(farm):
    client = ApiClient(farm.api_url + "/", key="rf_k")
    job = client.submit({"kind": "image", "model": "m"})
    assert job == {"id": "job_ok", "status": "queued", "model": "m"}
    assert client.last_location == f"{farm.api_url}/v1/jobs/job_ok"
    [(headers, body)] = farm.posts()
    assert body == {"kind": "image", "model": "m"}
    assert headers["Authorization"] == "Bearer rf_k"
    assert headers["Content-Type"] == "application/json"
    assert uuid.UUID(headers["Idempotency-Key"]).version == 4


def test_submit_without_a_key_sends_no_authorization(farm):
    ApiClient(farm.api_url).submit({"kind": "image"}, idempotency_key="mine")
    [(headers, _)] = farm.posts()
    assert "Authorization" not in headers and headers["Idempotency-Key"] == "mine"


def test_422_is_an_api_error_with_the_details(farm):
    with pytest.raises(ApiError) as info:
        ApiClient(farm.api_url).submit({"width": 1001})
    err = info.value
    assert (err.status, err.code, err.message) == (422, "invalid_spec", "2 invalid fields")
    assert [d["loc"] for d in err.details] == [["width"], ["regions", 2, "mask"]]
    assert len(farm.posts()) == 1  # a 422 is not retried


def test_401_is_an_api_error(farm):
    farm.required_key = "rf_right"
    with pytest.raises(ApiError) as info:
        ApiClient(farm.api_url, key="rf_wrong").submit({})
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert ApiClient(farm.api_url, key="rf_right").get("job_ok")["status"] == "succeeded"


def test_submit_retries_503_with_the_same_idempotency_key(farm):
    farm.unavailable = 2
    client = ApiClient(farm.api_url, backoff=0.01)
    assert client.submit({"kind": "image"})["id"] == "job_ok"
    keys = [headers["Idempotency-Key"] for headers, _ in farm.posts()]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0] == client.last_idempotency_key


def test_submit_gives_up_after_three_retries(farm):
    farm.unavailable = 10
    with pytest.raises(ApiError) as info:
        ApiClient(farm.api_url, backoff=0.01).submit({}, idempotency_key="k1")
    assert (info.value.status, info.value.code) == (503, "broker_unavailable")
    assert [h["Idempotency-Key"] for h, _ in farm.posts()] == ["k1"] * 4


def test_connection_refused_names_the_url_and_what_to_do(dead_url):
    with pytest.raises(ApiError) as info:
        ApiClient(dead_url, backoff=0.01).submit({})
    err = info.value
    assert err.status == 0 and err.code == "unreachable"
    assert dead_url in str(err) and "regionfarm up" in str(err) and "--url" in str(err)


def test_events_parses_the_stream_skipping_keep_alives(farm):
    events = list(ApiClient(farm.api_url).events("job_ok"))
    assert events[:3] == [
        ("status", {"status": "queued"}),
        ("status", {"status": "running"}),
        ("progress", {"step": 1, "total": 5, "eta_seconds": 2.0}),
    ]
    assert [d["step"] for n, d in events if n == "progress"] == [1, 2, 3, 4, 5]
    assert events[-1] == ("job", farm.final_job("job_ok"))


def test_events_arrive_as_they_are_sent_over_chunked_encoding(farm):
    events = ApiClient(farm.api_url).events("job_slow")
    assert next(events) == ("status", {"status": "running"})
    farm.go_on.set()
    assert [name for name, _ in events] == ["progress", "job"]


def test_iter_sse_follows_the_standard():
    lines = [
        b"data: one\n",
        b"data:two\n",  # no space after the colon
        b"data\n",  # a field with no colon: an empty data line
        b"\n",
        b"id: 3\n",
        b"retry: 100\n",
        b"event: nothing\n",
        b"\n",  # no data: nothing is dispatched
        b": comment\n",
        b"event: cut\n",
        b'data: {"never": ',  # the stream ends mid-event: dropped
    ]
    assert list(iter_sse(lines)) == [("message", "one\ntwo\n")]
    cursor = SseCursor()
    assert list(iter_sse(lines, cursor)) == [("message", "one\ntwo\n")]
    # The id of the block that ended is kept; the cut-off event's would not be.
    assert cursor == SseCursor(last_event_id="3", retry_ms=100)
    cut = [b"id: 4\n", b"event: x\n", b"data: {}\n", b"retry: soon\n"]
    assert list(iter_sse(cut, cursor)) == [] and cursor.last_event_id == "3"
    assert cursor.retry_ms == 100  # a retry that is not a number is ignored


def events_requests(farm: Farm, job_id: str) -> list[str | None]:
    """The Last-Event-ID (None: none) of each request of the job's events stream."""
    found = []
    for _, path, headers, _ in farm.requests:
        if path == f"/v1/jobs/{job_id}/events":
            lowered = {k.lower(): v for k, v in headers.items()}
            found.append(lowered.get("last-event-id"))
    return found


def test_follow_resumes_a_dropped_stream_with_last_event_id_missing_and_repeating_nothing(farm):
    pauses: list[float] = []
    client = ApiClient(farm.api_url, backoff=5.0)
    events = list(client.follow("job_drop", on_retry=lambda exc, pause: pauses.append(pause)))
    assert [d["step"] for n, d in events if n == "progress"] == [1, 2, 3, 4, 5]
    assert [n for n, _ in events].count("status") == 1
    assert events[-1] == ("job", farm.final_job("job_drop"))
    assert events_requests(farm, "job_drop") == [None, "3"]
    assert pauses == [0.01]  # the stream's retry: (10 ms), not the client's own backoff


def test_follow_gives_up_after_its_retries_with_growing_pauses(farm):
    pauses: list[float] = []
    client = ApiClient(farm.api_url)
    with pytest.raises(ApiError) as info:
        list(client.follow("job_dead", on_retry=lambda exc, pause: pauses.append(pause)))
    assert info.value.status == 0 and info.value.code == "stream_ended"
    assert len(events_requests(farm, "job_dead")) == 1 + STREAM_RETRIES
    assert pauses == [0.01 * 2**n for n in range(STREAM_RETRIES)]


def test_follow_waits_as_a_429s_retry_after_says_then_resumes(farm):
    pauses: list[float] = []
    client = ApiClient(farm.api_url, backoff=5.0)
    events = list(client.follow("job_crowded", on_retry=lambda exc, pause: pauses.append(pause)))
    assert events[-1][0] == "job"
    assert pauses[0] == 0.05  # the server's Retry-After, not the client's backoff


def test_follow_does_not_retry_what_retrying_cannot_change(farm):
    farm.required_key = "rf_right"
    with pytest.raises(ApiError) as info:
        list(ApiClient(farm.api_url, key="rf_wrong").follow("job_drop"))
    assert info.value.status == 401
    assert len(events_requests(farm, "job_drop")) == 1


def test_download_follows_the_redirect_without_the_api_key(farm, tmp_path):
    client = ApiClient(farm.api_url, key="rf_k")
    out = client.download_result("job_ok", tmp_path / "sub" / "out.png", sha256=IMAGE_SHA)
    assert out.read_bytes() == IMAGE
    [api_request] = [r for r in farm.requests if r[1].endswith("/result")]
    assert api_request[2]["Authorization"] == "Bearer rf_k"
    [storage_headers] = farm.storage_requests
    assert "Authorization" not in storage_headers
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.png"]  # no temp file left


def test_download_takes_200_bytes(farm, tmp_path):
    out = ApiClient(farm.api_url).download_result("job_local", tmp_path / "local.png")
    assert out.read_bytes() == IMAGE and farm.storage_requests == []


def test_download_with_a_wrong_checksum_writes_nothing(farm, tmp_path):
    with pytest.raises(ApiError, match="sha256"):
        ApiClient(farm.api_url).download_result("job_ok", tmp_path / "x.png", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_cancel(farm):
    client = ApiClient(farm.api_url)
    assert client.cancel("job_running")["status"] == "canceling"
    with pytest.raises(ApiError) as info:
        client.cancel("job_ok")
    assert (info.value.status, info.value.code) == (409, "conflict")


# -- `regionfarm submit` -------------------------------------------------------------------


def submit(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    submit_cmd.add_parsers(sub)
    args = parser.parse_args(["submit", *argv])
    return args.handler(args)


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"kind": "image", "background": {"prompt": "a"}, "seed": 1}))
    return path


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("REGIONFARM_API_URL", raising=False)
    monkeypatch.delenv("REGIONFARM_API_KEY", raising=False)
    monkeypatch.setattr(submit_cmd, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(submit_cmd, "RETRY_BACKOFF", 0.01)


def write_spec(path: Path, **fields: Any) -> Path:
    path.write_text(json.dumps({"kind": "image", **fields}))
    return path


def test_submit_wait_downloads_to_out(farm, spec_file, tmp_path, capsys):
    out = tmp_path / "out.png"
    code = submit(str(spec_file), "--url", farm.api_url, "--key", "rf_k", "--wait", "-o", str(out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_bytes() == IMAGE
    assert captured.out.splitlines() == ["job_ok", str(out)]
    assert "/v1/jobs/job_ok" in captured.err  # the Location
    assert "Authorization" not in farm.storage_requests[0]


def test_submit_applies_overrides_and_the_env_defaults(farm, spec_file, monkeypatch, capsys):
    monkeypatch.setenv("REGIONFARM_API_URL", farm.api_url)
    monkeypatch.setenv("REGIONFARM_API_KEY", "rf_env")
    code = submit(str(spec_file), "--seed", "9", "--model", "m2", "--priority", "8", "--quiet")
    assert code == 0
    assert capsys.readouterr().out == "job_ok\n"
    [(headers, body)] = farm.posts()
    assert headers["Authorization"] == "Bearer rf_env"
    assert (body["seed"], body["model"], body["priority"]) == (9, "m2", 8)


def test_submit_out_suffix_sets_the_format_and_default_name_uses_the_result_format(
    farm, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "s.json", metadata={"case": "webp"})
    assert submit(str(spec), "--url", farm.api_url, "--wait", "--quiet") == 0
    assert (tmp_path / "job_webp.webp").read_bytes() == IMAGE
    assert capsys.readouterr().out.splitlines() == ["job_webp", "job_webp.webp"]

    assert submit(str(spec), "--url", farm.api_url, "-o", "x.webp", "--quiet") == 0  # -o waits
    assert farm.posts()[-1][1]["output"] == {"format": "webp"}
    assert (tmp_path / "x.webp").read_bytes() == IMAGE


def test_submit_falls_back_to_polling_when_the_stream_breaks(farm, tmp_path):
    spec = write_spec(tmp_path / "s.json", metadata={"case": "broken"})
    out = tmp_path / "b.png"
    assert submit(str(spec), "--url", farm.api_url, "--wait", "-o", str(out)) == 0
    assert out.read_bytes() == IMAGE
    assert any(m == "GET" and p == "/v1/jobs/job_broken" for m, p, _, _ in farm.requests)


def test_submit_wait_resumes_a_dropped_stream_without_polling(farm, tmp_path, capsys):
    spec = write_spec(tmp_path / "s.json", metadata={"case": "drop"})
    out = tmp_path / "d.png"
    assert submit(str(spec), "--url", farm.api_url, "--wait", "-o", str(out)) == 0
    assert out.read_bytes() == IMAGE
    assert events_requests(farm, "job_drop") == [None, "3"]
    assert not any(p == "/v1/jobs/job_drop" for m, p, _, _ in farm.requests if m == "GET")
    assert "resuming it in" in capsys.readouterr().err


def test_submit_wait_polls_once_the_stream_cannot_be_resumed(farm, tmp_path, capsys):
    spec = write_spec(tmp_path / "s.json", metadata={"case": "dead"})
    out = tmp_path / "p.png"
    assert submit(str(spec), "--url", farm.api_url, "--wait", "-o", str(out)) == 0
    assert out.read_bytes() == IMAGE
    assert len(events_requests(farm, "job_dead")) == 1 + STREAM_RETRIES
    assert any(p == "/v1/jobs/job_dead" for m, p, _, _ in farm.requests if m == "GET")
    assert "asking every" in capsys.readouterr().err


def test_submit_of_a_failing_job_prints_the_error_and_exits_1(farm, tmp_path, capsys):
    spec = write_spec(tmp_path / "s.json", metadata={"case": "fail"})
    out = tmp_path / "f.png"
    assert submit(str(spec), "--url", farm.api_url, "--wait", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "out_of_memory" in err and "use a smaller canvas" in err
    assert not out.exists()


def test_submit_422_prints_each_detail_and_exits_2(farm, tmp_path, capsys):
    spec = write_spec(tmp_path / "s.json", width=1001)
    assert submit(str(spec), "--url", farm.api_url) == 2
    err = capsys.readouterr().err.splitlines()
    assert "width: must be a multiple of 8" in err
    assert "regions.2.mask: the mask is empty" in err


def test_submit_401_says_how_to_pass_a_key(farm, spec_file, capsys):
    farm.required_key = "rf_right"
    assert submit(str(spec_file), "--url", farm.api_url) == 1
    err = capsys.readouterr().err
    assert "--key" in err and "REGIONFARM_API_KEY" in err and "Traceback" not in err


def test_submit_to_nothing_exits_1_naming_the_url(dead_url, spec_file, capsys):
    assert submit(str(spec_file), "--url", dead_url) == 1
    err = capsys.readouterr().err
    assert dead_url in err and "regionfarm up" in err


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_submit_of_a_bad_spec_file_exits_2_naming_it(tmp_path, capsys, content):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert submit(str(path), "--url", "http://127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert str(path) in err and "SPEC.json" in err and "Traceback" not in err


def test_submit_bad_url_exits_2(spec_file, capsys):
    assert submit(str(spec_file), "--url", "ftp://x") == 2
    assert "--url" in capsys.readouterr().err


def test_ctrl_c_while_waiting_says_the_job_keeps_running(farm, spec_file, monkeypatch, capsys):
    def interrupted(*args: Any, **kwargs: Any) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(submit_cmd, "wait_for_job", interrupted)
    assert submit(str(spec_file), "--url", farm.api_url, "--wait") == 1
    err = capsys.readouterr().err
    assert "keeps running" in err and f"{farm.api_url}/v1/jobs/job_ok" in err
