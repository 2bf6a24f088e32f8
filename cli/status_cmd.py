"""`regionfarm status`: queue depth per model, live workers and their devices, recent failures."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cli.client import DEFAULT_URL, ApiClient, ApiError

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("status", help="queue depth per model, live workers, recent failures")
    p.add_argument(
        "--url",
        default=os.environ.get("REGIONFARM_API_URL", DEFAULT_URL),
        help="the API (default REGIONFARM_API_URL or %(default)s)",
    )
    p.add_argument("--key", default=os.environ.get("REGIONFARM_API_KEY"), help="API key")
    p.add_argument("--json", action="store_true", help="print the JSON answer")
    p.set_defaults(handler=run_status)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def run_status(args: argparse.Namespace) -> int:
    try:
        status = ApiClient(args.url, args.key).status()
    except ApiError as exc:
        print(f"regionfarm status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    _table(
        [("model", "queued", "workers")]
        + [(q["model"], str(q["queued"]), str(q["workers"])) for q in status["queues"]]
    )
    print()
    workers = [
        (w["name"], w["model"], w["device"] or "-", f"{w['seen_seconds_ago']:.0f} s ago")
        for w in status["workers"]
    ]
    _table([("worker", "model", "device", "heartbeat"), *workers])
    if status["recent_failures"]:
        print("\nrecent failures:")
        for f in status["recent_failures"]:
            error = f["error"] or {}
            print(f"  {f['id']}  {f['finished_at']}  {error.get('code')}: {error.get('message')}")
    return 0
