"""toy/train.py as CI runs it: every stage of both models for a few dozen steps, from the
same seeds as the shipped weights; the losses fall and the outputs load as models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from schemas import ModelEntry
from worker.render import load_model

REPO = Path(__file__).resolve().parents[2]
SCALE = "0.015"
"""Share of the full training's steps: 30 to 45 per stage."""


def train(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "toy/train.py", *args, "--scale", SCALE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def falls(curve: list[float]) -> bool:
    """The last quarter of a loss curve lies below its first quarter."""
    quarter = max(1, len(curve) // 4)
    return float(np.mean(curve[-quarter:])) < float(np.mean(curve[:quarter]))


def test_a_short_training_of_both_toy_models_lowers_every_loss_and_loads(tmp_path, model_cache):
    train("toy", "--out", str(tmp_path))
    train("toy-xl", "--out", str(tmp_path), "--vae-from", str(tmp_path / "toy" / "vae"))
    for name, stages in (("toy", ("vae", "unet", "lcm")), ("toy-xl", ("unet",))):
        report = json.loads((tmp_path / name / "training.json").read_text())
        assert sorted(report["losses"]) == sorted(stages)
        for stage in ("vae", "unet"):
            if stage in stages:
                assert falls(report["losses"][stage]), (name, stage, report["losses"][stage])
        assert (tmp_path / name / "SHA256SUMS").read_text().count(".safetensors") >= 3
    toy = ModelEntry(name="t", source=str(tmp_path / "toy"), lora=str(tmp_path / "toy-lcm-lora"))
    xl = ModelEntry(name="x", source=str(tmp_path / "toy-xl"), family="sdxl", scheduler="euler")
    for entry in (toy, xl):
        loaded = load_model(entry, device="cpu", cache_dir=model_cache)
        assert loaded.pipe.vae.config.scaling_factor > 0
