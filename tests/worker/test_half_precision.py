"""fp16 and bf16 renders of every kind and family (and of the trained `toy`) through
`regionfarm render` on the CPU: finite, close to the fp32 render, and SDXL's VAE kept in fp32 under fp16 (SD1.5's in fp16)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from schemas import encode_png_data_uri, load_models
from worker.render import load_model

from .test_render_kinds import rect_mask

FAMILIES = ("tiny-random", "tiny-random-xl", "toy")
HALF = ("float16", "bfloat16")
W, H = 192, 128
PICTURE = np.random.default_rng(1).integers(0, 256, size=(H, W, 3), dtype=np.uint8)

# Largest differences to the fp32 render, in 8-bit pixel levels (max over pixels, mean over
# pixels), over both families and the six jobs below. Measured on torch 2.13 (CPU): float16
# max 3, mean 0.075; bfloat16 max 16, mean 0.63 (both worst on tiny-random's regions on white).
# Another seed differs from the fp32 render by a mean of 32 (tiny-random) and 45 levels
# (tiny-random-xl), 63 (toy), so these bounds tell a dtype's rounding apart from a different
# render.
# The trained `toy` (activations of a wider range than random weights have) measured float16
# max 15, mean 0.87; bfloat16 max 81, mean 5.6 (its regions and panorama jobs).
TOLERANCES = {
    "tiny-random": {"float16": (4, 0.25), "bfloat16": (32, 1.5)},
    "tiny-random-xl": {"float16": (4, 0.25), "bfloat16": (32, 1.5)},
    "toy": {"float16": (20, 1.25), "bfloat16": (96, 8.0)},
}

# The `multidiffusion` baseline keeps its latents in the model's dtype, as diffusers does:
# measured float16 max 3, mean 0.27; bfloat16 max 18, mean 2.0 (tiny-random, 4 DDIM steps).
BASELINE_TOLERANCE = {"float16": (8, 0.75), "bfloat16": (48, 5.0)}


def _jobs() -> dict[str, dict]:
    lake = {"prompt": "a lake", "mask": rect_mask(W, H, (96, 32, 192, 128))}
    house = {"prompt": "a red house", "mask": rect_mask(W, H, (0, 0, 96, 128))}
    panorama = {"kind": "panorama", "width": 384, "background": {"prompt": "the alps"}}
    return {
        "regions": {"kind": "regions", "regions": [house, lake], "background": {"prompt": "sky"}},
        "regions on white": {"kind": "regions", "regions": [lake], "guidance_scale": 2.0},
        "inpainting": {
            "kind": "regions",
            "regions": [lake],
            "background": {"prompt": "a field", "image": encode_png_data_uri(PICTURE)},
        },
        "panorama": panorama,
        "panorama, wrapped": {**panorama, "wrap": "horizontal"},
        "image": {"kind": "image", "width": 128, "background": {"prompt": "a cat"}},
    }


JOBS = _jobs()


@pytest.fixture(scope="module")
def models_file(tmp_path_factory, model_cache) -> Path:
    """A models file with each tiny model in every dtype, `<name>-<dtype>`."""
    packaged = load_models()
    lines = []
    for name in FAMILIES:
        entry = packaged[name].model_dump(exclude={"name"}, exclude_none=True)
        for dtype in ("float32", *HALF):
            lines.append(f"[models.{name}-{dtype}]")
            for key, value in {**entry, "dtype": dtype}.items():
                lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path_factory.mktemp("half") / "models.toml"
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())  # the file is valid TOML
    return path


def cli_render(
    model: str, job: str, tmp: Path, monkeypatch, models_file, seed=3, **extra
) -> np.ndarray:
    """`regionfarm render` of one job with one model of the models file; the image's pixels."""
    monkeypatch.setenv("REGIONFARM_MODELS_FILE", str(models_file))
    monkeypatch.setenv("REGIONFARM_TORCH_THREADS", "1")
    spec = tmp / f"{job}.json".replace(" ", "_").replace(",", "")
    spec.write_text(json.dumps({"width": W, "height": H, "seed": seed, **JOBS[job], **extra}))
    out = spec.with_suffix(f".{model}.{seed}.{len(extra)}.png")
    code = main(
        ["render", str(spec), "-o", str(out), "--model", model, "--device", "cpu", "--quiet"]
    )
    assert code == 0
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, models_file):
    """The fp32 render of every job and family (computed once for the module)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("fp32")
    try:
        return {
            (name, job): cli_render(f"{name}-float32", job, tmp, mp, models_file)
            for name in FAMILIES
            for job in JOBS
        }
    finally:
        mp.undo()


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", FAMILIES)
def test_half_precision_renders_every_kind_close_to_fp32(
    name, dtype, fp32, tmp_path, monkeypatch, models_file
):
    most, mean = TOLERANCES[name][dtype]
    for job in JOBS:
        half = cli_render(f"{name}-{dtype}", job, tmp_path, monkeypatch, models_file)
        reference = fp32[(name, job)]
        assert half.shape == reference.shape and np.isfinite(half).all()
        diff = np.abs(half - reference)
        assert diff.max() <= most and diff.mean() <= mean, (
            f"{name} {dtype} {job}: max {diff.max()}, mean {diff.mean():.3f} over the fp32 render"
        )


@pytest.mark.parametrize("dtype", HALF)
def test_the_multidiffusion_baseline_renders_in_half_precision(
    dtype, tmp_path, monkeypatch, models_file
):
    most, mean = BASELINE_TOLERANCE[dtype]
    for job in ("regions", "panorama, wrapped"):
        pixels = {
            d: cli_render(
                f"tiny-random-{d}",
                job,
                tmp_path,
                monkeypatch,
                models_file,
                method="multidiffusion",
                steps=4,
            )
            for d in ("float32", dtype)
        }
        diff = np.abs(pixels[dtype] - pixels["float32"])
        assert np.isfinite(pixels[dtype]).all()
        assert diff.max() <= most and diff.mean() <= mean, (job, diff.max(), diff.mean())


@pytest.mark.parametrize("name", FAMILIES)
def test_another_seed_is_far_outside_the_tolerance(name, fp32, tmp_path, monkeypatch, models_file):
    """The tolerance is tight enough to see a different render (here: another seed)."""
    other = cli_render(f"{name}-float32", "regions", tmp_path, monkeypatch, models_file, seed=4)
    difference = np.abs(other - fp32[(name, "regions")]).mean()
    assert difference > 4 * TOLERANCES[name]["bfloat16"][1]


@pytest.mark.parametrize(
    ("name", "dtype", "vae"),
    [
        ("tiny-random-xl", "float16", torch.float32),  # SDXL's VAE overflows in fp16
        ("tiny-random-xl", "bfloat16", torch.bfloat16),  # bf16 has fp32's range
        ("tiny-random", "float16", torch.float16),  # as diffusers' SD1.5 pipeline runs it
        ("tiny-random", "bfloat16", torch.bfloat16),
    ],
)
def test_the_unet_takes_the_dtype_and_the_vae_stays_fp32_where_the_family_needs_it(
    name, dtype, vae, models_file, model_cache
):
    entry = load_models(models_file)[f"{name}-{dtype}"]
    model = load_model(entry, device="cpu", cache_dir=model_cache)
    assert model.pipe.unet.dtype == getattr(torch, dtype) == model.dtype
    assert model.pipe.vae.dtype == vae
