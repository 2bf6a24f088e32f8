"""toy/measure.py on pictures drawn with the toy world's anchors, and bench/fidelity.py --quick
on the trained toy model (its JSON names every quick row with shares in [0, 1])."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toy import measure, world

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "fidelity.py"
H, W = 64, 96


def _paint(color: str, shape=(H, W)) -> np.ndarray:
    return np.broadcast_to(np.array(world.COLORS[color], dtype=np.uint8), (*shape, 3)).copy()


def _halves() -> tuple[np.ndarray, list[np.ndarray]]:
    """A red left half and a blue right half inside a gray frame of 16 px, and their masks."""
    image = _paint("gray")
    left = np.zeros((H, W), dtype=bool)
    right = np.zeros_like(left)
    left[16:48, 16:48] = True
    right[16:48, 48:80] = True
    image[left] = world.COLORS["red"]
    image[right] = world.COLORS["blue"]
    return image, [left, right]


def test_erode_shrinks_by_the_margin_but_not_at_the_canvas_edge():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 0:12] = True  # touches the canvas' left edge
    eroded = measure.erode(mask, 2)
    rows, cols = np.nonzero(eroded)
    assert (rows.min(), rows.max()) == (7, 12)
    assert (cols.min(), cols.max()) == (0, 9)  # the left edge is the canvas', not the mask's
    assert np.array_equal(measure.erode(mask, 0), mask)
    assert not measure.erode(mask, 6).any()  # 10 rows high: nothing lies 6 px inside


def test_a_perfect_picture_adheres_fully_and_leaks_nothing():
    image, masks = _halves()
    shares = measure.region_adherence(image, masks, ["red", "blue"], "a gray background", 4)
    assert shares == [1.0, 1.0, 1.0]
    assert measure.leakage(image, masks, ["red", "blue"], "a gray background", 4) == 0.0


def test_a_half_wrong_region_scores_one_half_and_shades_count_as_their_anchor():
    image, masks = _halves()
    image[16:48, 16:32] = world.COLORS["green"]  # the red region's left half is green
    image = np.clip(image.astype(int) + 9, 0, 255).astype(np.uint8)  # a lighter shade of all
    shares = measure.region_adherence(image, masks, ["red", "blue"], "a gray background", 0)
    assert shares == [0.5, 1.0, 1.0]


def test_the_margin_leaves_a_soft_edge_out():
    image, masks = _halves()
    image[16:48, 44:52] = world.COLORS["purple"]  # a blurred seam between the halves
    exact = measure.region_adherence(image, masks, ["red", "blue"], None, 0)
    assert exact[0] < 1 and exact[1] < 1 and exact[2] is None  # no background prompt
    assert measure.region_adherence(image, masks, ["red", "blue"], None, 4)[:2] == [1.0, 1.0]


def test_prompts_without_a_color_give_none():
    image, masks = _halves()
    assert measure.region_adherence(image, masks, ["a circle", "blue"], "gray", 2)[0] is None
    assert measure.leakage(image, masks, ["gray"], "a gray background", 2) is None
    with pytest.raises(ValueError, match="one per region"):
        measure.region_adherence(image, masks, ["red"], None, 2)


def test_leakage_counts_region_colors_in_the_background_but_not_its_own():
    image, masks = _halves()
    background = measure.erode(measure.background_mask(masks, (H, W)), 2)
    image[:, :8] = world.COLORS["red"]  # red spills into the frame's left columns
    expected = float(background[:, :8].sum()) / background.sum()
    got = measure.leakage(image, masks, ["red", "blue"], "a gray background", 2)
    assert got == pytest.approx(expected) and 0 < got < 1
    # A region asking for the background's own color is no leak.
    assert measure.leakage(image, masks, ["gray", "blue"], "a gray background", 2) == 0.0


def test_placement_of_an_object_inside_and_beside_its_region():
    image = _paint("white", (100, 100))
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:40, 20:40] = True
    image[25:35, 25:35] = world.COLORS["red"]
    inside, distance = measure.placement(image, mask, "red")
    assert inside == 1.0 and distance == pytest.approx(0.0)
    image[:] = world.COLORS["white"]
    image[25:35, 35:45] = world.COLORS["red"]  # half of it past the region's right edge
    inside, distance = measure.placement(image, mask, "red")
    assert inside == 0.5 and distance == pytest.approx(10.0)
    assert measure.placement(_paint("white", (100, 100)), mask, "red") == (None, None)


def _flat(width: int, rng: np.random.Generator, shift: np.ndarray | None = None) -> np.ndarray:
    """A green picture with a little pixel noise (a plain fill as a model draws it), its
    columns brightened by `shift` (one value per column) when given."""
    image = _paint("green", (32, width)).astype(int) + rng.integers(-3, 4, size=(32, width, 3))
    if shift is not None:
        image += shift[None, :, None].astype(int)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_seam_ratio_sees_a_jump_at_a_tile_border():
    rng = np.random.default_rng(0)
    clean = _flat(256, rng)
    assert measure.seam_ratio(clean, [64, 128, 192]) == pytest.approx(1.0, abs=0.35)
    seamed = _flat(256, rng, np.where(np.arange(256) >= 128, 30, 0))  # another shade at 128
    assert measure.seam_ratio(seamed, [64, 128, 192]) > 5
    assert measure.seam_ratio(seamed, [64, 192]) == pytest.approx(1.0, abs=0.35)  # not there
    assert measure.seam_ratio(seamed.transpose(1, 0, 2), [128], axis=0) > 5
    assert measure.seam_ratio(clean, [0, 256]) is None  # the canvas' own edges


def test_wrap_seam_ratio_compares_the_two_ends():
    rng = np.random.default_rng(1)
    assert measure.wrap_seam_ratio(_flat(256, rng)) == pytest.approx(1.0, abs=0.35)
    # A slow drift across the picture: no neighbouring columns differ much, but the ends do.
    drift = _flat(256, rng, np.linspace(0, 60, 256))
    assert measure.seam_ratio(drift, [128]) == pytest.approx(1.0, abs=0.5)
    assert measure.wrap_seam_ratio(drift) > 5


@functools.cache
def _load(name: str, model_cache: Path):
    from schemas import load_models
    from worker.render import load_model

    return load_model(load_models()[name], device="cpu", cache_dir=model_cache)


def _render_panorama(name: str, model_cache: Path, **kwargs) -> np.ndarray:
    """A 64x384 panorama (two overlapping views at the tiny models' 256 px window)."""
    from schemas import Settings, ValidationContext, load_models, normalize_spec, parse_spec
    from worker.render import load_inputs, render_job

    models = load_models()
    settings = Settings(model_cache=model_cache)
    ctx = ValidationContext.from_settings(settings, models, resolve_webhook_hosts=False)
    data = {"kind": "panorama", "model": name, "width": 384, "height": 64, "seed": 3}
    data["background"] = {"prompt": "a green background"}
    spec, _ = normalize_spec(parse_spec(data, ctx), ctx)
    model = _load(name, model_cache)
    inputs = load_inputs(spec, max_pixels=settings.max_pixels)
    return np.asarray(render_job(model, spec, inputs, **kwargs).image)


def test_averaging_noisy_latents_changes_lcm_renders_and_not_euler_ones(model_cache):
    """The failure case's engine option: on the LCM schedule each pair gets noise of its own
    (a different picture, the same one again for the same seed); Euler's mix is linear, so
    there it is the default render exactly."""
    lcm = _render_panorama("tiny-random", model_cache)
    noisy = _render_panorama("tiny-random", model_cache, average_noisy_latents=True)
    again = _render_panorama("tiny-random", model_cache, average_noisy_latents=True)
    assert not np.array_equal(lcm, noisy) and np.array_equal(noisy, again)
    euler = _render_panorama("tiny-random-xl", model_cache)
    same = _render_panorama("tiny-random-xl", model_cache, average_noisy_latents=True)
    assert np.array_equal(euler, same)


def _env(model_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    return env | {"HF_HUB_OFFLINE": "1", "REGIONFARM_MODEL_CACHE": str(model_cache)}


SHARES = ("adherence_min", "adherence_mean", "background", "leakage", "placement_inside")


@pytest.mark.timeout(300)
def test_quick_run_on_the_toy_model_reports_every_row(tmp_path, model_cache):
    """Needs the trained toy model (worker/render/assets/toy, `python toy/train.py toy`)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        env=_env(model_cache),
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "fidelity.json").read_text())
    assert (tmp_path / "fidelity.png").stat().st_size > 0
    check_quick_report(report, "toy")


def check_quick_report(report: dict, model: str) -> None:
    """Every quick layout has the three quick rows; every rendered row has its shares in
    [0, 1] and nothing where a share does not apply. (Also run by hand on a `--models
    tiny-random` report while the toy weights did not exist yet.)"""
    assert report["missing_models"] == {}
    rows = report["rows"]
    layouts = {r["layout"] for r in rows}
    assert len(layouts) == 5
    for layout in layouts:
        names = [r["row"] for r in rows if r["layout"] == layout]
        assert names == ["defaults", "bootstrap_steps 0", "failure case"], layout
    rendered = [r for r in rows if r["status"] == "rendered"]
    assert len(rendered) == 13  # panoramas have no bootstrapping row
    for r in rendered:
        assert r["model"] == model and r["seconds"] > 0 and r["unet_samples"] > 0
        panorama = r["layout"].startswith("panorama")
        small = r["layout"].startswith("small region")
        wanted = ["adherence_min", "adherence_mean"] + ([] if panorama else list(SHARES[2:4]))
        if small and r["placement_inside"] is None:  # no pixel of the object's color at all
            assert r["placement_px"] is None
        elif small:
            wanted.append("placement_inside")
        for key in wanted:
            value = r[key]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (r["layout"], r["row"], key)
        for key in set(SHARES) - set(wanted) - ({"placement_inside"} if small else set()):
            assert r.get(key) is None, (r["layout"], r["row"], key)
        if panorama:
            assert isinstance(r["seam_ratio"], float) and math.isfinite(r["seam_ratio"])
        if small:
            assert r["placement_px"] is None or r["placement_px"] >= 0
    for r in rows:
        if r["status"] != "rendered":
            assert r["layout"].startswith("panorama") and r["row"] == "bootstrap_steps 0"
            assert r["status"].startswith("n/a")
