"""bench/gpu.py runs on the CPU at its tiny sizes and its report names every figure; its
full-size random models are the published architectures (built on the meta device)."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.py"


def _env(model_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    return env | {"HF_HUB_OFFLINE": "1", "REGIONFARM_MODEL_CACHE": str(model_cache)}


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(170)
def test_gpu_bench_runs_on_the_cpu_and_its_report_names_every_figure(tmp_path, model_cache):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        env=_env(model_cache),
        capture_output=True,
        text=True,
        timeout=160,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout
    for phrase in (
        "# GPU benchmark (tiny sizes)",
        "Command: `python bench/gpu.py --device cpu --threads 1 --out",
        "- versions: torch ",
        "**tiny sizes**",
        "## 1. The paper's headline jobs",
        "| nine regions (examples/landscape.json) | 192x480 |",
        "| panorama | 128x768 |",
        "| SDXL, three regions | 256x256 |",
        "59 s (RTX 2080 Ti)",
        "10 s (RTX 2080 Ti)",
        "12 s (RTX 2080 Ti)",
        "## 2. Panorama 128x512: diffusers' pipeline against ours",
        "| diffusers panorama pipeline (DDIM 4, guidance 7.5) | 128x512 |",
        "| ours, method multidiffusion (DDIM 4) | 128x512 |",
        "| ours, defaults | 128x512 |",
        "Wall time, ours/diffusers: multidiffusion ",
        "## 3. Yardstick: diffusers' StableDiffusionPipeline",
        "about 54 it/s eager on an H100",
        "## 4. Eager against compiled",
        "- compile and warm-up: ",
        "- nine-region job 256x640: eager ",
        "compiled/eager ",
        "graphs compiled by jobs after the warm-up (the nine-region job twice, then a 256x768 "
        "panorama): **0** (goal 0)",
        "## 5. Peak memory",
        "- peak GPU memory: not measured on the CPU",
        "## 6. Time to first preview",
        "## 7. Farm run",
        "20 mixed jobs",
        "0 failed",
        "jobs/minute",
        "submit-to-start latency: first job (idle farm)",
        "- not judged: 768x1920 nine-region job under 3 s",
    ):
        assert phrase in text, phrase
    # Every measured figure is a positive, finite number.
    rows = [line for line in text.splitlines() if re.match(r"\| .* \| \d+x\d+ \|", line)]
    assert len(rows) == 6
    for row in rows:
        wall = float(row.split(" | ")[2])
        assert 0 < wall < math.inf, row
    for pattern in (
        r"\*\*([\d.]+) it/s\*\*",
        r"\*\*([\d.]+) jobs/minute\*\*",
        r"([\d.]+) s from the start of the render to its first preview",
    ):
        value = float(re.search(pattern, text).group(1))
        assert 0 < value < math.inf, pattern


def test_the_repository_results_are_written_only_by_a_full_size_cuda_run(model_cache):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", "bench/RESULTS.md"],
        cwd=ROOT,
        env=_env(model_cache),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "full-size CUDA figures only" in proc.stderr


@pytest.mark.parametrize(
    ("family", "millions"),
    [("sd15", [859.5, 83.7, 123.1]), ("sdxl", [2567.5, 83.7, 123.1, 694.7])],
)
def test_the_random_models_are_the_published_architectures(family, millions):
    pipe = _bench_gpu().random_pipeline(family, "meta", torch.float16)
    modules = [pipe.unet, pipe.vae, pipe.text_encoder]
    if family == "sdxl":
        modules.append(pipe.text_encoder_2)
    assert [round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for m in modules] == millions
    assert all(p.dtype == torch.float16 for m in modules for p in m.parameters())
    assert type(pipe.scheduler).__name__ == (
        "EulerDiscreteScheduler" if family == "sdxl" else "LCMScheduler"
    )
