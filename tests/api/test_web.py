"""The semantic palette page: served at / with its files under /web/, public, and shipped."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import api

STATIC = Path(api.__file__).parent / "static"
ROOT = Path(__file__).resolve().parents[2]


def _get(client, path: str):
    """GET `path`, read it whole and close it (a file answer holds the file open until then)."""
    answer = client.get(path)
    answer.get_data()
    answer.close()
    return answer


def test_the_page_and_its_files_need_no_key_while_the_api_does(client):
    assert client.get("/v1/jobs").status_code == 401  # auth is on in these tests
    page = _get(client, "/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    scripts = re.findall(r'src="(/web/[^"]+)"', page.text)
    styles = re.findall(r'href="(/web/[^"]+)"', page.text)
    assert scripts == ["/web/main.js"] and styles == ["/web/style.css"]
    for path in (*scripts, *styles):
        answer = _get(client, path)
        assert answer.status_code == 200, path
    assert _get(client, "/web/main.js").mimetype in ("text/javascript", "application/javascript")


def test_every_module_the_page_imports_is_served(client):
    pending, seen = ["main.js"], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        answer = _get(client, f"/web/{name}")
        assert answer.status_code == 200, name
        for imported in re.findall(r'from "\./([\w.]+)"', answer.text):
            if imported not in seen:
                pending.append(imported)
    assert seen == {p.name for p in STATIC.glob("*.js")}


def test_the_page_runs_only_its_own_scripts_and_loads_nothing_from_elsewhere(client):
    page = _get(client, "/")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for path in STATIC.iterdir():
        text = path.read_text()
        # No CDN, no remote font or script: every URL is the page's own or the API's.
        assert not re.search(r"""(src|href)=["']https?://""", text), path.name
        assert "import(" not in text and "innerHTML" not in text, path.name


def test_an_unknown_file_is_a_json_404(client):
    answer = _get(client, "/web/nothing.js")
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("name", ["index.html", "style.css", "main.js"])
def test_the_files_ship_with_the_package(name):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    assert any(Path("static", name).match(pattern) for pattern in patterns)
    assert (STATIC / name).is_file()
