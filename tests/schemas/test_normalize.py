"""normalize_spec fills every default, turns palettes into regions, and is idempotent."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from schemas import (
    SEED_MAX,
    ModelEntry,
    SpecError,
    ValidationContext,
    decode_mask,
    load_models,
    normalize_spec,
    parse_spec,
)
from schemas import normalize as normalize_module


@pytest.fixture
def farm() -> ValidationContext:
    return ValidationContext(models=load_models(), resolve_webhook_hosts=False)


def palette_spec(to_uri, **overrides) -> dict:
    img = Image.new("RGB", (128, 64), "white")
    img.paste((255, 0, 0), (0, 0, 64, 64))
    img.paste((0, 0, 255), (64, 0, 128, 16))
    spec = {
        "width": 128,
        "height": 64,
        "seed": 3,
        "palette": {
            "image": to_uri(img),
            "colors": {
                "#0000FF": {"prompt": "blue sky", "mask_std": 8.0, "prompt_strength": 0.8},
                "#ff0000": {
                    "prompt": "red barn",
                    "negative_prompt": "blurry",
                    "mask_strength": 0.9,
                },
            },
        },
    }
    return spec | overrides


def test_model_seed_steps_and_guidance_are_filled(base_spec, farm):
    spec, warnings = normalize_spec(parse_spec(base_spec(), farm), farm)
    assert spec.model == "sd15-lcm"
    assert spec.seed is not None and 0 <= spec.seed <= SEED_MAX
    assert (spec.steps, spec.guidance_scale) == (5, 1.0)
    assert warnings == []


def test_seed_is_drawn_from_the_full_range(base_spec, farm, monkeypatch):
    bounds = []

    def fake_randbelow(n: int) -> int:
        bounds.append(n)
        return n - 1

    monkeypatch.setattr(normalize_module.secrets, "randbelow", fake_randbelow)
    spec, _ = normalize_spec(parse_spec(base_spec(), farm), farm)
    assert bounds == [2**63] and spec.seed == SEED_MAX
    parse_spec(spec.model_dump(), farm)


def test_seeds_differ_between_jobs(base_spec, farm):
    seeds = {normalize_spec(parse_spec(base_spec(), farm), farm)[0].seed for _ in range(5)}
    assert len(seeds) == 5


def test_given_values_are_kept(base_spec, farm):
    given = base_spec(model="tiny-random", seed=11, steps=8, guidance_scale=2.5)
    spec, _ = normalize_spec(parse_spec(given, farm), farm)
    assert (spec.model, spec.seed, spec.steps, spec.guidance_scale) == ("tiny-random", 11, 8, 2.5)


def test_defaults_come_from_the_models_entry(base_spec):
    entry = ModelEntry(name="custom", source="x", steps=8, guidance_scale=2.0, native_size=768)
    ctx = ValidationContext(models={"custom": entry}, default_model="custom")
    spec, _ = normalize_spec(parse_spec(base_spec(), ctx), ctx)
    assert (spec.model, spec.steps, spec.guidance_scale) == ("custom", 8, 2.0)


def test_without_a_models_entry_lcm_defaults_apply(base_spec):
    spec, _ = normalize_spec(parse_spec(base_spec(model="elsewhere")), ValidationContext())
    assert (spec.model, spec.steps, spec.guidance_scale) == ("elsewhere", 5, 1.0)


def test_multidiffusion_gets_the_baselines_defaults_not_the_models(base_spec, farm):
    spec, _ = normalize_spec(parse_spec(base_spec(method="multidiffusion"), farm), farm)
    assert (spec.steps, spec.guidance_scale) == (50, 7.5)
    # The original bootstraps 20 of 50 steps; the spec's limit is 10.
    assert spec.bootstrap_steps == 10
    assert spec.tile.size is None and spec.tile.stride is None  # the baseline's 512 / 64 px


def test_multidiffusion_keeps_given_values(base_spec, farm):
    given = base_spec(method="multidiffusion", steps=120, guidance_scale=3.0, bootstrap_steps=1)
    spec, _ = normalize_spec(parse_spec(given, farm), farm)
    assert (spec.steps, spec.guidance_scale, spec.bootstrap_steps) == (120, 3.0, 1)


def test_multidiffusion_bootstraps_40_percent_of_the_given_steps(base_spec, farm):
    for steps, boot in ((10, 4), (5, 2), (1, 0), (150, 10)):
        data = base_spec(method="multidiffusion", steps=steps)
        assert normalize_spec(parse_spec(data, farm), farm)[0].bootstrap_steps == boot
    panorama = {"kind": "panorama", "width": 1024, "height": 512, "method": "multidiffusion"}
    spec, _ = normalize_spec(parse_spec(panorama | {"background": {"prompt": "x"}}, farm), farm)
    assert (spec.steps, spec.bootstrap_steps) == (50, 1)  # no regions: nothing to bootstrap


def test_kind_image_gets_the_models_native_size(farm):
    data = {"kind": "image", "model": "tiny-random", "background": {"prompt": "a cat"}}
    spec, _ = normalize_spec(parse_spec(data, farm), farm)
    assert (spec.width, spec.height) == (256, 256)
    spec, _ = normalize_spec(parse_spec(data | {"model": None, "width": 640}, farm), farm)
    assert (spec.width, spec.height) == (640, 512)


def test_kind_image_native_size_still_obeys_max_pixels():
    ctx = ValidationContext(max_pixels=64 * 64)
    spec = parse_spec({"kind": "image", "width": 64, "background": {"prompt": "x"}}, ctx)
    with pytest.raises(SpecError) as exc:
        normalize_spec(spec, ctx)
    assert [d["loc"] for d in exc.value.details] == [["width"], ["height"]]


def test_palette_becomes_regions_in_color_order_with_the_right_masks(to_uri, farm):
    spec, _ = normalize_spec(parse_spec(palette_spec(to_uri), farm), farm)
    assert spec.palette is None
    assert [r.prompt for r in spec.regions] == ["blue sky", "red barn"]
    blue, red = (
        decode_mask(r.mask, width=128, height=64, max_pixels=10**6, loc=[]) for r in spec.regions
    )
    expected_red = np.zeros((64, 128), dtype=bool)
    expected_red[:, :64] = True
    expected_blue = np.zeros((64, 128), dtype=bool)
    expected_blue[:16, 64:] = True
    assert np.array_equal(red, expected_red) and np.array_equal(blue, expected_blue)


def test_palette_entry_settings_are_copied_to_its_region(to_uri, farm):
    spec, _ = normalize_spec(parse_spec(palette_spec(to_uri), farm), farm)
    blue, red = spec.regions
    assert (blue.mask_std, blue.prompt_strength, blue.mask_strength) == (8.0, 0.8, 1.0)
    assert (red.negative_prompt, red.mask_strength, red.mask_std) == ("blurry", 0.9, 0.0)


def test_normalized_spec_reparses_unchanged(base_spec, to_uri, farm):
    for data in (base_spec(), palette_spec(to_uri)):
        spec, _ = normalize_spec(parse_spec(data, farm), farm)
        assert parse_spec(spec.model_dump(mode="json"), farm) == spec
        assert parse_spec(spec.model_dump_json(), farm) == spec


def test_normalize_is_idempotent(base_spec, to_uri, farm):
    for data in (
        base_spec(seed=5),
        palette_spec(to_uri),
        {"kind": "image", "seed": 1, "background": {"prompt": "x"}},
        base_spec(seed=5, method="multidiffusion"),
    ):
        once, _ = normalize_spec(parse_spec(data, farm), farm)
        twice, _ = normalize_spec(once, farm)
        assert twice == once


def test_normalize_keeps_a_drawn_seed_on_the_second_pass(base_spec, farm):
    once, _ = normalize_spec(parse_spec(base_spec(), farm), farm)
    assert normalize_spec(once, farm)[0] == once


def test_background_image_of_another_size_gives_a_warning(base_spec, to_uri, farm):
    data = base_spec(seed=1, background={"image": to_uri(Image.new("RGB", (64, 64)))})
    _, warnings = normalize_spec(parse_spec(data, farm), farm)
    assert warnings == [
        "background.image is 64x64 but the canvas is 128x64: it is resized to the canvas"
    ]
    data = base_spec(seed=1, background={"image": to_uri(Image.new("RGB", (128, 64)))})
    assert normalize_spec(parse_spec(data, farm), farm)[1] == []
