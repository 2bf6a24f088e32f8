"""`make demo`'s script: one model load, the examples rendered, a table printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_demo_renders_examples_offline_with_the_fallback_model_and_prints_a_table(
    model_cache, tmp_path
):
    proc = subprocess.run(
        [
            sys.executable,
            "examples/demo.py",
            "--out",
            str(tmp_path),
            "--examples",
            "street",
            "inpaint",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    # Offline, the default model's weights are missing: one clear line, then tiny-random.
    assert "not available offline" in proc.stdout and "tiny-random" in proc.stdout
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("job"))
    assert lines[header].split() == ["job", "status", "seconds", "path"]
    rows = [line.split() for line in lines[header + 2 :]]
    assert [r[0] for r in rows] == ["street", "inpaint"]
    assert all(r[1] == "succeeded" for r in rows)
    for name in ("street", "inpaint"):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.size == (768, 768)
