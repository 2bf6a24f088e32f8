"""Rules between fields and over decoded images, each refusal at its exact JSON path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from schemas import (
    MAX_METADATA_BYTES,
    JobSpec,
    ModelEntry,
    Settings,
    SpecError,
    ValidationContext,
    check_spec,
    parse_spec,
)


def details_of(data, ctx) -> list[dict]:
    with pytest.raises(SpecError) as exc:
        parse_spec(data, ctx)
    return exc.value.details


def locs_of(data, ctx) -> list[list]:
    return [d["loc"] for d in details_of(data, ctx)]


def palette_image(width: int = 128, height: int = 64) -> Image.Image:
    """Left half red, top-right quarter green, the rest white."""
    img = Image.new("RGB", (width, height), "white")
    img.paste((255, 0, 0), (0, 0, width // 2, height))
    img.paste((0, 255, 0), (width // 2, 0, width, height // 2))
    return img


# --- canvas ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["regions", "panorama"])
@pytest.mark.parametrize("side", ["width", "height"])
def test_width_and_height_are_required_for_regions_and_panorama(base_spec, ctx, kind, side):
    spec = base_spec(kind=kind)
    del spec[side]
    if kind == "panorama":
        spec["regions"] = []
    details = details_of(spec, ctx)
    assert details == [{"loc": [side], "msg": f"{side} is required for kind {kind!r}"}]


def test_kind_image_may_omit_the_size(ctx):
    spec = parse_spec({"kind": "image", "background": {"prompt": "a cat"}}, ctx)
    assert spec.width is None and spec.height is None


def test_canvas_over_max_pixels_is_refused_on_width_and_height(base_spec, ctx):
    spec = base_spec(width=8192, height=1032, regions=[])
    details = details_of(spec, ctx)
    assert [d["loc"] for d in details] == [["width"], ["height"]]
    assert "8192x1032" in details[0]["msg"] and "8388608" in details[0]["msg"]
    parse_spec(base_spec(width=8192, height=1024, regions=[]), ctx)


def test_canvas_cap_follows_the_context(base_spec):
    small = ValidationContext(max_pixels=128 * 64 - 1, resolve_webhook_hosts=False)
    locs = locs_of(base_spec(), small)
    assert locs[:2] == [["width"], ["height"]]


# --- kinds, regions, palette -----------------------------------------------------------


def test_regions_and_palette_together_are_refused(base_spec, ctx, to_uri):
    palette = {"image": to_uri(palette_image()), "colors": {"#ff0000": {"prompt": "red"}}}
    assert locs_of(base_spec(palette=palette), ctx) == [["palette"]]


@pytest.mark.parametrize("kind", ["panorama", "image"])
def test_panorama_and_image_take_no_regions_and_need_a_background_prompt(base_spec, ctx, kind):
    spec = base_spec(kind=kind, background={"negative_prompt": "blurry"})
    assert locs_of(spec, ctx) == [["regions"], ["background", "prompt"]]
    spec = base_spec(kind=kind, regions=[])
    del spec["background"]
    assert locs_of(spec, ctx) == [["background", "prompt"]]
    parse_spec(base_spec(kind=kind, regions=[]), ctx)


@pytest.mark.parametrize("kind", ["panorama", "image"])
def test_panorama_and_image_take_no_palette(ctx, to_uri, kind):
    palette = {"image": to_uri(palette_image()), "colors": {"#ff0000": {"prompt": "red"}}}
    spec = {"kind": kind, "width": 128, "height": 64, "background": {"prompt": "sea"}}
    assert locs_of(spec | {"palette": palette}, ctx) == [["palette"]]


def test_regions_kind_needs_something_to_render(base_spec, ctx):
    spec = base_spec(regions=[])
    del spec["background"]
    assert locs_of(spec, ctx) == [["regions"]]
    assert locs_of(base_spec(regions=[], background={"negative_prompt": "x"}), ctx) == [["regions"]]
    parse_spec(base_spec(regions=[]), ctx)  # a background prompt alone is a picture


def test_regions_kind_with_only_a_background_image_is_allowed(base_spec, ctx, to_uri):
    spec = base_spec(regions=[], background={"image": to_uri(Image.new("RGB", (128, 64)))})
    parse_spec(spec, ctx)


@pytest.mark.parametrize("kind", ["regions", "image"])
def test_horizontal_wrap_needs_kind_panorama(base_spec, ctx, kind):
    spec = base_spec(kind=kind, wrap="horizontal")
    if kind == "image":
        spec["regions"] = []
    assert locs_of(spec, ctx) == [["wrap"]]
    parse_spec(base_spec(kind="panorama", regions=[], wrap="horizontal"), ctx)


def test_regions_over_the_farms_limit_are_refused(base_spec, ctx, box_mask):
    mask = box_mask()
    regions = [{"prompt": f"r{i}", "mask": mask} for i in range(65)]
    details = details_of(base_spec(regions=regions), ctx)
    assert details == [{"loc": ["regions"], "msg": "65 regions, over the farm's limit of 64"}]
    parse_spec(base_spec(regions=regions[:64]), ctx)
    two = ValidationContext(max_regions=2, resolve_webhook_hosts=False)
    assert locs_of(base_spec(regions=regions[:3]), two) == [["regions"]]


def test_palette_colors_over_the_farms_limit_are_refused(ctx, to_uri):
    palette = {
        "image": to_uri(palette_image()),
        "colors": {"#ff0000": {"prompt": "red"}, "#00ff00": {"prompt": "green"}},
    }
    one = ValidationContext(max_regions=1, resolve_webhook_hosts=False)
    spec = {"width": 128, "height": 64, "palette": palette}
    assert locs_of(spec, one) == [["palette", "colors"]]
    parse_spec(spec, ctx)


def test_steps_over_50_are_refused_for_streammultidiffusion(base_spec, ctx):
    details = details_of(base_spec(steps=51), ctx)
    assert details == [
        {"loc": ["steps"], "msg": "must be at most 50 for method 'streammultidiffusion', not 51"}
    ]
    parse_spec(base_spec(steps=50), ctx)


def test_multidiffusion_takes_up_to_150_steps(base_spec, ctx):
    assert parse_spec(base_spec(method="multidiffusion", steps=150), ctx).steps == 150
    assert locs_of(base_spec(method="multidiffusion", steps=151), ctx) == [["steps"]]


def test_multidiffusion_stride_over_its_default_window_is_refused(base_spec, ctx):
    details = details_of(base_spec(method="multidiffusion", tile={"stride": 576}), ctx)
    assert details == [
        {
            "loc": ["tile", "stride"],
            "msg": "tile.stride (576) must not exceed the window of method 'multidiffusion' "
            "(512 when tile.size is null)",
        }
    ]
    parse_spec(base_spec(method="multidiffusion", tile={"stride": 512}), ctx)
    parse_spec(base_spec(tile={"stride": 576}), ctx)  # streammultidiffusion: the model's size


# --- models ----------------------------------------------------------------------------


def test_unknown_model_is_refused_and_the_known_ones_are_listed(base_spec):
    models = {
        "sd15-lcm": ModelEntry(name="sd15-lcm", source="x"),
        "tiny-random": ModelEntry(name="tiny-random", source="builtin:tiny-random"),
    }
    ctx = ValidationContext(models=models, resolve_webhook_hosts=False)
    [detail] = details_of(base_spec(model="sdxl-turbo"), ctx)
    assert detail["loc"] == ["model"]
    assert "'sdxl-turbo'" in detail["msg"] and "sd15-lcm, tiny-random" in detail["msg"]
    parse_spec(base_spec(model="tiny-random"), ctx)
    parse_spec(base_spec(), ctx)  # no model: the default, which is known


def test_a_default_model_missing_from_the_models_file_is_reported(base_spec):
    ctx = ValidationContext(
        models={"tiny-random": ModelEntry(name="tiny-random", source="x")},
        resolve_webhook_hosts=False,
    )
    assert locs_of(base_spec(), ctx) == [["model"]]


def test_model_names_are_not_checked_without_a_models_list(base_spec, ctx):
    parse_spec(base_spec(model="anything-goes"), ctx)


# --- masks and images ------------------------------------------------------------------


def test_mask_errors_name_the_region_index(base_spec, ctx, box_mask, to_uri):
    spec = base_spec()
    spec["regions"].append({"prompt": "empty", "mask": to_uri(Image.new("L", (128, 64)))})
    spec["regions"].append({"prompt": "small", "mask": box_mask(64, 32)})
    details = details_of(spec, ctx)
    assert details == [
        {"loc": ["regions", 2, "mask"], "msg": "mask is empty: no pixel is above 0.5"},
        {"loc": ["regions", 3, "mask"], "msg": "mask is 64x32 but the canvas is 128x64"},
    ]


def test_mask_that_is_jpeg_claiming_png_is_refused_in_a_spec(base_spec, ctx, to_uri):
    spec = base_spec()
    spec["regions"][1]["mask"] = to_uri(Image.new("L", (128, 64), 255), "JPEG", mime="image/png")
    assert locs_of(spec, ctx) == [["regions", 1, "mask"]]


def test_asset_mask_without_assets_is_refused(base_spec, ctx):
    spec = base_spec()
    spec["regions"][0]["mask"] = "asset:abc"
    [detail] = details_of(spec, ctx)
    assert detail["loc"] == ["regions", 0, "mask"] and "need the API" in detail["msg"]


def test_asset_masks_are_read_through_the_context(base_spec, box_mask):
    import base64

    png = base64.b64decode(box_mask().split(",", 1)[1])
    ctx = ValidationContext(assets=lambda asset_id: png, resolve_webhook_hosts=False)
    spec = base_spec()
    spec["regions"][0]["mask"] = "asset:abc"
    parse_spec(spec, ctx)


def test_background_image_of_any_size_is_allowed_but_must_decode(base_spec, ctx, to_uri):
    parse_spec(base_spec(background={"image": to_uri(Image.new("RGB", (40, 40)))}), ctx)
    bad = base_spec(background={"prompt": "sky", "image": "data:image/png;base64,AAAA"})
    assert locs_of(bad, ctx) == [["background", "image"]]


def test_background_image_over_max_pixels_is_refused(base_spec, to_uri):
    ctx = ValidationContext(max_pixels=128 * 64, resolve_webhook_hosts=False)
    spec = base_spec(background={"image": to_uri(Image.new("RGB", (200, 100)))})
    assert locs_of(spec, ctx) == [["background", "image"]]


def test_palette_image_must_be_the_canvas_size(ctx, to_uri):
    spec = {
        "width": 128,
        "height": 64,
        "palette": {"image": to_uri(palette_image(64, 64)), "colors": {"#ff0000": {"prompt": "a"}}},
    }
    assert details_of(spec, ctx) == [
        {"loc": ["palette", "image"], "msg": "palette image is 64x64 but the canvas is 128x64"}
    ]


def test_palette_color_that_never_occurs_is_refused_at_its_key(ctx, to_uri):
    colors = {
        "#FF0000": {"prompt": "red"},
        "#0000ff": {"prompt": "blue"},
        "#00ff00": {"prompt": "g"},
    }
    spec = {
        "width": 128,
        "height": 64,
        "palette": {"image": to_uri(palette_image()), "colors": colors},
    }
    assert details_of(spec, ctx) == [
        {
            "loc": ["palette", "colors", "#0000ff"],
            "msg": "color #0000ff never occurs in the palette image",
        }
    ]


def test_transparent_palette_pixels_belong_to_no_color(ctx, to_uri):
    img = Image.new("RGBA", (128, 64), (255, 0, 0, 0))  # red, but erased
    img.paste((0, 255, 0, 255), (0, 0, 8, 8))
    colors = {"#ff0000": {"prompt": "red"}, "#00ff00": {"prompt": "green"}}
    spec = {"width": 128, "height": 64, "palette": {"image": to_uri(img), "colors": colors}}
    assert locs_of(spec, ctx) == [["palette", "colors", "#ff0000"]]


def test_masks_are_not_decoded_when_regions_are_over_the_limit(base_spec, ctx):
    regions = [{"prompt": "x", "mask": "data:image/png;base64,AAAA"} for _ in range(65)]
    assert locs_of(base_spec(regions=regions), ctx) == [["regions"]]


def test_masks_are_still_decoded_when_the_canvas_is_invalid(base_spec, ctx, to_uri):
    spec = base_spec(width=None)
    spec["regions"][1]["mask"] = to_uri(Image.new("L", (128, 64)))
    assert locs_of(spec, ctx) == [["width"], ["regions", 1, "mask"]]


# --- metadata --------------------------------------------------------------------------


def test_metadata_up_to_4_kib_of_compact_json_is_allowed(base_spec, ctx):
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    fits = {"k": "x" * (MAX_METADATA_BYTES - overhead)}
    spec = parse_spec(base_spec(metadata=fits), ctx)
    assert spec.metadata == fits
    too_big = {"k": "x" * (MAX_METADATA_BYTES - overhead + 1)}
    [detail] = details_of(base_spec(metadata=too_big), ctx)
    assert detail["loc"] == ["metadata"]
    assert "4097 bytes" in detail["msg"] and "4096" in detail["msg"]


def test_metadata_counts_utf8_bytes_not_characters(base_spec, ctx):
    assert locs_of(base_spec(metadata={"k": "é" * 2100}), ctx) == [["metadata"]]


def test_metadata_with_nan_is_refused(base_spec, ctx):
    assert locs_of(base_spec(metadata={"k": float("nan")}), ctx) == [["metadata"]]


# --- webhooks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://example.com/hook",
        "https://localhost:8080/hook",
        "ftp://example.com/hook",
    ],
)
def test_webhook_to_private_or_plain_http_targets_is_refused(base_spec, ctx, url):
    assert locs_of(base_spec(webhook={"url": url}), ctx) == [["webhook", "url"]]


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("https://127.0.0.1/hook", "127.0.0.1"),
        ("http://10.0.0.1:9000/hook", "10.0.0.0/8"),
        ("http://169.254.169.254/x", "169.254.169.254"),
        ("http://example.com/hook", "example.com"),
    ],
)
def test_webhook_targets_named_by_the_allowlist_are_allowed(base_spec, url, allow):
    ctx = ValidationContext(webhook_allowlist=[allow], resolve_webhook_hosts=False)
    parse_spec(base_spec(webhook={"url": url}), ctx)


def test_webhook_host_resolving_to_a_private_address_is_refused(base_spec, monkeypatch):
    import socket

    def fake_getaddrinfo(host, port, *args, **kwargs):
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.20", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    ctx = ValidationContext()
    [detail] = details_of(base_spec(webhook={"url": "https://hooks.example.com/h"}), ctx)
    assert detail["loc"] == ["webhook", "url"] and "192.168.1.20" in detail["msg"]


# --- whole-spec behaviour --------------------------------------------------------------


def test_all_cross_field_problems_are_reported_together(base_spec, ctx, to_uri):
    spec = base_spec(
        wrap="horizontal",
        steps=60,
        metadata={"k": "x" * 5000},
        webhook={"url": "https://10.0.0.1/"},
    )
    spec["regions"][0]["mask"] = to_uri(Image.new("L", (128, 64)))
    with pytest.raises(SpecError) as exc:
        parse_spec(spec, ctx)
    assert [d["loc"] for d in exc.value.details] == [
        ["wrap"],
        ["steps"],
        ["metadata"],
        ["webhook", "url"],
        ["regions", 0, "mask"],
    ]
    lines = str(exc.value).splitlines()
    assert len(lines) == 5 and lines[-1] == "regions.0.mask: mask is empty: no pixel is above 0.5"


def test_parse_spec_takes_json_text_bytes_dicts_and_models(base_spec, ctx):
    data = base_spec(seed=7)
    from_dict = parse_spec(data, ctx)
    assert parse_spec(json.dumps(data), ctx) == from_dict
    assert parse_spec(json.dumps(data).encode(), ctx) == from_dict
    assert parse_spec(from_dict, ctx) == from_dict


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", b"\xff\xfe", "null"])
def test_malformed_or_non_object_bodies_are_spec_errors(ctx, body):
    with pytest.raises(SpecError) as exc:
        parse_spec(body, ctx)
    assert exc.value.details[0]["loc"] == []


def test_parse_spec_without_a_context_uses_the_defaults(base_spec):
    assert isinstance(parse_spec(base_spec()), JobSpec)


def test_check_spec_lists_problems_of_a_constructed_model(ctx):
    spec = JobSpec(kind="panorama", width=128, height=64, wrap="horizontal")
    assert [d["loc"] for d in check_spec(spec, ctx)] == [["background", "prompt"]]


def test_context_from_settings_carries_the_limits():
    settings = Settings(max_pixels=4096, max_regions=3, webhook_allowlist="a.example, b.example")
    ctx = ValidationContext.from_settings(settings, None)
    assert (ctx.max_pixels, ctx.max_regions, ctx.default_model) == (4096, 3, "sd15-lcm")
    assert ctx.webhook_allowlist == ["a.example", "b.example"]
    assert ctx.models is None and ctx.assets is None and ctx.resolve_webhook_hosts


def test_regions_see_masks_as_bool_arrays_after_parsing(base_spec, ctx):
    from schemas import decode_mask

    spec = parse_spec(base_spec(), ctx)
    mask = decode_mask(spec.regions[0].mask, width=128, height=64, max_pixels=10**6, loc=[])
    assert mask[:, :64].all() and not mask[:, 64:].any()
    assert isinstance(mask, np.ndarray)
