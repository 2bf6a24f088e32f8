"""Bad input: schemathesis against /v1/openapi.json (positive and negative cases for every
operation), and a corpus of hand-made hostile inputs. Counted: inputs tried, 5xx answers and
answers that break the contract (both must be 0)."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1200)]


# -- schemathesis ---------------------------------------------------------------------------


def test_schemathesis_against_the_openapi_document(make_farm, record_row, rel):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    farm = make_farm()
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{farm.url}/v1/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    total = rel.pick(1000, 3000)
    per_case = max(10, total // (2 * len(operations)))
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    tried, failures, unsatisfiable = 0, [], []
    session = farm.session()
    headers = farm.headers("acme")

    def make_run(op, mode, strategy, round_: int):
        @seed(round_)
        @settings(
            max_examples=per_case,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case) -> None:
            nonlocal tried
            case.headers = {**(case.headers or {}), **headers}
            response = case.call(
                base_url=farm.url, session=session, timeout=30, allow_redirects=False
            )
            tried += 1
            farm.counted.note(case.method, case.path, response)
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # noqa: BLE001 -- every failure is counted, not raised
                text = str(exc).strip().splitlines()
                failures.append(f"{op.label} {mode.value}: " + " ".join(text[:6])[:400])

        return run

    # Rounds with new seeds until the count is reached: an operation with few inputs (no
    # parameters) ends its round early.
    for round_ in range(20):
        if tried >= total:
            break
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if f"{op.label} {mode.value}" in unsatisfiable:
                    continue
                strategy = op.as_strategy(generation_mode=mode)
                try:
                    make_run(op, mode, strategy, round_)()
                except Unsatisfiable:
                    unsatisfiable.append(f"{op.label} {mode.value}")  # nothing invalid to send
    breaks = failures + farm.counted.contract_breaks
    row = rel.Row(
        "schemathesis (positive + negative)",
        tried,
        errors_5xx=farm.counted.errors_5xx,
        seconds=time.monotonic() - started,
        notes=f"{len(operations)} operations, {len(unsatisfiable)} of them with no "
        f"negative form; {len(breaks)} contract breaks",
    )
    row.failed.update({f"answer {k}": v for k, v in farm.counted.by_status.items() if k >= 400})
    row.succeeded = sum(v for k, v in farm.counted.by_status.items() if k < 400)
    record_row(row)
    assert tried >= total * 0.9, tried
    assert row.errors_5xx == 0, breaks[:10]
    assert breaks == [], "\n".join(sorted(set(breaks))[:20])


# -- the hostile corpus ---------------------------------------------------------------------


def _png(width: int, height: int, mode: str = "L", fill: int = 255) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), fill).save(out, "PNG")
    return out.getvalue()


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG that claims width x height grey pixels and carries very little data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    row = b"\x00" + b"\x00" * width
    raw = zlib.compress(row * min(height, 64), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _mask(width: int = 256, height: int = 256) -> str:
    m = np.zeros((height, width), dtype=np.uint8)
    m[:, : width // 2] = 255
    out = io.BytesIO()
    Image.fromarray(m, "L").save(out, "PNG")
    return _uri(out.getvalue())


PATHS = [
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow",
    "acme/../globex",
    "%2e%2e%2f%2e%2e%2f",
    "\x00",
    "file:///etc/passwd",
    "s3://bucket/key",
    "~/.aws",
    "C:\\x",
    "job_00000000000000000000000000/../../x",
    "asset:../../x",
]
UNICODE = [
    "\u202eevil\u202c",
    "\u200b" * 50,
    "Ａ" * 10,
    "e\u0301" * 100,
    "\ud800",
    "💥" * 500,
    "\x00\x01\x02",
    "A" * 2001,
    "\uffff\ufffe",
    "<script>alert(1)</script>",
    "'; DROP TABLE jobs; --",
    "{{7*7}}",
    "${jndi:ldap://x}",
]
HOOKS = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://[::1]/hook",
    "https://10.0.0.1/x",
    "https://192.168.1.1/x",
    "https://172.16.0.1/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/x",
    "https://0.0.0.0/x",
    "https://2130706433/x",
    "https://0x7f000001/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://100.64.0.1/x",
    "http://example.com/x",
    "ftp://example.com/x",
    "javascript:alert(1)",
    "https://user:pass@127.0.0.1/x",
    "https://127.1/x",
    "https://metadata.google.internal/x",
    "https://[fd00::1]/x",
    "https://localhost./x",
]


def hostile_corpus(base: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, requests kwargs) of every hostile input."""
    cases: list[tuple[str, str, str, dict[str, Any]]] = []

    def spec(name: str, expect_reject: bool | None = True, **changes: Any) -> None:
        body = json.loads(json.dumps(base))
        for path, value in changes.items():
            target = body
            keys = path.split("__")
            for k in keys[:-1]:
                target = target[int(k)] if k.isdigit() else target[k]
            last = keys[-1]
            if last.isdigit():
                target[int(last)] = value
            else:
                target[last] = value
        # json.dumps writes NaN and Infinity as JavaScript does, and lone surrogates escaped.
        expect = {True: "reject", False: "accept", None: "any"}[expect_reject]
        cases.append(
            (
                f"{expect}:{name}",
                "POST",
                "/v1/jobs",
                {"data": json.dumps(body), "headers": {"Content-Type": "application/json"}},
            )
        )

    # decompression bombs and lying images
    for w, h in ((100_000, 100_000), (65_535, 65_535), (8192, 8192), (1, 2**31 - 1)):
        spec(f"png bomb {w}x{h}", regions__0__mask=_uri(_bomb_png(w, h)))
        spec(f"background bomb {w}x{h}", background={"prompt": "x", "image": _uri(_bomb_png(w, h))})
    spec("mask wrong size", regions__0__mask=_uri(_png(128, 128)))
    spec("mask 1x1", regions__0__mask=_uri(_png(1, 1)))
    white = Image.new("L", (256, 256), 255)
    for mode in ("RGBA", "RGB", "P", "1", "I", "I;16", "F", "LA", "CMYK", "YCbCr", "HSV"):
        buf = io.BytesIO()
        try:
            white.convert(mode).save(buf, "PNG")
        except (OSError, ValueError):
            continue  # PNG cannot hold this mode
        spec(f"white mask mode {mode}", expect_reject=None, regions__0__mask=_uri(buf.getvalue()))
    for fmt in ("WEBP", "JPEG", "GIF", "BMP", "TIFF", "ICO"):
        buf = io.BytesIO()
        white.convert("RGB").save(buf, fmt)
        spec(
            f"mask as {fmt}",
            expect_reject=fmt not in ("WEBP",),
            regions__0__mask=_uri(buf.getvalue(), f"image/{fmt.lower()}"),
        )
    spec("all-zero mask", regions__0__mask=_uri(_png(256, 256, fill=0)))
    spec("png labelled webp", regions__0__mask=_uri(_png(256, 256), "image/webp"))
    spec("text labelled png", regions__0__mask=_uri(b"hello world"))
    spec(
        "svg data uri",
        regions__0__mask=_uri(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    )
    spec("html data uri", regions__0__mask="data:text/html,<script>alert(1)</script>")
    spec("truncated png", regions__0__mask=_uri(_png(256, 256)[:40]))
    spec("bad base64", regions__0__mask="data:image/png;base64,!!!!")
    spec("gif labelled png", regions__0__mask=_uri(b"GIF89a" + b"\x00" * 20))
    spec("empty data uri", regions__0__mask="data:,")
    spec("url instead of data uri", regions__0__mask="https://example.com/mask.png")
    spec("file url mask", regions__0__mask="file:///etc/passwd")
    spec("unknown asset", regions__0__mask="asset:" + "0" * 64)
    # numbers
    for field_name in ("width", "height", "seed", "steps", "guidance_scale", "priority"):
        for value in (
            float("nan"),
            float("inf"),
            float("-inf"),
            -1,
            10**30,
            1.5,
            "1",
            True,
            None,
            [],
            {},
        ):
            # null is "omitted" (defaults) where a field has one; 1.5 is a fine guidance.
            unsure = value is None or (value == 1.5 and field_name == "guidance_scale")
            spec(
                f"{field_name}={value!r}",
                expect_reject=None if unsure else True,
                **{field_name: value},
            )
    for field_name in ("mask_strength", "mask_std", "prompt_strength"):
        for value in (float("nan"), float("inf"), -1e308, 1e308, "0.5"):
            spec(f"regions.0.{field_name}={value!r}", **{f"regions__0__{field_name}": value})
    # strings: unicode tricks and path-like strings everywhere a string goes
    for text in UNICODE + PATHS:
        too_long = len(text) > 2000
        spec(
            f"prompt {text[:12]!r}",
            expect_reject=too_long or "\ud800" in text,
            background={"prompt": text},
        )
        spec(
            f"region prompt {text[:12]!r}",
            expect_reject=too_long or "\ud800" in text,
            regions__0__prompt=text,
        )
        spec(
            f"negative {text[:12]!r}",
            expect_reject=too_long or "\ud800" in text,
            regions__1__negative_prompt=text,
        )
        spec(
            f"metadata {text[:12]!r}",
            expect_reject="\ud800" in text,
            metadata={"project": text, text[:20] or "k": 1},
        )
        spec(f"model {text[:12]!r}", model=text)
        spec(f"kind {text[:12]!r}", kind=text)
        spec(f"method {text[:12]!r}", method=text)
        spec(f"format {text[:12]!r}", output={"format": text})
    for hook in HOOKS:
        spec(f"webhook {hook}", webhook={"url": hook})
    spec("unknown field", colour="red")
    spec("metadata over 4 KiB", metadata={"x": "y" * 5000})
    spec("65 regions", regions=[base["regions"][0]] * 65)
    spec("width over max pixels", width=8192 * 2, height=1024 * 2)
    # whole bodies
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    deep_text = "[" * 100_000 + "]" * 100_000
    big_text = json.dumps({"metadata": {"k" * 10: "v" * (33 * 1024 * 1024)}})
    raw = [
        ("deeply nested list (json)", {"data": deep_text}),
        ("deeply nested object", {"data": '{"a":' * 50_000 + "1" + "}" * 50_000}),
        (
            "nested metadata",
            {
                "data": json.dumps({**base, "metadata": {"a": "[" * 10}})[:-1]
                + ',"x":'
                + "[" * 20_000
                + "]" * 20_000
                + "}"
            },
        ),
        ("body over 32 MiB", {"data": big_text}),
        ("NaN literal", {"data": json.dumps(base).replace('"seed": 1', '"seed": NaN')}),
        ("Infinity literal", {"data": '{"width": Infinity}'}),
        ("huge integer", {"data": '{"seed": ' + "9" * 5000 + "}"}),
        ("not json", {"data": "this is not json"}),
        ("empty body", {"data": b""}),
        ("invalid utf-8", {"data": b'{"a": "\xff\xfe"}'}),
        ("lone surrogate escape", {"data": '{"background": {"prompt": "\\ud800"}}'}),
        ("json array", {"data": "[1, 2, 3]"}),
        ("json string", {"data": '"hello"'}),
        ("json null", {"data": "null"}),
        ("duplicate keys", {"data": '{"width": 256, "width": 1000000}'}),
        ("bom prefixed", {"data": b"\xef\xbb\xbf" + json.dumps(base).encode()}),
    ]
    for name, kw in raw:
        cases.append(
            (
                f"{'any' if name == 'bom prefixed' else 'reject'}:{name}",
                "POST",
                "/v1/jobs",
                {**kw, "headers": {"Content-Type": "application/json"}},
            )
        )
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/xml",
        "",
    ):
        cases.append(
            (
                f"reject:content type {ctype!r}",
                "POST",
                "/v1/jobs",
                {"data": json.dumps(base), "headers": {"Content-Type": ctype}},
            )
        )
    # batch
    cases.append(
        ("reject:batch of 101", "POST", "/v1/jobs/batch", {"json": {"jobs": [base] * 101}})
    )
    cases.append(
        (
            "reject:batch seeds nan",
            "POST",
            "/v1/jobs/batch",
            {
                "data": '{"job": {}, "seeds": [NaN]}',
                "headers": {"Content-Type": "application/json"},
            },
        )
    )
    cases.append(
        (
            "reject:batch both",
            "POST",
            "/v1/jobs/batch",
            {"json": {"jobs": [base], "job": base, "seeds": [1]}},
        )
    )
    # ids and query strings
    for text in PATHS + UNICODE[:6] + ["job_" + "Z" * 26, "%00", "a" * 10_000]:
        quoted = requests_quote(text)
        for suffix in ("", "/result", "/events"):
            cases.append(
                (f"reject:GET job {text[:12]!r}{suffix}", "GET", f"/v1/jobs/{quoted}{suffix}", {})
            )
        cases.append((f"reject:DELETE job {text[:12]!r}", "DELETE", f"/v1/jobs/{quoted}", {}))
        cases.append(
            (
                f"{'any' if text.startswith('job_') else 'reject'}:list cursor {text[:12]!r}",
                "GET",
                f"/v1/jobs?cursor={quoted}&limit=5",
                {},
            )
        )
        cases.append((f"reject:list status {text[:12]!r}", "GET", f"/v1/jobs?status={quoted}", {}))
    for limit in ("0", "-1", "101", "1e3", "nan", "inf", "99999999999999999999", "1.5"):
        cases.append(
            (f"reject:list limit {limit}", "GET", "/v1/jobs", {"params": {"limit": limit}})
        )
    # assets
    for name, body, ctype in (
        ("asset bomb", _bomb_png(100_000, 100_000), "image/png"),
        ("asset text as png", b"not an image", "image/png"),
        ("asset svg", b"<svg/>", "image/svg+xml"),
        ("asset empty", b"", "image/png"),
        ("asset png as jpeg", _png(64, 64), "image/jpeg"),
        ("asset html", b"<html></html>", "text/html"),
    ):
        cases.append(
            (
                f"{'any' if 'as jpeg' in name else 'reject'}:{name}",
                "POST",
                "/v1/assets",
                {"data": body, "headers": {"Content-Type": ctype}},
            )
        )
    cases.append(
        (
            "reject:asset multipart without file",
            "POST",
            "/v1/assets",
            {"files": {"other": ("x.png", _png(64, 64), "image/png")}},
        )
    )
    cases.append(
        (
            "reject:asset multipart filename traversal",
            "POST",
            "/v1/assets",
            {"files": {"file": ("../../../etc/passwd", b"x", "image/png")}},
        )
    )
    return cases


def requests_quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def test_hostile_inputs_get_4xx_and_never_a_5xx(make_farm, spec_factory, record_row, rel):
    farm = make_farm(step_ms=0)
    started = time.monotonic()
    base = spec_factory(
        seed=1, regions=[{"prompt": "left", "mask": _mask()}, {"prompt": "right", "mask": _mask()}]
    )
    cases = hostile_corpus(base)
    wrong: list[str] = []
    accepted: list[str] = []
    for name, method, path, kwargs in cases:
        response = farm.call(method, path, **kwargs)
        status = response.status_code
        expect, _, label = name.partition(":")
        if status >= 500:
            wrong.append(f"{label}: {status} {response.text[:200]}")
        elif expect == "reject" and status < 400 and status != 302:
            wrong.append(f"{label}: accepted with {status}")
        elif expect == "accept" and status != 202:
            wrong.append(f"{label}: refused with {status} {response.text[:300]}")
        if status == 202:
            accepted.append(response.json()["id"])
        if status == 422:
            # Every bad field named by its path, no union tags or model names in it.
            for d in response.json()["error"]["details"]:
                if any(
                    isinstance(p, str)
                    and re.search(
                        r"[A-Z]\w+\[|function-|tagged-union|"
                        r"JobSpec|Region\b",
                        p,
                    )
                    for p in d["loc"]
                ):
                    wrong.append(f"{label}: loc names a model {d['loc']}")
    # Keys are built only from ids the server made: the accepted jobs' stored objects, and
    # nothing else a client string could have named.
    farm.start_workers(1)
    farm.wait_final(accepted, timeout=120)
    keys = [
        o["Key"]
        for page in farm.s3.get_paginator("list_objects_v2").paginate(Bucket=farm.bucket)
        for o in page.get("Contents", [])
    ]
    pattern = re.compile(
        r"acme/(job_[0-9A-HJKMNP-TV-Z]{26}/(image\.png|job\.json)|assets/[0-9a-f]{64}"
        r"\.(png|webp|jpg))"
    )
    odd = [k for k in keys if not pattern.fullmatch(k)]
    done = farm.tally("", accepted, started=started)
    row = rel.Row(
        "hostile input corpus",
        len(cases),
        succeeded=done.succeeded,
        errors_5xx=farm.counted.errors_5xx,
        lost=done.lost,
        duplicated=done.duplicated,
        seconds=time.monotonic() - started,
        notes=f"{len(accepted)} harmless ones accepted and rendered; "
        f"{len(wrong) + len(farm.counted.contract_breaks)} contract breaks",
    )
    row.failed.update({f"answer {k}": v for k, v in farm.counted.by_status.items() if k >= 400})
    record_row(row)
    assert odd == [], odd
    problems = wrong + farm.counted.contract_breaks
    assert problems == [], "\n".join(problems[:40])
    assert (row.lost, row.duplicated, row.errors_5xx) == (0, 0, 0), row
