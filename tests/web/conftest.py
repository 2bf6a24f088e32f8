"""The page in a real browser: `regionfarm up` on `toy` with an API key, and Debian's
headless chromium driven by Selenium through chromedriver (never a downloaded browser)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from farm.keys import add_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "regionfarm"
MODEL = "toy"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "web"
"""Screenshots of every test, kept after the run (gitignored)."""
WINDOW = (1280, 900)
"""The narrowest layout the page promises: 1280 px wide."""
FARM_START_S = 120.0
WAIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Farm:
    """`regionfarm up` as a process: its URL, its API key and its log."""

    base: str
    key: str
    log: Path
    proc: subprocess.Popen[bytes]

    def request(self, path: str, *, method: str = "GET") -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = self.request(f"/v1/jobs/{job_id}")
        assert status == 200, body
        return json.loads(body)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="package")
def farm(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Farm]:
    """One farm for the web suite, with auth on (the page must ask for the key)."""
    data = tmp_path_factory.mktemp("web-farm")
    key = add_key(data / "api-keys.json", "painter")  # `up` reads its data dir's keys file
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_")}
    env.update(REGIONFARM_MODEL_CACHE=str(model_cache), HF_HUB_OFFLINE="1")
    log = data / "up.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(BIN),
                "up",
                "--data-dir",
                str(data),
                "--port",
                str(port),
                "--workers",
                "1",
                "--model",
                MODEL,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    handle = Farm(f"http://127.0.0.1:{port}", key, log, proc)
    try:
        _wait_for_worker(handle)
        yield handle
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_worker(farm: Farm) -> None:
    """Until the API answers and a `toy` worker is live."""
    deadline = time.monotonic() + FARM_START_S
    while time.monotonic() < deadline:
        assert farm.proc.poll() is None, f"regionfarm up exited:\n{farm.log_tail()}"
        try:
            status, body = farm.request("/v1/models")
        except OSError:
            status, body = 0, b""
        if status == 200 and any(
            m["name"] == MODEL and m["live"] for m in json.loads(body)["models"]
        ):
            return
        time.sleep(0.3)
    raise AssertionError(f"no live {MODEL} worker in {FARM_START_S} s:\n{farm.log_tail()}")


def _check_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: the web tests drive Debian's chromium and "
            "chromium-driver. Install them with `make browsers` (or, as root, `apt-get install "
            "-y chromium chromium-driver`); `make test` does it first.",
            pytrace=False,
        )


@pytest.fixture(scope="package")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="package")
def driver(downloads: Path) -> Iterator[Any]:
    """Headless chromium at 1280 px wide; downloads land in `downloads`."""
    _check_browser()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # the screenshots of this run only
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield browser
    finally:
        browser.quit()


# Every job card has ended; a succeeded one has its image, so its end has been announced.
QUIET_QUEUE = """
return [...document.querySelectorAll("li.job")].every((li) =>
  li.dataset.status === "failed" || li.dataset.status === "canceled" ||
  (li.dataset.status === "succeeded" && !li.querySelector(".job-download").hidden));
"""


class Page:
    """The page in the browser, with the few moves the tests make."""

    def __init__(self, driver: Any, farm: Farm, downloads: Path, name: str) -> None:
        self.driver, self.farm, self.downloads, self.name = driver, farm, downloads, name
        self.shots = 0

    def by_id(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.screenshot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
                raise AssertionError(
                    f"{what}: not within {timeout} s\nalert: {self.alert()!r}\n"
                    f"status: {self.status()!r}\nfarm log:\n{self.farm.log_tail()}"
                )
            time.sleep(0.1)

    def open(self) -> None:
        """Load the page and type the API key, as a user would."""
        self.driver.get(self.farm.base + "/")
        self.wait(
            lambda: self.driver.execute_script("return document.body.dataset.ready"),
            "the page is ready",
        )
        field = self.by_id("api-key")
        field.clear()
        field.send_keys(self.farm.key)
        self.by_id("key-form").find_element("css selector", "button[type=submit]").click()
        # The models list answers only with a good key; the live model is then chosen.
        self.wait(
            lambda: self.by_id("model").get_attribute("value") == MODEL,
            f"{MODEL} is the chosen model",
        )
        assert not self.alert(), self.alert()
        self.wait(lambda: self.by_id("jobs").get_attribute("data-loaded"), "the job list")
        # An earlier test's job that ends now would announce itself in the status line, over
        # what this test reads there: start once every job shown has ended and been announced.
        self.wait(lambda: self.driver.execute_script(QUIET_QUEUE), "earlier jobs have ended")

    def status(self) -> str:
        return self.by_id("status").text

    def alert(self) -> str:
        element = self.by_id("alert")
        return element.text if element.is_displayed() else ""

    def type(self, element_id: str, text: str) -> None:
        field = self.by_id(element_id)
        field.clear()
        field.send_keys(text)

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = ARTIFACTS / f"{self.name}-{self.shots:02d}-{label}.png"
        self.driver.save_screenshot(str(path))
        return path

    def download(self, name: str, click: Callable[[], Any]) -> bytes:
        """`click()` something that downloads a file called `name`; the file's bytes."""
        path = self.downloads / name
        path.unlink(missing_ok=True)  # an earlier download of that name would answer for it
        click()
        self.wait(lambda: path.is_file() and path.stat().st_size > 0, f"download of {name}")
        return path.read_bytes()

    def severe_console_errors(self) -> list[str]:
        """The browser console's errors, less the 401s of loading the page before the key."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE" and "401" not in entry["message"]
        ]


@pytest.fixture
def page(driver: Any, farm: Farm, downloads: Path, request: pytest.FixtureRequest) -> Page:
    """The page, opened with the key; screenshots named after the test."""
    name = request.node.name.removeprefix("test_")[:60]
    driver.get("about:blank")
    driver.get_log("browser")  # start each test with an empty console
    handle = Page(driver, farm, downloads, name)
    handle.open()
    return handle
