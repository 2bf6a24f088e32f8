"""`regionfarm worker`: one child per GPU with its own CUDA_VISIBLE_DEVICES and node name."""

from __future__ import annotations

import argparse
import socket

from cli.worker_cmd import render_children, visible_gpus


def _args(**kw) -> argparse.Namespace:
    base = {"gpu": None, "gpus": None, "device": None, "name": None, "metrics_port": None}
    return argparse.Namespace(**{**base, **kw})


def test_gpus_all_gives_one_pinned_worker_per_visible_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3")
    assert visible_gpus() == ["0", "1", "3"]
    children = render_children("sd15-lcm", _args(gpus="all", metrics_port=9100))
    host = socket.gethostname()
    assert [c.name for c in children] == [f"gpu0@{host}", f"gpu1@{host}", f"gpu3@{host}"]
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in children] == ["0", "1", "3"]
    for i, child in enumerate(children):
        # Each process sees only its GPU, as device 0, and serves its own metrics port.
        assert child.args[child.args.index("--device") + 1] == "cuda:0"
        assert child.args[child.args.index("--metrics-port") + 1] == str(9100 + i)
        assert child.args[child.args.index("--model") + 1] == "sd15-lcm"


def test_one_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (gpu,) = render_children("m", _args(gpu=2))
    assert gpu.env == {"CUDA_VISIBLE_DEVICES": "2"}
    (cpu,) = render_children("m", _args(device="cpu", name="w7"))
    assert cpu.name.startswith("w7@") and cpu.env == {}
    assert cpu.args[cpu.args.index("--device") + 1] == "cpu"


def test_children_import_the_installed_packages_not_folders_in_the_working_directory(tmp_path):
    """A data dir named `farm` (with its `storage/`) where `regionfarm up` runs once made every
    worker child import it as the `farm` package and die; the children run with `-P`."""
    import subprocess
    import sys

    from worker.supervisor import python_module

    (tmp_path / "farm" / "storage").mkdir(parents=True)
    command = python_module("worker.main", "--help")
    assert command[:4] == [sys.executable, "-P", "-m", "worker.main"]
    ran = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    # Without -P the folder shadows the package: the check above can fail.
    bare = [c for c in command if c != "-P"]
    shadowed = subprocess.run(bare, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shadowed.returncode != 0 and "farm.storage" in shadowed.stderr
