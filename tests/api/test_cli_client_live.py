"""`regionfarm submit --wait` against the real API over HTTP, with a worker consuming the queue."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

BIN = Path(sys.executable).parent / "regionfarm"


@pytest.fixture
def live_api(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def test_submit_wait_downloads_the_result(live_api, keys, make_spec, worker, tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(make_spec(metadata={"test_steps": 3})))
    out = tmp_path / "out.png"
    worker.start()
    done = subprocess.run(
        [
            str(BIN),
            "submit",
            str(spec_path),
            "--url",
            live_api,
            "--key",
            keys["acme"],
            "--wait",
            "-o",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")


def test_submit_of_a_bad_spec_exits_2_naming_the_field(live_api, keys, make_spec, tmp_path):
    spec = make_spec()
    spec["regions"][1]["mask_std"] = 999
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [str(BIN), "submit", str(spec_path), "--url", live_api, "--key", keys["acme"]],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "regions.1.mask_std" in done.stderr and "Traceback" not in done.stderr
