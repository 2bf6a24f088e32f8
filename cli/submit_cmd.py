"""`regionfarm submit`: send a job spec to the farm's REST API, optionally wait and download."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Self

from schemas.formats import EXTENSIONS, SUFFIX_FORMATS

from .client import DEFAULT_URL, STREAM_RETRIES, ApiClient, ApiError

EXIT_ERROR, EXIT_BAD_INPUT = 1, 2
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
POLL_INTERVAL = 1.0  # seconds between GETs when the events stream is not available
RETRY_BACKOFF = 0.5  # seconds before the first retry of a refused or 503 request, then doubled
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="send a job spec to the farm; optionally wait with a progress bar and download",
        description="Submit SPEC.json to the farm's REST API and print the job id. With --wait "
        "(or -o), follow the job with a progress bar and download the image when it succeeds; "
        "a dropped events stream is resumed where it broke (Last-Event-ID), and the job polled "
        f"after {STREAM_RETRIES} failed reconnects.",
    )
    p.add_argument("spec", type=Path, metavar="SPEC.json", help="job spec (see examples/)")
    p.add_argument("--url", help=f"the farm's API; default: REGIONFARM_API_URL, else {DEFAULT_URL}")
    p.add_argument("--key", help="API key; default: REGIONFARM_API_KEY")
    p.add_argument("--wait", action="store_true", help="wait for the job and download its image")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="OUT",
        help="where to write the image (implies --wait; its suffix .png, .webp or .jpg sets the "
        "format); default: <job id>.<png|webp|jpg> in the current directory",
    )
    p.add_argument("--seed", type=int, help="seed (overrides the spec)")
    p.add_argument("--model", help="model name (overrides the spec)")
    p.add_argument("--priority", type=int, help="0 (lowest) .. 9 (highest) (overrides the spec)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no notes on stderr")
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="Idempotency-Key header; the same key and spec within 24 h return the first job "
        "(default: a new random key, reused by this command's own retries)",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)"
    )
    p.set_defaults(handler=run_submit)


def fail(message: str, code: int) -> int:
    print(f"regionfarm: {message}", file=sys.stderr)
    return code


class SpecFileError(ValueError):
    """SPEC.json is missing or is not a JSON object."""


def read_spec(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecFileError(f"SPEC.json: {path}: no such file") from None
    except IsADirectoryError:
        raise SpecFileError(f"SPEC.json: {path} is a directory, not a job spec file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecFileError(f"SPEC.json: {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SpecFileError(f"SPEC.json: {path}: a job spec is a JSON object")
    return data


def apply_overrides(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The spec with --seed, --model, --priority and OUT's format applied; the farm validates."""
    spec = dict(spec)
    if args.seed is not None:
        spec["seed"] = args.seed
    if args.model:
        spec["model"] = args.model
    if args.priority is not None:
        spec["priority"] = args.priority
    suffix_format = SUFFIX_FORMATS.get(args.out.suffix.lower()) if args.out is not None else None
    if suffix_format:
        output = spec.get("output") if isinstance(spec.get("output"), dict) else {}
        spec["output"] = {**output, "format": suffix_format}
    return spec


def run_submit(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("REGIONFARM_API_URL") or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return fail(f"--url: {url!r} is not an http(s) URL (e.g. {DEFAULT_URL})", EXIT_BAD_INPUT)
    if args.timeout <= 0:
        return fail(f"--timeout: must be more than 0 seconds, got {args.timeout:g}", EXIT_BAD_INPUT)
    key = args.key or os.environ.get("REGIONFARM_API_KEY") or None
    try:
        spec = apply_overrides(read_spec(args.spec), args)
    except SpecFileError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    client = ApiClient(url, key, timeout=args.timeout, backoff=RETRY_BACKOFF)
    try:
        job = client.submit(spec, idempotency_key=args.idempotency_key)
    except ApiError as exc:
        return report_error(exc, args.spec, key)
    except ValueError as exc:  # json.dumps: NaN or infinity in the spec
        return fail(f"SPEC.json: {args.spec}: cannot be sent as JSON ({exc})", EXIT_BAD_INPUT)
    job_id = str(job.get("id", ""))
    print(job_id, flush=True)
    if not args.quiet:
        print(
            f"regionfarm: job {job_id} is {job.get('status', '?')} (model "
            f"{job.get('model', '?')}); Location: {client.last_location}",
            file=sys.stderr,
        )
    if not (args.wait or args.out):
        return 0

    try:
        final = wait_for_job(client, job, quiet=args.quiet)
    except KeyboardInterrupt:
        return fail(
            f"stopped waiting; job {job_id} keeps running on the farm. Look at it with "
            f'`curl -H "Authorization: Bearer $REGIONFARM_API_KEY" {client.last_location}` '
            "(DELETE on that URL cancels it).",
            EXIT_ERROR,
        )
    except ApiError as exc:
        return report_error(exc, args.spec, key)
    return finish(client, final, args.out, quiet=args.quiet)


def wait_for_job(client: ApiClient, job: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Follow `job` to its end with a progress bar on stderr; returns the final job object.

    The events stream is followed first; a dropped connection is resumed where it broke
    (Last-Event-ID), a few times with backoff; when that fails too, the job is polled with GET
    every POLL_INTERVAL seconds instead. Raises ApiError."""
    job_id = str(job["id"])
    with _Bar(job, quiet) as bar:
        if job.get("status") in TERMINAL:
            return job

        def resuming(exc: ApiError, pause: float) -> None:
            bar.note(f"the events stream stopped ({exc}); resuming it in {pause:.1f} s")

        try:
            for name, data in client.follow(job_id, on_retry=resuming):
                if not isinstance(data, dict):
                    continue
                if name == "progress":
                    bar.progress(data)
                elif name == "status":
                    bar.status(data.get("status"))
                elif name == "job":
                    bar.job(data)
                    if data.get("status") in TERMINAL:
                        return data
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            bar.note(f"the events stream stopped ({exc}); asking every {POLL_INTERVAL:g} s")
        while True:
            job = client.get(job_id)
            bar.job(job)
            if job.get("status") in TERMINAL:
                return job
            time.sleep(POLL_INTERVAL)


def finish(client: ApiClient, job: dict[str, Any], out: Path | None, *, quiet: bool) -> int:
    """Download a succeeded job's image, or report why the job did not succeed."""
    job_id, status = str(job.get("id", "")), job.get("status")
    if status == "succeeded":
        result = job.get("result") or {}
        if out is None:
            fmt = str(result.get("format") or "png")
            ext = EXTENSIONS.get(fmt, fmt)
            # Both parts come from the server: never let them name a path elsewhere.
            name = f"{job_id}.{ext}" if _SAFE_NAME.match(job_id) and ext.isalnum() else None
            out = Path(name or "result.png")
        try:
            client.download_result(job_id, out, sha256=result.get("sha256"))
        except ApiError as exc:
            return fail(
                f"job {job_id} succeeded but its image could not be fetched: {exc}", EXIT_ERROR
            )
        except OSError as exc:
            return fail(f"-o: cannot write {out} ({exc.strerror or exc})", EXIT_ERROR)
        print(out, flush=True)
        if not quiet:
            seconds = result.get("render_seconds")
            took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
            print(
                f"regionfarm: job {job_id} succeeded{took}; wrote {out} (seed "
                f"{result.get('seed', '?')})",
                file=sys.stderr,
            )
        return 0
    if status == "failed":
        error = job.get("error") or {}
        return fail(
            f"job {job_id} failed: {error.get('code', 'unknown')}: "
            f"{error.get('message', 'no message')}",
            EXIT_ERROR,
        )
    return fail(f"job {job_id} was {status}", EXIT_ERROR)


def report_error(exc: ApiError, spec_path: Path, key: str | None) -> int:
    """Print an API error for a user; the exit code it deserves."""
    if exc.status in (400, 413, 422):
        print(
            f"regionfarm: the farm refused {spec_path} ({exc.status} {exc.code}): {exc.message}",
            file=sys.stderr,
        )
        for detail in exc.details:
            loc = ".".join(str(part) for part in detail.get("loc") or [])
            msg = detail.get("msg", "")
            print(f"{loc}: {msg}" if loc else str(msg), file=sys.stderr)
        return EXIT_BAD_INPUT
    if exc.status == 401:
        given = "the API key was refused" if key else "no API key was given"
        return fail(
            f"{given} ({exc.message}): pass --key KEY or set REGIONFARM_API_KEY (a farm admin "
            "makes keys with `regionfarm keys add TENANT`)",
            EXIT_ERROR,
        )
    if exc.status == 429:
        return fail(
            f"too many queued jobs for this key ({exc.message}); try again later", EXIT_ERROR
        )
    return fail(str(exc), EXIT_ERROR)


class _Bar:
    """A tqdm bar over the job's steps; its description is the job's status."""

    def __init__(self, job: dict[str, Any], quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(
            total=None, desc=str(job.get("status") or ""), unit="step", disable=quiet, leave=True
        )
        self.quiet = quiet
        self.job(job)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def status(self, status: object) -> None:
        if isinstance(status, str) and status:
            self.bar.set_description_str(status)

    def progress(self, progress: dict[str, Any]) -> None:
        total, step, eta = progress.get("total"), progress.get("step"), progress.get("eta_seconds")
        if isinstance(total, int) and total > 0 and total != self.bar.total:
            self.bar.total = total
        if isinstance(step, int) and step >= 0:
            if step < self.bar.n:  # the job went back to the queue and starts over
                self.bar.reset(total=self.bar.total)
            self.bar.update(step - self.bar.n)
        if isinstance(eta, int | float):
            self.bar.set_postfix_str(f"eta {eta:.1f} s", refresh=False)
        self.bar.refresh()

    def job(self, job: dict[str, Any]) -> None:
        self.status(job.get("status"))
        if isinstance(job.get("progress"), dict):
            self.progress(job["progress"])

    def note(self, message: str) -> None:
        if not self.quiet:
            self.bar.write(f"regionfarm: {message}", file=sys.stderr)
