"""The shipped `toy` model: `regionfarm render` and the farm give the same bytes, the weights
load as a directory and as a single file, and a changed weight file is refused.

How well it draws what each region asks for is measured by bench/fidelity.py; the adherence
goal (0.85 per region) becomes a test here once the weights reach it (docs/toy-models.md)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from examples.demo import LocalFarm
from schemas.images import decode_image, mask_array
from toy.measure import region_adherence
from worker.render import ModelUnavailable, load_model
from worker.render.toy_models import toy_path

from .checkpoint_writer import save_single_file, to_original_layout

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "regionfarm"
MARGIN = 8
"""Pixels: adherence is measured this far inside each mask (the masks' edges blend)."""
GOAL = 0.85


def run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def mask_uri(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def halves_spec(width: int = 512, height: int = 256) -> dict:
    """Two regions side by side: a red left half and a blue right half."""
    left = np.zeros((height, width), dtype=bool)
    left[:, : width // 2] = True
    return {
        "kind": "regions",
        "width": width,
        "height": height,
        "seed": 11,
        "background": {"prompt": "a gray background"},
        "regions": [
            {"prompt": "red", "mask": mask_uri(left)},
            {"prompt": "blue", "mask": mask_uri(~left)},
        ],
    }


def scores(spec: dict, image_path: Path) -> list[float]:
    """Region adherence per region, then the background's (None where it has no pixels)."""
    image = np.asarray(Image.open(image_path).convert("RGB"))
    pixels = spec["width"] * spec["height"]
    masks = [
        mask_array(decode_image(r["mask"], max_pixels=pixels, loc=["mask"]))
        for r in spec.get("regions", [])
    ]
    prompts = [r["prompt"] for r in spec.get("regions", [])]
    return region_adherence(image, masks, prompts, spec["background"]["prompt"], MARGIN)


def render(spec: dict, model: str, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / f"{name}.png"
    proc = run("render", str(path), "--model", model, "--quiet", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def assert_adheres(values: list[float | None], what: str) -> None:
    measured = [v for v in values if v is not None]
    assert measured, f"{what}: nothing measured"
    assert min(measured) >= GOAL, f"{what}: region adherence {values} (goal {GOAL} each)"


def test_the_farm_renders_the_same_bytes_as_regionfarm_render(model_cache, tmp_path):
    from cli.client import ApiClient

    spec = halves_spec()
    local = render(spec, "toy", tmp_path, "local")
    with LocalFarm("toy", "cpu", tmp_path / "farm") as farm:
        client = ApiClient(farm.url)
        job = client.submit({**spec, "model": "toy", "output": {"format": "png"}})
        final = next(data for name, data in client.follow(job["id"]) if name == "job")
        assert final["status"] == "succeeded", final
        remote = client.download_result(job["id"], tmp_path / "farm.png")
    assert Path(remote).read_bytes() == local.read_bytes()


@pytest.fixture(scope="module")
def toy(models, model_cache):
    return load_model(models["toy"], device="cpu", cache_dir=model_cache)


def test_a_changed_weight_file_is_refused_with_what_to_do(toy, model_cache, tmp_path):
    copy = Path(shutil.copytree(toy_path("toy"), tmp_path / "toy"))
    entry = toy.entry.model_copy(update={"source": str(copy)})
    load_model(entry, device="cpu", cache_dir=model_cache)  # intact: it loads
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailable, match=r"sha256.*restore it"):
        load_model(entry, device="cpu", cache_dir=model_cache)


def test_the_shipped_weights_load_as_a_single_file_and_render_the_same_bytes(
    toy, model_cache, ctx, settings, tmp_path
):
    from schemas import normalize_spec, parse_spec
    from worker.render import load_inputs, render_job

    base = load_model(
        toy.entry.model_copy(update={"lora": None}), device="cpu", cache_dir=model_cache
    )
    checkpoint = tmp_path / "toy.safetensors"
    save_single_file(
        checkpoint, to_original_layout(base.pipe.unet, base.pipe.vae, base.pipe.text_encoder)
    )
    shutil.copytree(
        toy_path("toy"),
        tmp_path / "toy.config",
        ignore=shutil.ignore_patterns("*.safetensors", "SHA256SUMS"),
    )
    entry = toy.entry.model_copy(update={"source": str(checkpoint)})
    single = load_model(entry, device="cpu", cache_dir=model_cache)
    spec, _ = normalize_spec(parse_spec({**halves_spec(256, 128), "model": "toy"}, ctx), ctx)
    inputs = load_inputs(spec, max_pixels=settings.max_pixels)
    want = render_job(toy, spec, inputs).image
    assert render_job(single, spec, inputs).image.tobytes() == want.tobytes()
    # A single file listed in the SHA256SUMS next to it is checked too.
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  toy.safetensors\n")
    with pytest.raises(ModelUnavailable, match="sha256"):
        load_model(entry, device="cpu", cache_dir=model_cache)
