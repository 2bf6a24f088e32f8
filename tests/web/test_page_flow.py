"""Paint, submit, watch, download and cancel in the browser; what the page submits is what it
exports, and what `regionfarm submit` makes of the export is the same job."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import Select

from schemas.images import decode_image, mask_array

BIN = Path(sys.executable).parent / "regionfarm"
SIZE = 256
"""The test canvas: small, so `toy` renders it in about a second on a CPU."""
LEFT = [(40, 60), (100, 60), (100, 200), (40, 200)]
RIGHT = [(170, 40), (220, 120), (170, 220)]
"""Strokes of the two brushes, in canvas pixels: far enough apart not to touch (64 px pen)."""


def set_custom_size(page, width: int, height: int) -> None:
    Select(page.by_id("size-preset")).select_by_value("custom")
    page.type("custom-width", str(width))
    page.type("custom-height", str(height))
    page.by_id("apply-size").click()
    page.wait(lambda: page.by_id("canvas").get_attribute("width") == str(width), "the resize")


def paint(page, points: list[tuple[int, int]]) -> None:
    """Drag the mouse through `points` (canvas pixels) on the canvas."""
    canvas = page.by_id("canvas")
    box = canvas.rect
    width, height = int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))
    scale = min(box["width"] / width, box["height"] / height)  # object-fit: contain

    def offset(point: tuple[int, int]) -> tuple[int, int]:  # from the element's center
        return round((point[0] - width / 2) * scale), round((point[1] - height / 2) * scale)

    chain = ActionChains(page.driver).move_to_element_with_offset(canvas, *offset(points[0]))
    chain.click_and_hold()
    for point in points[1:]:
        chain.move_to_element_with_offset(canvas, *offset(point))
    chain.release().perform()


def job_ids(page) -> set[str]:
    return {item.get_attribute("data-job-id") for item in page.css("li[data-job-id]")}


def submit(page) -> str:
    """Click Submit; the id of the job whose card it adds to the queue panel."""
    before = job_ids(page)
    page.by_id("submit").click()
    page.wait(lambda: job_ids(page) - before or page.alert(), "the submitted job's card")
    assert not page.alert(), page.alert()
    (job_id,) = job_ids(page) - before
    return job_id


def card(page, job_id: str) -> Any:
    return page.wait(lambda: page.css(f'li[data-job-id="{job_id}"]'), f"the card of {job_id}")[0]


def card_status(page, job_id: str) -> str:
    return card(page, job_id).get_attribute("data-status")


def paint_two_regions(page) -> None:
    """Two brushes with the prompts the page offers for `toy`: its world's words."""
    set_custom_size(page, SIZE, SIZE)
    assert page.by_id("bg-prompt").get_attribute("value") == "a gray background"
    assert page.by_id("brush-1-prompt").get_attribute("value") == "red"
    paint(page, LEFT)
    page.by_id("add-brush").click()
    assert page.by_id("brush-2-prompt").get_attribute("value") == "blue"
    paint(page, RIGHT)


def test_paint_two_regions_submit_watch_it_finish_download_it_and_cancel_a_second_job(page):
    paint_two_regions(page)
    page.screenshot("painted")
    job_id = submit(page)

    # The queue panel follows the job to its end over the events stream.
    page.wait(lambda: card_status(page, job_id) == "succeeded", f"job {job_id} succeeds")
    item = card(page, job_id)
    progress = item.find_element("css selector", "progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "5"
    assert item.find_element("css selector", ".job-progress").text == "step 5 of 5"
    image = item.find_element("css selector", "img.job-result")
    page.wait(
        lambda: (
            page.driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image
            )
            == SIZE
        ),
        "the result image is shown",
    )
    page.screenshot("succeeded")

    # The download link gives the stored image, byte for byte.
    link = item.find_element("css selector", "a.job-download")
    downloaded = page.download(f"{job_id}.png", link.click)
    status, stored = page.farm.request(f"/v1/jobs/{job_id}/result")
    job = page.farm.job(job_id)
    assert status == 200 and downloaded == stored
    assert hashlib.sha256(downloaded).hexdigest() == job["result"]["sha256"]

    # Two regions, one per brush, each the strokes of its own brush.
    regions = job["spec"]["regions"]
    assert [r["prompt"] for r in regions] == ["red", "blue"]
    masks = [_mask(r["mask"]) for r in regions]
    for mask, stroke in zip(masks, (LEFT, RIGHT), strict=True):
        assert all(mask[y, x] for x, y in stroke)
    assert not (masks[0] & masks[1]).any()

    # "Duplicate into editor" brings the job back as brushes; "re-render" sends it again.
    item.find_element("css selector", "button.job-duplicate").click()
    page.wait(lambda: page.status().startswith(f"Loaded job {job_id}: 2 brushes"), "the duplicate")
    prompts = [page.by_id(f"brush-{n}-prompt").get_attribute("value") for n in (3, 4)]
    assert prompts == ["red", "blue"]  # brushes 3 and 4: new ones
    before = job_ids(page)
    item.find_element("css selector", "button.job-rerender").click()
    page.wait(lambda: job_ids(page) - before, "the re-rendered job's card")
    (again,) = job_ids(page) - before
    respec = page.farm.job(again)["spec"]
    assert respec.pop("seed") != job["spec"]["seed"]
    assert respec == {k: v for k, v in job["spec"].items() if k != "seed"}

    # A second, larger job: watched while it runs (progress and a preview), then canceled.
    Select(page.by_id("size-preset")).select_by_value("768x768")
    second = submit(page)
    item = card(page, second)
    page.wait(lambda: card_status(page, second) == "running", f"job {second} runs", timeout=120)
    page.wait(
        lambda: item.find_element("css selector", "img.job-preview").is_displayed(),
        f"a preview of job {second}",
        timeout=120,
    )
    page.screenshot("second-running")
    item.find_element("css selector", "button.job-cancel").click()
    page.wait(lambda: card_status(page, second) == "canceled", f"job {second} is canceled")
    assert page.farm.job(second)["status"] == "canceled"
    assert not item.find_element("css selector", "button.job-cancel").is_displayed()
    page.screenshot("second-canceled")
    assert page.severe_console_errors() == []


def test_the_page_submits_byte_for_byte_the_spec_it_exports_and_the_cli_makes_the_same_job(
    page, tmp_path
):
    paint_two_regions(page)
    page.type("seed", "4242")
    # Record the bodies the page POSTs (the page calls the global fetch at each request).
    page.driver.execute_script("""
        window.posted = [];
        const original = window.fetch;
        window.fetch = function (url, options) {
          if (options && options.method === "POST") window.posted.push(options.body);
          return original.apply(this, arguments);
        };
    """)
    exported = page.download("regionfarm-spec-4242.json", page.by_id("export-spec").click)
    job_id = submit(page)
    posted = page.driver.execute_script("return window.posted")
    assert len(posted) == 1 and posted[0].encode() == exported
    page.screenshot("submitted")

    spec_file = tmp_path / "exported.json"
    spec_file.write_bytes(exported)
    done = subprocess.run(
        [str(BIN), "submit", str(spec_file), "--url", page.farm.base, "--key", page.farm.key],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    cli_id = done.stdout.split()[0]
    from_page, from_cli = page.farm.job(job_id)["spec"], page.farm.job(cli_id)["spec"]
    assert from_page["seed"] == 4242 and len(from_page["regions"]) == 2
    assert json.dumps(from_cli, sort_keys=True) == json.dumps(from_page, sort_keys=True)


def _mask(uri: str) -> np.ndarray:
    return mask_array(decode_image(uri, max_pixels=SIZE * SIZE, loc=["mask"]))
