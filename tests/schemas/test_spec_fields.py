"""Single-field limits of the job spec: each refusal names the exact JSON path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from schemas import (
    MAX_PROMPT_CHARS,
    METHODS,
    SEED_MAX,
    JobSpec,
    Palette,
    SpecError,
    Tile,
    parse_spec,
)


def locs_of(data: Any, ctx) -> list[list]:
    with pytest.raises(SpecError) as exc:
        parse_spec(data, ctx)
    return [d["loc"] for d in exc.value.details]


def with_path(spec: dict, path: list, value: Any) -> dict:
    spec = copy.deepcopy(spec)
    target = spec
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[path[-1]] = value
    return spec


def test_a_valid_spec_parses_with_the_contract_defaults(base_spec, ctx):
    spec = parse_spec(base_spec(), ctx)
    assert spec.kind == "regions" and spec.model is None and spec.seed is None
    assert spec.bootstrap_steps == 1 and spec.bootstrap_leak_sensitivity == 0.2
    assert spec.mask_mode == "discrete" and spec.method == "streammultidiffusion"
    assert spec.tile == Tile() and spec.tile.size is None and spec.tile.stride is None
    assert spec.wrap == "none" and spec.priority == 5
    assert (spec.output.format, spec.output.quality) == ("png", 95)
    region = spec.regions[0]
    assert (region.mask_strength, region.mask_std, region.prompt_strength) == (1.0, 0.0, 1.0)
    assert region.negative_prompt == "" and spec.background.negative_prompt == ""


BAD_VALUES = [
    (["kind"], "poster"),
    (["model"], ""),
    (["model"], "../etc"),
    (["width"], 60),
    (["width"], 56),
    (["width"], 130),
    (["height"], 0),
    (["width"], 128.0),
    (["width"], "128"),
    (["width"], True),
    (["seed"], -1),
    (["seed"], SEED_MAX + 1),
    (["steps"], 0),
    (["steps"], 151),
    (["guidance_scale"], -0.5),
    (["guidance_scale"], 30.5),
    (["guidance_scale"], "7"),
    (["bootstrap_steps"], 11),
    (["bootstrap_steps"], -1),
    (["bootstrap_leak_sensitivity"], 1.5),
    (["mask_mode"], "fuzzy"),
    (["method"], "ddim"),
    (["wrap"], "vertical"),
    (["priority"], 10),
    (["priority"], -1),
    (["output", "format"], "gif"),
    (["output", "quality"], 0),
    (["output", "quality"], 101),
    (["tile", "size"], 56),
    (["tile", "size"], 100),
    (["tile", "stride"], 0),
    (["tile", "stride"], 12),
    (["regions", 1, "mask_strength"], 1.01),
    (["regions", 1, "mask_strength"], -0.1),
    (["regions", 1, "mask_std"], 64.5),
    (["regions", 1, "prompt_strength"], 2),
    (["regions", 1, "prompt"], None),
    (["regions", 1, "mask"], 7),
    (["background", "prompt"], 5),
    (["webhook", "url"], ""),
    (["metadata"], [1, 2]),
    (["regions"], {"prompt": "x"}),
]


@pytest.mark.parametrize(("path", "value"), BAD_VALUES)
def test_each_out_of_range_value_is_refused_at_its_path(base_spec, ctx, path, value):
    assert locs_of(with_path(base_spec(), path, value), ctx) == [path]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["seed"], 0),
        (["seed"], SEED_MAX),
        (["guidance_scale"], 0),
        (["guidance_scale"], 30),
        (["steps"], 1),
        (["regions", 0, "mask_std"], 64),
        (["priority"], 0),
        (["priority"], 9),
        (["output", "quality"], 1),
        (["bootstrap_steps"], 10),
        (["tile"], {"size": 64, "stride": 64}),
    ],
)
def test_each_limit_itself_is_allowed(base_spec, ctx, path, value):
    parse_spec(with_path(base_spec(), path, value), ctx)


@pytest.mark.parametrize(
    "path",
    [
        ["background", "prompt"],
        ["background", "negative_prompt"],
        ["regions", 1, "prompt"],
        ["regions", 0, "negative_prompt"],
    ],
)
def test_prompts_over_2000_characters_are_refused(base_spec, ctx, path):
    assert locs_of(with_path(base_spec(), path, "x" * (MAX_PROMPT_CHARS + 1)), ctx) == [path]
    parse_spec(with_path(base_spec(), path, "x" * MAX_PROMPT_CHARS), ctx)


def test_palette_entry_prompt_over_2000_characters_is_refused(ctx):
    spec = {
        "width": 64,
        "height": 64,
        "palette": {
            "image": "data:image/png;base64,",
            "colors": {"#ff0000": {"prompt": "x" * 2001}},
        },
    }
    assert locs_of(spec, ctx) == [["palette", "colors", "#ff0000", "prompt"]]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_from_json(base_spec, ctx, value):
    spec = base_spec(guidance_scale=value)
    spec["regions"][0]["mask_std"] = value
    text = json.dumps(spec)  # writes the NaN / Infinity / -Infinity literals
    assert "NaN" in text or "Infinity" in text
    assert locs_of(text, ctx) == [["guidance_scale"], ["regions", 0, "mask_std"]]


def test_nan_is_refused_in_every_float_field(base_spec, ctx):
    nan = float("nan")
    spec = base_spec(bootstrap_leak_sensitivity=nan)
    spec["regions"][0]["mask_strength"] = nan
    spec["regions"][1]["prompt_strength"] = float("inf")
    assert locs_of(spec, ctx) == [
        ["regions", 0, "mask_strength"],
        ["regions", 1, "prompt_strength"],
        ["bootstrap_leak_sensitivity"],
    ]


@pytest.mark.parametrize(
    "path",
    [
        ["sed"],
        ["background", "images"],
        ["regions", 0, "strength"],
        ["tile", "overlap"],
        ["output", "lossless"],
        ["webhook", "secret"],
    ],
)
def test_unknown_fields_are_refused_at_every_level(base_spec, ctx, path):
    spec = with_path(base_spec(webhook={"url": "https://example.com/h"}), path, 1)
    [loc] = locs_of(spec, ctx)
    assert loc == path
    with pytest.raises(SpecError, match="unknown field"):
        parse_spec(spec, ctx)


def test_unknown_field_in_a_palette_entry_is_refused(ctx):
    spec = {
        "width": 64,
        "height": 64,
        "palette": {"image": "x", "colors": {"#FF0000": {"prompt": "a", "weight": 2}}},
    }
    assert locs_of(spec, ctx) == [["palette", "colors", "#FF0000", "weight"]]


def test_every_field_error_is_reported_at_once(base_spec, ctx):
    spec = base_spec(width=63, seed=-1, typo=True)
    spec["regions"][1]["mask_std"] = 100
    assert sorted(map(str, locs_of(spec, ctx))) == sorted(
        map(str, [["width"], ["seed"], ["regions", 1, "mask_std"], ["typo"]])
    )


def test_tile_stride_over_size_is_refused_at_tile_stride(base_spec, ctx):
    with pytest.raises(SpecError) as exc:
        parse_spec(base_spec(tile={"size": 64, "stride": 128}), ctx)
    assert exc.value.details == [
        {"loc": ["tile", "stride"], "msg": "tile.stride (128) must not exceed tile.size (64)"}
    ]
    parse_spec(base_spec(tile={"stride": 128}), ctx)  # size null: the model's native size


def test_the_methods_are_streammultidiffusion_and_the_multidiffusion_baseline(base_spec, ctx):
    assert METHODS == ("streammultidiffusion", "multidiffusion")
    assert parse_spec(base_spec(method="multidiffusion"), ctx).method == "multidiffusion"


def test_palette_color_keys_are_normalized_to_lower_case():
    palette = Palette.model_validate(
        {"image": "x", "colors": {"#FF00aa": {"prompt": "a"}, "#00ff00": {"prompt": "b"}}}
    )
    assert list(palette.colors) == ["#ff00aa", "#00ff00"]


@pytest.mark.parametrize("key", ["red", "#ff00", "#gg0000", "ff0000", "#ff00000"])
def test_palette_color_keys_must_be_hex_triplets(ctx, key):
    spec = {"width": 64, "height": 64, "palette": {"image": "x", "colors": {key: {"prompt": "a"}}}}
    with pytest.raises(SpecError) as exc:
        parse_spec(spec, ctx)
    [detail] = exc.value.details
    assert detail["loc"] == ["palette", "colors", key]
    assert "#rrggbb" in detail["msg"]


def test_palette_colors_differing_only_in_case_are_refused(ctx):
    colors = {"#ff0000": {"prompt": "a"}, "#FF0000": {"prompt": "b"}}
    spec = {"width": 64, "height": 64, "palette": {"image": "x", "colors": colors}}
    assert locs_of(spec, ctx) == [["palette", "colors"]]


@pytest.mark.parametrize("count", [0, 65])
def test_palette_needs_1_to_64_colors(ctx, count):
    colors = {f"#0000{i:02x}": {"prompt": "a"} for i in range(count)}
    spec = {"width": 64, "height": 64, "palette": {"image": "x", "colors": colors}}
    assert locs_of(spec, ctx) == [["palette", "colors"]]


def test_error_locs_carry_no_union_tags_or_model_names(base_spec, ctx):
    spec = base_spec(background={"prompt": 1, "image": 2}, tile={"size": "big"})
    spec["regions"][0] = {"prompt": None, "mask": None}
    with pytest.raises(SpecError) as exc:
        parse_spec(spec, ctx)
    for detail in exc.value.details:
        for part in detail["loc"]:
            assert isinstance(part, int) or (part.islower() and "[" not in part), detail


def test_json_schema_is_generated_with_descriptions():
    schema = JobSpec.model_json_schema()
    props = schema["properties"]
    assert schema["additionalProperties"] is False
    for name in ("kind", "width", "seed", "steps", "regions", "palette", "webhook", "metadata"):
        assert props[name].get("description"), name
    region = schema["$defs"]["Region"]["properties"]
    assert region["mask"]["description"] and region["mask_std"]["maximum"] == 64
