"""The render benchmark (bench/render.py) runs end to end at its quick sizes on tiny-random."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "render.py"


@pytest.mark.timeout(180)
def test_bench_render_quick_run(tmp_path: Path, model_cache: Path) -> None:
    out, json_path = tmp_path / "out", tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env |= {"HF_HUB_OFFLINE": "1", "REGIONFARM_MODEL_CACHE": str(model_cache)}
    # One thread: on a busy 2-core machine two torch threads can be many times slower. Two
    # of the five baseline steps are timed, so the scaling path runs too.
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--max-baseline-steps",
            "2",
            "--out",
            str(out),
            "--json",
            str(json_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "machine:" in text
    assert "torch threads 1" in text and "diffusers 0.42" in text
    for section in (
        '== 1. panorama 256x1024, "a photo of the dolomites"',
        "== 2. nine-region example 192x480",
        "== 3. panoramas at our defaults, height 256",
        "== goals",
    ):
        assert section in text, text
    rows = {}  # the table rows by their key
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("a", "b", "c", "md", "smd"):
            rows[words[0]] = line
    assert "scaled from 2 of 5 steps" in rows["a"] and "scaled from 2 of 5 steps" in rows["b"]
    assert "measured" in rows["c"] and "scaled from 2 of 5 steps" in rows["md"]
    assert "b/a = " in text and "c/a = " in text
    assert sum(line.strip().startswith(("PASS", "FAIL")) for line in text.splitlines()) == 4

    png = out / "render_scaling.png"
    assert f"plot: {png}" in text
    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG" and image.width > 400 and image.height > 200

    data = json.loads(json_path.read_text())
    assert data == json.loads((out / "render_bench.json").read_text())
    keys = {"machine", "config", "panorama", "regions", "widths", "ratios", "goals", "plot"}
    assert keys <= data.keys()
    assert data["machine"]["versions"]["torch"] and data["machine"]["device"] == "cpu"
    a, b, c = data["panorama"]
    # 256x1024 is a 32x128 latent: 9 views of 64 (stride 8) in 5 steps, uncond and cond in one
    # call; the calls of the two scaled baselines are counted over 2 steps and scaled to 5.
    for row in (a, b):
        assert row["scaled"] and row["ran_steps"] == 2 and row["steps"] == 5
        assert (row["unet_calls"], row["unet_samples"]) == (45, 90)
        assert row["wall_s"] > row["measured_s"] > 0
    assert not c["scaled"] and c["wall_s"] == c["measured_s"] > 0
    # The shrunk example: one view of the 24x60 latent per step, 9 regions and the background
    # prompt, uncond and cond.
    md, smd = data["regions"]
    assert (md["unet_calls"], md["unet_samples"]) == (5, 100)
    assert smd["steps"] == 5 and not smd["scaled"]
    assert [r["width"] for r in data["widths"]] == [512, 1024, 2048]
    assert all(r["peak_added_mb"] > 0 for r in data["panorama"] + data["widths"])
    assert set(data["ratios"]) == {"b/a", "c/a", "regions md/default", "memory last/first"}
    assert set(data["goals"]) == {"b_over_a", "c_over_a", "regions_speedup", "memory_scaling"}
    assert all(isinstance(g["pass"], bool) for g in data["goals"].values())
