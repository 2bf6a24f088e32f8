"""The submit benchmark (bench/api.py) runs end to end on a tiny load and reports both servers,
and the API's run with event streams held open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "api.py"
STREAMS = 20


@pytest.mark.timeout(120)
def test_bench_api_short_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--duration",
            "1",
            "--rate",
            "20",
            "--clients",
            "4",
            "--warmup",
            "0.5",
            "--streams",
            str(STREAMS),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "machine:" in text
    assert "== open loop:" in text and "== closed loop:" in text
    for section in text.split("== ")[1:3]:  # the open and the closed table
        rows = [line.split()[0] for line in section.splitlines()[2:] if line.strip()]
        assert rows[:2] == ["api", "floor"], section
    assert "api/floor closed-loop throughput:" in text
    assert "zero errors" in text and "open-loop p99 < 50 ms" in text
    streams_table = text.split(f"== open loop with {STREAMS} event streams open")[1]
    row = streams_table.splitlines()[2].split()
    assert row[:4] == ["api", str(STREAMS), str(STREAMS), "0"], streams_table
    assert f"{STREAMS} streams: zero errors" in text

    data = json.loads(out.read_text())
    assert {"machine", "config", "results", "closed_ratio", "goals"} <= data.keys()
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["python"]
    assert set(data["results"]) == {"api", "floor"}
    for server, res in data["results"].items():
        opened, closed = res["open"], res["closed"]
        assert opened["sent"] == 20 and opened["errors"] == 0, (server, opened)
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "achieved_rate"):
            assert opened[key] > 0, (server, key)
        assert closed["sent"] > 0 and closed["errors"] == 0, (server, closed)
        assert closed["rps"] > 0 and closed["p99_ms"] >= closed["p50_ms"] > 0
        assert res["correctness"]["match"], (server, res["correctness"])
    api = data["results"]["api"]["correctness"]
    assert api["queued_messages"] == api["job_records"] == api["answers_202"]
    assert data["closed_ratio"] > 0
    assert data["goals"]["zero_errors"] is True
    assert set(data["goals"]) == {
        "zero_errors",
        "open_p99_under_50ms",
        "closed_half_of_floor",
        "streams_zero_errors",
        "streams_open_p99_under_50ms",
    }

    # The streams run: every stream answered 200 and stayed open through the whole open loop,
    # and its submits (and the jobs the streams watch) are in the correctness count above.
    streams = data["results"]["api"]["streams"]
    assert "streams" not in data["results"]["floor"]
    assert streams["streams"] == STREAMS and streams["answered"] == {"200": STREAMS}, streams
    assert streams["ended_early"] == 0 and streams["errors"] == 0, streams
    assert streams["watched_jobs"] >= 1
    assert streams["open"]["sent"] == 20 and streams["open"]["errors"] == 0, streams["open"]
    assert streams["open"]["p99_ms"] >= streams["open"]["p50_ms"] > 0
    assert data["goals"]["streams_zero_errors"] is True
