"""Load: bench/load.py submits at the API's measured capacity while 2 workers drain the queue;
zero errors, and every accepted job accounted for at the end (60 s in the full run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1500)]


def test_sustained_load_at_capacity_while_two_workers_drain(
    record_row, rel, model_cache: Path, tmp_path: Path
):
    duration = rel.pick(3, 60)
    out, plot = tmp_path / "load.json", rel.ARTIFACTS / "queue-depth.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    done = subprocess.run(
        [
            sys.executable,
            str(rel.ROOT / "bench" / "load.py"),
            "--duration",
            str(duration),
            "--measure",
            str(rel.pick(2, 5)),
            "--model-cache",
            str(model_cache),
            "--drain-timeout",
            str(rel.pick(240, 1200)),
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        cwd=rel.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=rel.pick(420, 1400),
        check=False,
    )
    print(done.stdout)
    assert out.exists(), done.stdout + done.stderr
    r = json.loads(out.read_text())
    acc, load = r["accounting"], r["load"]
    (rel.ARTIFACTS / "load.txt").write_text(done.stdout)
    row = rel.Row(
        f"load: {r['rate']:.0f} req/s for {duration} s, 2 workers",
        acc["accepted"],
        succeeded=acc["succeeded"],
        duplicated=acc["duplicated"],
        lost=acc["lost"] + acc["unfinished"],
        errors_5xx=r["errors_5xx"],
        seconds=time.monotonic() - started,
        notes=f"capacity {r['capacity']['rps']:.0f} req/s; submit p99 "
        f"{load['p99_ms']:.0f} ms; max queue depth {r['max_depth']}; drained "
        f"{r['drain_seconds'] or 0:.0f} s after the load; plot {plot.name}",
    )
    row.failed.update(acc["failed"])
    if load["errors"] - r["errors_5xx"]:
        row.failed["non-2xx or no answer"] = load["errors"] - r["errors_5xx"]
    record_row(row)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert load["errors"] == 0 and r["errors_5xx"] == 0, load["status_counts"]
    assert acc["lost"] == acc["duplicated"] == acc["unfinished"] == 0, acc
    assert acc["records"] == acc["accepted"] == acc["succeeded"] == acc["results_stored"], acc
    assert r["drained_at"] is not None
    assert load["achieved_rate"] >= 0.9 * r["rate"], (load["achieved_rate"], r["rate"])
    assert plot.stat().st_size > 1000
