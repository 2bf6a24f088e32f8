"""Specs and label maps in and out of the page, keyboard use, labels and the 1280 px layout."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from schemas.images import decode_image, mask_array
from schemas.palette import palette_masks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIG = 1920 * 768


def export(page, seed: int) -> dict[str, Any]:
    """Set the seed, click Export and read the downloaded spec."""
    page.type("seed", str(seed))
    return json.loads(
        page.download(f"regionfarm-spec-{seed}.json", page.by_id("export-spec").click)
    )


def load_file(page, input_id: str, path: Path) -> None:
    before = page.status()
    page.by_id(input_id).send_keys(str(path))
    page.wait(lambda: page.status() != before or page.alert(), f"loading {path.name}")
    assert not page.alert(), page.alert()


def mask_of(uri: str) -> np.ndarray:
    return mask_array(decode_image(uri, max_pixels=BIG, loc=["mask"]))


def test_an_imported_example_spec_exports_with_the_same_masks_and_fields(page):
    original = json.loads((EXAMPLES / "street.json").read_text())
    load_file(page, "import-spec", EXAMPLES / "street.json")
    assert "2 brushes" in page.status()
    kept = page.by_id("kept-text").text
    for name in ("guidance_scale", "bootstrap_steps", "mask_mode", "metadata"):
        assert name in kept
    page.screenshot("imported")
    exported = export(page, original["seed"])
    for region, before in zip(exported["regions"], original["regions"], strict=True):
        assert np.array_equal(mask_of(region["mask"]), mask_of(before["mask"]))
        region.pop("mask"), before.pop("mask")
        assert region == {"mask_strength": 1, "mask_std": 0, "prompt_strength": 1, **before}
    exported.pop("regions"), original.pop("regions")
    # No model in the example: the page leaves it to the farm's default too.
    assert exported == original


def test_a_palette_spec_gives_the_regions_the_api_would_make_of_it(page):
    original = json.loads((EXAMPLES / "landscape_palette.json").read_text())
    load_file(page, "import-spec", EXAMPLES / "landscape_palette.json")
    assert "9 brushes" in page.status()
    page.screenshot("imported-palette")
    exported = export(page, 9)
    palette = original["palette"]
    image = decode_image(palette["image"], max_pixels=BIG, loc=["palette", "image"])
    expected = palette_masks(image, palette["colors"])
    assert "palette" not in exported
    assert len(exported["regions"]) == len(expected)
    for region, (color, mask) in zip(exported["regions"], expected.items(), strict=True):
        assert region["prompt"] == palette["colors"][color]["prompt"]
        assert np.array_equal(mask_of(region["mask"]), mask)


def test_a_label_map_image_becomes_the_brushes_masks(page, tmp_path):
    labels = np.zeros((192, 320, 3), dtype=np.uint8)  # black: the background
    labels[20:100, 30:150] = (255, 0, 0)
    labels[120:180, 200:300] = (0, 160, 0)
    path = tmp_path / "labels.png"
    Image.fromarray(labels).save(path)
    load_file(page, "label-map", path)
    assert "2 colors" in page.status() and "320 × 192" in page.status()
    assert page.by_id("canvas").get_attribute("width") == "320"
    # The first brush (another color) keeps no mask; one new brush per color of the map.
    assert [e.text for e in page.css(".brush .help")] == ["#e53935", "#ff0000", "#00a000"]
    page.type("brush-2-prompt", "a red house")
    page.type("brush-3-prompt", "a green field")
    page.screenshot("label-map")
    exported = export(page, 77)
    assert "Brush 1 has nothing painted" in page.status()
    assert [r["prompt"] for r in exported["regions"]] == ["a red house", "a green field"]
    for region, color in zip(exported["regions"], ((255, 0, 0), (0, 160, 0)), strict=True):
        assert np.array_equal(mask_of(region["mask"]), (labels == color).all(axis=2))


def test_a_background_image_goes_stretched_to_the_canvas_and_the_output_format_with_it(
    page, tmp_path
):
    picture = np.zeros((50, 100, 3), dtype=np.uint8)
    picture[:, 50:] = (0, 0, 255)  # left half black, right half blue
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    Select(page.by_id("size-preset")).select_by_value("custom")
    page.type("custom-width", "256")
    page.type("custom-height", "128")
    page.by_id("apply-size").click()
    load_file(page, "bg-image", path)
    Select(page.by_id("output-format")).select_by_value("webp")
    page.type("output-quality", "80")
    page.screenshot("background")
    exported = export(page, 11)
    image = decode_image(exported["background"]["image"], max_pixels=BIG, loc=["image"])
    assert image.size == (256, 128)
    rgb = np.asarray(image.convert("RGB"))
    assert tuple(rgb[64, 32]) == (0, 0, 0) and tuple(rgb[64, 224]) == (0, 0, 255)
    assert exported["output"] == {"format": "webp", "quality": 80}
    page.by_id("clear-bg-image").click()
    assert "image" not in export(page, 12)["background"]


def test_the_keyboard_alone_paints_and_picks_tools_and_every_control_has_a_name(page):
    Select(page.by_id("size-preset")).select_by_value("custom")
    page.type("custom-width", "256")
    page.type("custom-height", "256")
    page.by_id("apply-size").send_keys(Keys.ENTER)
    page.type("brush-1-prompt", "a kite")
    canvas = page.by_id("canvas")
    # The cursor starts in the middle (128, 128): 4 steps left of it, one dab, then a stroke
    # with Space held down, 5 steps of 8 px to the right.
    canvas.send_keys(*[Keys.ARROW_LEFT] * 4, Keys.SPACE)
    actions = ActionChains(page.driver).key_down(Keys.SPACE, canvas)
    for _ in range(5):
        actions.send_keys(Keys.ARROW_RIGHT)
    actions.key_up(Keys.SPACE).perform()
    page.screenshot("keyboard-painted")
    exported = export(page, 5)
    mask = mask_of(exported["regions"][0]["mask"])
    assert mask[128, 96] and mask[128, 136] and not mask[10, 10]

    body = page.driver.find_element("css selector", "body")
    body.send_keys("e")
    assert page.by_id("tool-eraser").is_selected()
    body.send_keys("]")
    assert int(page.by_id("eraser-size").get_attribute("value")) > 96
    body.send_keys("b")
    assert page.by_id("tool-brush").is_selected()

    unnamed = page.driver.execute_script("""
        return [...document.querySelectorAll("input, select, textarea, button, canvas")]
          .filter((e) => e.offsetParent !== null)
          .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                         && !(e.tagName === "BUTTON" && e.textContent.trim()))
          .map((e) => e.outerHTML.slice(0, 80));
    """)
    assert unnamed == []


def test_the_layout_fits_1280_pixels_in_three_columns(page):
    width = page.driver.execute_script("return window.innerWidth")
    assert width <= 1280
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    boxes = [page.css(selector)[0].rect for selector in (".controls", ".editor", ".queue")]
    for left, right in itertools.pairwise(boxes):
        assert left["x"] + left["width"] <= right["x"]  # side by side, not stacked
    assert boxes[1]["width"] >= 500  # room to paint
    page.screenshot("layout")


def test_problems_say_what_is_wrong_and_name_the_brush(page, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    page.by_id("import-spec").send_keys(str(broken))
    page.wait(page.alert, "the alert about broken.json")
    assert "broken.json is not valid JSON" in page.alert()

    spec = json.loads((EXAMPLES / "street.json").read_text())
    spec["regions"][1]["prompt"] = "x" * 2001  # over the API's 2,000 characters
    spec["steps"] = 2
    too_long = tmp_path / "too-long.json"
    too_long.write_text(json.dumps(spec))
    load_file(page, "import-spec", too_long)
    page.by_id("submit").click()
    page.wait(page.alert, "the alert about the long prompt")
    assert "brush 2 (regions.1.prompt)" in page.alert() and "422" in page.alert()

    page.type("seed", "")
    page.by_id("submit").click()
    page.wait(lambda: "seed must be a whole number" in page.alert(), "the alert about the seed")
    page.screenshot("problem")
