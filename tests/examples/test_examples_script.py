"""The committed example job specs come from examples/make_examples.py and hold valid masks."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE_NAMES = ["landscape", "street", "panorama", "inpaint", "landscape_palette"]
# Each example twice: for real models, and in the toy world's words (examples/toy/).
NAMES = BASE_NAMES + [f"toy/{name}" for name in BASE_NAMES]
PNG_PREFIX = "data:image/png;base64,"
LANDSCAPE_PROMPTS = [
    "summer mountains",
    "the sun",
    "the moon",
    "a giant waterfall",
    "a giant waterfall",
    "a clean deep blue lake",
    "a large tree",
    "a large tree",
]
# The palette example is the landscape in another form: everything but the regions is shared.
SHARED_WITH_LANDSCAPE = [
    "kind",
    "width",
    "height",
    "seed",
    "steps",
    "guidance_scale",
    "background",
    "bootstrap_steps",
    "mask_mode",
    "output",
]


def _load_script() -> ModuleType:
    # examples/ is a folder of files, not a package, so the script is loaded by path.
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def built(script: ModuleType) -> dict[str, dict]:
    return script.build_all()


@pytest.fixture(scope="module")
def committed() -> dict[str, dict]:
    return {name: json.loads((EXAMPLES / f"{name}.json").read_text("ascii")) for name in NAMES}


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith(PNG_PREFIX), uri[:40]
    img = Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_PREFIX) :], validate=True)))
    assert img.format == "PNG"
    img.load()
    return img


def test_build_all_names_exactly_the_committed_files(built: dict[str, dict]) -> None:
    assert sorted(built) == sorted(NAMES)
    on_disk = [p.relative_to(EXAMPLES).with_suffix("").as_posix() for p in EXAMPLES.rglob("*.json")]
    assert sorted(on_disk) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_file_is_byte_identical_to_build_all(
    script: ModuleType, built: dict[str, dict], name: str
) -> None:
    on_disk = (EXAMPLES / f"{name}.json").read_bytes()
    fresh = script.dump_spec(built[name]).encode("ascii")
    # PNG bytes depend on Pillow's zlib; if only this test fails on another Pillow build while
    # the pixel-level test below passes, rerun `python examples/make_examples.py` and commit.
    assert on_disk == fresh, f"{name}.json is stale: run python examples/make_examples.py"


def _images_decoded(value: object) -> object:
    """The spec with every PNG data URI replaced by its pixels, to compare content not bytes."""
    if isinstance(value, dict):
        return {k: _images_decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_images_decoded(v) for v in value]
    if isinstance(value, str) and value.startswith(PNG_PREFIX):
        img = decode_png(value)
        return (img.mode, img.size, np.asarray(img).tobytes())
    return value


@pytest.mark.parametrize("name", NAMES)
def test_committed_file_has_the_same_fields_and_pixels_as_build_all(
    built: dict[str, dict], committed: dict[str, dict], name: str
) -> None:
    assert _images_decoded(committed[name]) == _images_decoded(built[name])


def test_build_is_deterministic(script: ModuleType, built: dict[str, dict]) -> None:
    again = script.build_all()
    for name in NAMES:
        assert script.dump_spec(again[name]) == script.dump_spec(built[name]), name


def test_check_mode_passes_on_the_committed_files(script: ModuleType) -> None:
    assert script.main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_or_missing_file(script: ModuleType, tmp_path: Path) -> None:
    assert script.main(["--out", str(tmp_path)]) == 0
    assert script.main(["--check", "--out", str(tmp_path)]) == 0
    street = tmp_path / "street.json"
    street.write_bytes(street.read_bytes().replace(b"2024", b"2025"))
    assert script.main(["--check", "--out", str(tmp_path)]) == 1
    street.unlink()
    assert script.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", NAMES)
def test_committed_file_is_pretty_json_with_a_trailing_newline(name: str) -> None:
    text = (EXAMPLES / f"{name}.json").read_text("ascii")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "kind": ')
    assert len(text.encode()) < 1_000_000


@pytest.mark.parametrize("name", NAMES)
def test_spec_basics(committed: dict[str, dict], name: str) -> None:
    spec = committed[name]
    assert spec["metadata"] == {"example": name}
    assert spec["seed"] == 2024
    assert "model" not in spec  # the farm's default model applies
    assert spec["width"] % 8 == 0 and spec["height"] % 8 == 0
    assert spec["width"] * spec["height"] <= 8192 * 1024
    assert spec["background"]["prompt"]
    assert not ("regions" in spec and "palette" in spec)


@pytest.mark.parametrize("name", ["landscape", "street", "inpaint"])
def test_every_mask_is_a_binary_grayscale_png_of_the_canvas_size_and_not_empty(
    committed: dict[str, dict], name: str
) -> None:
    spec = committed[name]
    assert spec["kind"] == "regions" and spec["regions"]
    for i, region in enumerate(spec["regions"]):
        img = decode_png(region["mask"])
        assert img.mode == "L", i
        assert img.size == (spec["width"], spec["height"]), i
        values = set(np.unique(np.asarray(img)).tolist())
        assert values <= {0, 255}, (i, values)
        assert 255 in values, f"region {i} ({region['prompt']}) has an empty mask"
        assert 0 in values, f"region {i} ({region['prompt']}) covers the whole canvas"


def test_landscape_has_the_nine_reference_prompts(committed: dict[str, dict]) -> None:
    spec = committed["landscape"]
    assert (spec["width"], spec["height"]) == (1920, 768)
    prompts = [r["prompt"] for r in spec["regions"]]
    assert len(prompts) == 9 and prompts[:8] == LANDSCAPE_PROMPTS
    assert all(r["negative_prompt"] == "worst quality, bad quality" for r in spec["regions"])
    assert spec["background"] == {
        "prompt": "clear deep blue sky",
        "negative_prompt": "worst quality, bad quality",
    }
    expected = {"steps": 5, "guidance_scale": 1.0, "bootstrap_steps": 1, "mask_mode": "discrete"}
    assert {k: spec[k] for k in expected} == expected
    assert spec["output"] == {"format": "png"}


def test_panorama_is_one_prompt_without_regions(committed: dict[str, dict]) -> None:
    spec = committed["panorama"]
    assert spec["kind"] == "panorama"
    assert (spec["width"], spec["height"]) == (3072, 512)
    assert spec["background"]["prompt"] == "a photo of the Alps"
    assert not spec.get("regions") and "palette" not in spec


def test_inpaint_uses_a_canvas_sized_rgb_picture_and_the_recommended_settings(
    committed: dict[str, dict],
) -> None:
    spec = committed["inpaint"]
    picture = decode_png(spec["background"]["image"])
    assert picture.mode == "RGB" and picture.size == (spec["width"], spec["height"])
    assert len(np.unique(np.asarray(picture).reshape(-1, 3), axis=0)) > 10  # a real picture
    assert [r["prompt"] for r in spec["regions"]] == ["a red hot-air balloon"]
    assert spec["regions"][0]["mask_std"] == 16
    assert spec["bootstrap_steps"] == 2
    assert spec["bootstrap_leak_sensitivity"] == 0.1


def _label_map(spec: dict) -> tuple[np.ndarray, dict[tuple[int, int, int], dict]]:
    img = decode_png(spec["palette"]["image"])
    assert img.mode == "RGB" and img.size == (spec["width"], spec["height"])
    colors = {}
    for key, entry in spec["palette"]["colors"].items():
        assert len(key) == 7 and key.startswith("#") and key == key.lower(), key
        colors[tuple(int(key[i : i + 2], 16) for i in (1, 3, 5))] = entry
    return np.asarray(img), colors


def test_palette_colors_all_occur_and_unlisted_pixels_exist(committed: dict[str, dict]) -> None:
    spec = committed["landscape_palette"]
    assert "regions" not in spec
    labels, colors = _label_map(spec)
    assert len(colors) == 9
    present = {tuple(c) for c in np.unique(labels.reshape(-1, 3), axis=0).tolist()}
    assert set(colors) <= present, set(colors) - present
    assert present - set(colors), "no pixel is left to the background"


def test_palette_equals_the_landscape_masks_painted_in_order(
    committed: dict[str, dict],
) -> None:
    landscape, palette = committed["landscape"], committed["landscape_palette"]
    for key in SHARED_WITH_LANDSCAPE:
        assert palette[key] == landscape[key], key
    labels, colors = _label_map(palette)
    assert [e["prompt"] for e in colors.values()] == [r["prompt"] for r in landscape["regions"]]
    codes = _rgb_codes(labels)
    expected = np.full(codes.shape, -1)
    # Later regions win where masks overlap, as the palette was painted.
    for rgb, region in zip(colors, landscape["regions"], strict=True):
        expected[np.asarray(decode_png(region["mask"])) > 127] = _rgb_codes(np.array(rgb))
    covered = expected >= 0
    assert np.array_equal(codes[covered], expected[covered])
    listed = np.isin(codes, [_rgb_codes(np.array(rgb)) for rgb in colors])
    assert np.array_equal(listed, covered), "uncovered pixels must use an unlisted color"


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """One integer per pixel (r << 16 | g << 8 | b), so colors compare as scalars."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _without_prompts(value: object, prompts: list[str]) -> object:
    """The spec without its prompts and negative prompts, which go into `prompts`."""
    if isinstance(value, dict):
        if "prompt" in value:
            prompts.append(value["prompt"])
        return {
            k: _without_prompts(v, prompts)
            for k, v in value.items()
            if k not in ("prompt", "negative_prompt")
        }
    if isinstance(value, list):
        return [_without_prompts(v, prompts) for v in value]
    return value


@pytest.mark.parametrize("name", BASE_NAMES)
def test_a_toy_example_is_its_real_twin_in_the_toy_worlds_words(
    built: dict[str, dict], name: str
) -> None:
    """Same masks and settings; every prompt is one the toy world draws (it names a color)."""
    sys.path.insert(0, str(EXAMPLES.parent))
    from toy.world import prompt_color

    real_prompts: list[str] = []
    toy_prompts: list[str] = []
    real = _without_prompts({**built[name], "metadata": None}, real_prompts)
    toy = _without_prompts({**built[f"toy/{name}"], "metadata": None}, toy_prompts)
    assert toy == real
    assert len(toy_prompts) == len(real_prompts) >= 1
    assert all(prompt_color(p) for p in toy_prompts), toy_prompts
