"""The submit benchmark (bench/api.py) runs end to end on a tiny load and reports both servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "api.py"


@pytest.mark.timeout(120)
def test_bench_api_short_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "1", "--rate", "20", "--clients", "4",
         "--warmup", "0.5", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "machine:" in text
    assert "== open loop:" in text and "== closed loop:" in text
    for section in text.split("== ")[1:3]:  # the open and the closed table
        rows = [line.split()[0] for line in section.splitlines()[2:] if line.strip()]
        assert rows[:2] == ["api", "floor"], section
    assert "api/floor closed-loop throughput:" in text
    assert "zero errors" in text and "open-loop p99 < 50 ms" in text

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
    assert set(data["goals"]) == {"zero_errors", "open_p99_under_50ms", "closed_half_of_floor"}
