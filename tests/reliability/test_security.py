"""Security: every route's auth (from the app's URL map), tenant isolation on every job and
asset route, presigned URL expiry, webhook signatures (verifiable, replay-bounded), and no
secret in logs, job records or stored objects."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

UNKNOWN_JOB = "job_00000000000000000000000000"
SIGNATURE_WINDOW_S = 300
"""Seconds either way that a receiver here accepts a signature's timestamp (the contract's)."""


def receiver_accepts(secret: str, body: bytes, header: str, *, now: float | None = None) -> bool:
    """What a receiver does, written from the contract and not through the code under test:
    `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, within the time window."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in fields or "v1" not in fields or not fields["t"].isdigit():
        return False
    t = int(fields["t"])
    if abs((time.time() if now is None else now) - t) > SIGNATURE_WINDOW_S:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


class Hooks(http.server.ThreadingHTTPServer):
    """A webhook receiver on loopback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hooks.calls.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _fill(rule: str, job_id: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: job_id if "job" in m[1] else "x", rule)


def test_auth_isolation_presigning_webhooks_and_secrets(
    make_farm, spec_factory, record_row, rel, tmp_path: Path
):
    from api.app import create_app
    from farm.storage import make_storage
    from schemas import Settings

    hooks = Hooks()
    farm = make_farm(env={"REGIONFARM_WEBHOOK_ALLOWLIST": "127.0.0.1"})
    started = time.monotonic()
    farm.start_workers(1)
    farm.start_webhooks()
    checks: Counter[str] = Counter()
    problems: list[str] = []

    def check(kind: str, ok: bool, what: str) -> None:
        checks[kind] += 1
        if not ok:
            problems.append(f"{kind}: {what}")

    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    job = farm.submit(spec_factory(seed=1, webhook={"url": hook_url}))
    asset = farm.call(
        "POST",
        "/v1/assets",
        data=Path(_mask_png(tmp_path)).read_bytes(),
        headers={"Content-Type": "image/png"},
    ).json()["id"]
    assert farm.wait_final([job], timeout=60)[job] == "succeeded", farm.log_tail()

    # 1. Every route of the URL map: /v1 ones refuse no key and a wrong key with 401.
    settings = Settings(
        redis_url=farm.redis.url, api_keys_file=farm.keys_file, data_dir=tmp_path / "d"
    )
    app = create_app(settings, storage=make_storage(settings))
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = _fill(rule.rule, job)
            public = not path.startswith("/v1/") or path == "/v1/openapi.json"
            for label, headers in (
                ("no key", {}),
                ("wrong key", {"Authorization": "Bearer rf_x"}),
                ("not bearer", {"Authorization": f"Basic {farm.keys['acme']}"}),
            ):
                answer = farm.call(
                    method, path, tenant=None, headers=headers, timeout=10, stream=True
                )
                answer.close()
                if public:
                    check(
                        "auth",
                        answer.status_code not in (401, 403) and answer.status_code < 500,
                        f"{method} {path} with {label}: {answer.status_code}",
                    )
                else:
                    check(
                        "auth",
                        answer.status_code == 401,
                        f"{method} {path} with {label}: {answer.status_code}",
                    )

    # 2. Tenant isolation: another tenant's job answers exactly what an unknown id does.
    for method, suffix in (
        ("GET", ""),
        ("GET", "/result"),
        ("GET", "/events"),
        ("DELETE", ""),
        ("DELETE", "?purge=true"),
    ):
        theirs = farm.call(method, f"/v1/jobs/{job}{suffix}", tenant="globex")
        unknown = farm.call(method, f"/v1/jobs/{UNKNOWN_JOB}{suffix}", tenant="globex")
        same = (
            theirs.status_code == unknown.status_code == 404
            and theirs.json()["error"]["code"] == unknown.json()["error"]["code"]
        )
        check("tenants", same, f"{method} {suffix}: {theirs.status_code} {theirs.text[:100]}")
    listed = farm.call("GET", "/v1/jobs", tenant="globex").json()["jobs"]
    check("tenants", job not in {j["id"] for j in listed}, "listed another tenant's job")
    spec = spec_factory(seed=2)
    spec["regions"][0]["mask"] = asset
    theirs = farm.call("POST", "/v1/jobs", tenant="globex", json=spec)
    spec["regions"][0]["mask"] = "asset:" + "0" * 64
    unknown = farm.call("POST", "/v1/jobs", tenant="globex", json=spec)
    check(
        "tenants",
        theirs.status_code == unknown.status_code == 422
        and theirs.json()["error"]["details"][0]["loc"]
        == unknown.json()["error"]["details"][0]["loc"],
        f"asset: {theirs.text[:200]}",
    )
    spec["regions"][0]["mask"] = asset
    check("tenants", farm.call("POST", "/v1/jobs", json=spec).status_code == 202, "own asset")
    same_key = {"Idempotency-Key": "shared-key"}
    a = farm.call("POST", "/v1/jobs", tenant="acme", json=spec_factory(seed=3), headers=same_key)
    b = farm.call("POST", "/v1/jobs", tenant="globex", json=spec_factory(seed=3), headers=same_key)
    check(
        "tenants",
        a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"],
        "an idempotency key is shared across tenants",
    )

    # 3. Presigned URLs: signed at every call with an expiry, refused once it is over.
    result = farm.call("GET", f"/v1/jobs/{job}/result")
    location = result.headers.get("Location", "")
    check("presign", result.status_code == 302 and "X-Amz-Expires=3600" in location, location)
    with urllib.request.urlopen(location, timeout=10) as got:
        check("presign", got.status == 200, "the fresh URL does not serve the image")
    # moto serves expired URLs (it does not check X-Amz-Expires), so the check is ours: each
    # call signs a new URL dated now, so that the hour runs from the call, not from the job.
    time.sleep(1.1)
    again = farm.call("GET", f"/v1/jobs/{job}/result").headers.get("Location", "")
    dates = [re.search(r"X-Amz-Date=(\d{8}T\d{6})Z", u) for u in (location, again)]
    check(
        "presign",
        all(dates) and dates[0][1] != dates[1][1] and location != again,
        "the result URL is not signed afresh at each call",
    )
    signed = time.mktime(time.strptime(dates[1][1], "%Y%m%dT%H%M%S")) - time.timezone
    check("presign", abs(signed - time.time()) < 10, f"the URL is dated {dates[1][1]}")

    # 4. Webhooks: the call is signed with the tenant's secret, and a replay is refused.
    deadline = time.monotonic() + 60
    while not hooks.calls and time.monotonic() < deadline:
        time.sleep(0.2)
    check("webhook", len(hooks.calls) >= 1, "no webhook call")
    for headers, body in hooks.calls[:1]:
        sig = headers.get("Regionfarm-Signature", "")
        stamp = int(sig.split(",")[0].split("=")[1])
        secret = farm.secrets["acme"]
        check("webhook", receiver_accepts(secret, body, sig), "the signature does not verify")
        other = farm.secrets["globex"]
        check("webhook", not receiver_accepts(other, body, sig), "verifies with any secret")
        check("webhook", not receiver_accepts(secret, body + b" ", sig), "verifies a changed body")
        late = stamp + SIGNATURE_WINDOW_S + 1
        check("webhook", not receiver_accepts(secret, body, sig, now=late), "a replay verifies")
        check("webhook", headers.get("Regionfarm-Event") == "job.succeeded", str(headers))
        check("webhook", json.loads(body)["id"] == job, "the body is not the job")
    hooks.shutdown()
    hooks.server_close()

    # 5. No secret in any log, job record or stored object.
    secrets = {f"{t} key": k for t, k in farm.keys.items()}
    secrets |= {f"{t} webhook secret": s for t, s in farm.secrets.items()}
    secrets["AWS secret"] = rel.AWS_SECRET
    texts = {p.name: p.read_text(errors="replace") for p in farm.logs.glob("*.log")}
    for key_name in farm.r.scan_iter(count=1000):
        kind = farm.r.type(key_name)
        value = {
            "hash": lambda k: farm.r.hgetall(k),
            "string": lambda k: farm.r.get(k),
            "set": lambda k: farm.r.smembers(k),
            "zset": lambda k: farm.r.zrange(k, 0, -1),
            "list": lambda k: farm.r.lrange(k, 0, -1),
        }.get(kind, lambda k: "")(key_name)
        texts[f"redis {key_name}"] = str(value)
    for page in farm.s3.get_paginator("list_objects_v2").paginate(Bucket=farm.bucket):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".json"):
                body = farm.s3.get_object(Bucket=farm.bucket, Key=obj["Key"])["Body"].read()
                texts[f"s3 {obj['Key']}"] = body.decode(errors="replace")
    for where, text in texts.items():
        for name, secret in secrets.items():
            check("secrets", secret not in text, f"the {name} is in {where}")

    row = rel.Row(
        "security: auth, tenants, presign, webhooks, secrets",
        sum(checks.values()),
        succeeded=sum(checks.values()) - len(problems),
        errors_5xx=farm.counted.errors_5xx,
        seconds=time.monotonic() - started,
        notes=", ".join(f"{k} {v}" for k, v in sorted(checks.items())),
    )
    row.failed.update(Counter(p.split(":")[0] for p in problems))
    record_row(row)
    assert problems == [], "\n".join(problems)
    assert row.errors_5xx == 0


def _mask_png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "mask.png"
    image = Image.new("L", (256, 256), 0)
    image.paste(255, (0, 0, 128, 256))
    image.save(path)
    return path
