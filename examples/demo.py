"""`make demo`: start the local farm, submit every example through the REST API, follow each
job's progress, write the images into out/, print a table, and stop the farm."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from cli.client import ApiClient, ApiError
from schemas import Settings, load_models

EXAMPLES = ("street", "inpaint", "panorama", "landscape", "landscape_palette")
HERE = Path(__file__).parent
FALLBACK_MODEL = "tiny-random"
TOY_MODELS = ("toy", "toy-xl")
"""Models trained on the toy world: they get the examples in its words (examples/toy/)."""
FARM_START_S = 600.0
"""Seconds the farm may take to come up (a first run builds or downloads the model)."""


def choose_model(settings: Settings, models: dict, requested: str | None) -> str:
    """The default model when its weights are here; else, said in one line, tiny-random."""
    from worker.render.loading import weights_available

    name = requested or settings.default_model
    if requested or weights_available(models[name], settings.model_cache):
        return name
    print(
        f"demo: the weights of {name} are not available offline; rendering with "
        f"{FALLBACK_MODEL} (random weights: the images are noise, the pipeline is real)"
    )
    return FALLBACK_MODEL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalFarm:
    """`regionfarm up` in a data dir of its own, for the length of a `with` block."""

    def __init__(self, model: str, device: str | None, data_dir: Path) -> None:
        self.model, self.device, self.data_dir = model, device, data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "farm.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        args = [
            sys.executable,
            "-m",
            "cli.main",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--model",
            self.model,
            "--workers",
            "1",
        ]
        if self.device:
            args += ["--device", self.device]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("REGIONFARM_")
            or k in ("REGIONFARM_MODEL_CACHE", "REGIONFARM_TORCH_THREADS")
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        client = ApiClient(self.url, retries=0)
        started = time.monotonic()
        print(f"demo: starting the farm on {self.url} (API, Redis, a {self.model} worker)")
        while not self._live(client):
            if self.proc.poll() is not None or time.monotonic() - started > FARM_START_S:
                self.__exit__()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the farm did not come up; its log ends with:\n{tail}")
            time.sleep(0.3)
        print(f"demo: farm up in {time.monotonic() - started:.1f} s")
        return self

    def _live(self, client: ApiClient) -> bool:
        try:
            models = client.models()
        except ApiError:
            return False
        return any(m["name"] == self.model and m["live"] for m in models)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def follow(client: ApiClient, job_id: str, label: str) -> dict:
    """Show a job's progress from its events stream; answers the final job."""
    from tqdm import tqdm

    with tqdm(total=None, desc=label, unit="step") as bar:
        final = None
        for name, data in client.events(job_id):
            if name == "status":
                bar.set_postfix_str(data.get("status", ""))
            elif name == "progress":
                bar.total = data["total"]
                bar.update(data["step"] - bar.n)
            elif name == "job":
                final = data
        return final if final is not None else client.get(job_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--model", help="model name (default: the farm's default, if present)")
    parser.add_argument("--device", help="device of the farm's worker (default: CUDA if present)")
    parser.add_argument(
        "--examples",
        nargs="+",
        choices=EXAMPLES,
        default=list(EXAMPLES),
        help="submit only these examples",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    name = choose_model(settings, load_models(settings.models_file), args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="regionfarm-demo-"))
    rows = []
    try:
        with LocalFarm(name, args.device, data_dir) as farm:
            client = ApiClient(farm.url)
            jobs = {}
            folder = HERE / "toy" if name in TOY_MODELS else HERE
            for example in args.examples:
                spec = json.loads((folder / f"{example}.json").read_text())
                spec["model"] = name
                spec.setdefault("output", {})["format"] = "png"
                jobs[example] = client.submit(spec)["id"]
            for example, job_id in jobs.items():
                job = follow(client, job_id, example)
                path = "-"
                if job["status"] == "succeeded":
                    path = str(client.download_result(job_id, args.out / f"{example}.png"))
                seconds = (job.get("result") or {}).get("render_seconds")
                rows.append((example, job["status"], f"{seconds:.1f}" if seconds else "-", path))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    _table([("job", "status", "seconds", "path"), *rows])
    return 0 if rows and all(r[1] == "succeeded" for r in rows) else 1


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
