"""`regionfarm render` and `regionfarm models` as a user runs them, in subprocesses."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ["street", "inpaint", "panorama", "landscape", "landscape_palette"]
BIN = Path(sys.executable).parent / "regionfarm"


def run(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_renders_at_its_size_with_a_progress_bar(example, model_cache, tmp_path):
    spec = json.loads((REPO / "examples" / f"{example}.json").read_text())
    out = tmp_path / f"{example}.png"
    proc = run("render", f"examples/{example}.json", "--model", "tiny-random", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.size == (spec["width"], spec["height"])
    assert "5/5" in proc.stderr  # the progress bar reached the last step
    sidecar = json.loads((tmp_path / f"{example}.png.json").read_text())
    assert sidecar["seed"] == spec["seed"] == sidecar["spec"]["seed"]
    assert sidecar["spec"]["model"] == "tiny-random" and sidecar["spec"]["palette"] is None
    assert (
        sidecar["timings"]["render_seconds"] > 0
        and sidecar["output"]["bytes"] == out.stat().st_size
    )


def test_render_is_byte_identical_across_runs_and_takes_the_format_from_the_suffix(
    model_cache, tmp_path
):
    for name in ("a.webp", "b.webp"):
        proc = run(
            "render",
            "examples/street.json",
            "--model",
            "tiny-random",
            "--seed",
            "5",
            "--quiet",
            "-o",
            str(tmp_path / name),
        )
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.webp").read_bytes() == (tmp_path / "b.webp").read_bytes()
    with Image.open(tmp_path / "a.webp") as image:
        assert image.format == "WEBP"
    assert json.loads((tmp_path / "a.webp.json").read_text())["spec"]["seed"] == 5


def png_uri(arr: np.ndarray) -> str:
    from io import BytesIO

    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bomb_png_uri(width: int, height: int) -> str:
    """A valid-looking PNG whose header claims width x height, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return "data:image/png;base64," + base64.b64encode(raw + chunk(b"IEND", b"")).decode()


def full(h, w, value=255):
    return np.full((h, w), value, dtype=np.uint8)


BAD_SPECS = {
    "mask_wrong_size": (
        {"width": 256, "height": 128, "regions": [{"prompt": "x", "mask": png_uri(full(64, 64))}]},
        "regions.0.mask",
    ),
    "empty_mask": (
        {
            "width": 256,
            "height": 128,
            "regions": [
                {"prompt": "x", "mask": png_uri(full(128, 256))},
                {"prompt": "y", "mask": png_uri(full(128, 256, 0))},
            ],
        },
        "regions.1.mask",
    ),
    "width_not_multiple_of_8": (
        {"width": 1001, "height": 128, "background": {"prompt": "sky"}},
        "width",
    ),
    "unknown_field": (
        {"width": 256, "height": 128, "background": {"prompt": "sky"}, "sede": 3},
        "sede",
    ),
    "palette_color_absent": (
        {
            "width": 256,
            "height": 128,
            "palette": {
                "image": png_uri(np.zeros((128, 256, 3), dtype=np.uint8)),
                "colors": {"#ff0000": {"prompt": "red"}},
            },
        },
        "palette.colors.#ff0000",
    ),
    "oversized_png_header": (
        {
            "width": 256,
            "height": 128,
            "regions": [{"prompt": "x", "mask": bomb_png_uri(100_000, 100_000)}],
        },
        "regions.0.mask",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_specs_exit_2_naming_the_field_without_traceback(case, tmp_path):
    spec, field = BAD_SPECS[case]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"kind": "regions", **spec}))
    proc = run(
        "render", str(path), "--model", "tiny-random", "-o", str(tmp_path / "o.png"), timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert re.search(rf"(^|\s){re.escape(field)}:", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_unreadable_spec_and_unknown_model_are_bad_input(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("{not json")
    proc = run("render", str(path), "-o", str(tmp_path / "o.png"), timeout=60)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = run(
        "render",
        "examples/street.json",
        "--model",
        "nope",
        "-o",
        str(tmp_path / "o.png"),
        timeout=60,
    )
    assert proc.returncode == 2 and "model:" in proc.stderr and "Traceback" not in proc.stderr


def test_models_lists_the_models_file():
    proc = run("models", timeout=60)
    assert proc.returncode == 0
    assert "sd15-lcm (default)" in proc.stdout and "tiny-random" in proc.stdout


FARM_COMMANDS = ("up", "api", "submit")
"""README commands that need a running farm: tests/cli/test_api_cmd.py runs those."""


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith(".venv/bin/regionfarm") and line.split()[1] not in FARM_COMMANDS
    ]


def test_readme_commands_run_as_written(model_cache, tmp_path):
    commands = readme_commands()
    assert len(commands) >= 3
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    for command in commands:
        args = command.split()[1:]
        proc = run(*args, cwd=tmp_path)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        if "-o" in args:
            assert (tmp_path / args[args.index("-o") + 1]).exists()
