"""GPU benchmark: the paper's headline jobs, diffusers' panorama pipeline against ours, the
StableDiffusionPipeline yardstick, eager against compiled, peak memory, time to first preview
and a farm run, written as one Markdown report.

On CUDA: full-size random-weight SD1.5 and SDXL built from the shipped configs (a random-weight
model times exactly like the real one), fp16, and the report goes to bench/RESULTS.md. Without
CUDA (or with --tiny): the same steps at tiny sizes on tiny-random and tiny-random-xl, into
out/bench/gpu/RESULTS.md; those figures only show that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.render import (
    PROMPT,
    SEED,
    Bench,
    Row,
    _sync,
    landscape_spec,
    panorama_spec,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
CPU_RESULTS = Path("out/bench/gpu/RESULTS.md")
BIN = Path(sys.executable).parent / "regionfarm"
FARM_START_S = 600.0
"""Seconds `regionfarm up` may take until its worker is live (a full-size model loads)."""
JOB_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Sizes:
    """Canvases and step counts of one run: `full` (CUDA) or `tiny` (CPU, or --tiny)."""

    name: str
    region_scale: int  # examples/landscape.json (1920x768, nine regions) shrunk by this
    panorama: tuple[int, int]  # (height, width) of the paper's panorama job
    xl_side: int  # the SDXL three-region job's square canvas
    comparison: tuple[int, int]  # the panorama that diffusers' pipeline renders too
    baseline_steps: int  # diffusers' default: 50 DDIM steps
    baseline_cap: int  # steps the baselines are timed over (then scaled to all)
    yardstick_side: int
    yardstick_steps: int
    farm_side: int


FULL = Sizes("full", 1, (512, 3072), 1024, (512, 2048), 50, 10, 512, 30, 512)
TINY = Sizes("tiny", 4, (128, 768), 256, (128, 512), 4, 2, 256, 6, 128)
PAPER = {
    "nine-region": "59 s (RTX 2080 Ti)",
    "panorama": "10 s (RTX 2080 Ti)",
    "sdxl": "12 s (RTX 2080 Ti)",
}
"""The seed paper's figures for its headline jobs."""
NINE_REGION_GOAL_S = 3.0
"""The issue's goal for the 768x1920 nine-region job on one H100/H200."""
YARDSTICK_PUBLISHED = "about 54 it/s eager on an H100 (diffusers' published fp16 figure)"


# --- models ------------------------------------------------------------------------------------


def random_pipeline(family: str, device, dtype):
    """A full-size random-weight pipeline of the family from the shipped configs (SD1.5's
    UNet, VAE and CLIP; SDXL's UNet, VAE and both encoders), with the project's tiny
    tokenizer (token ids only; the encoders' vocabularies are larger). Works on "meta" too."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from worker.render.loading import make_scheduler
    from worker.render.single_file import shipped_config_dir
    from worker.render.tiny import TOKENIZER_DIR

    xl = family == "sdxl"
    with tempfile.TemporaryDirectory() as scratch:
        configs = shipped_config_dir(family, Path(scratch))
        unet_config = UNet2DConditionModel.load_config(configs, subfolder="unet")
        vae_config = AutoencoderKL.load_config(configs, subfolder="vae")
        scheduler_config = DDIMScheduler.load_config(configs, subfolder="scheduler")
        text = [CLIPTextConfig.from_pretrained(configs, subfolder="text_encoder")]
        if xl:
            text.append(CLIPTextConfig.from_pretrained(configs, subfolder="text_encoder_2"))
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        encoders = [CLIPTextModel(text[0])]
        if xl:
            encoders.append(CLIPTextModelWithProjection(text[1]))
    for module in (unet, vae, *encoders):
        module.to(dtype).eval()
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77)
    scheduler = make_scheduler("euler" if xl else "lcm", scheduler_config)
    if xl:
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=encoders[0],
            text_encoder_2=encoders[1],
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def random_entry(family: str):
    """The models-file entry of a random full-size model (fp16, our sampler's defaults)."""
    from schemas import ModelEntry

    xl = family == "sdxl"
    return ModelEntry(
        name=f"{family}-random",
        source=f"random weights, the shipped {family} configs",
        family=family,
        scheduler="euler" if xl else "lcm",
        steps=5,
        guidance_scale=0.0 if xl else 1.0,
        native_size=1024 if xl else 512,
        dtype="float16",
    )


def load_models_for(sizes: Sizes, device):
    """(sd15, sdxl, models): the two loaded models and the entries specs are validated against."""
    import torch

    from schemas import Settings, load_models
    from worker.render import LoadedModel, load_model
    from worker.render.loading import library_versions, place

    settings = Settings()
    models = load_models(settings.models_file)
    if sizes is TINY:
        pair = [
            load_model(models[name], device=device, cache_dir=settings.model_cache)
            for name in ("tiny-random", "tiny-random-xl")
        ]
        return (*pair, models)
    pair = []
    for family in ("sd15", "sdxl"):
        started = time.perf_counter()
        entry = random_entry(family)
        pipe = random_pipeline(family, device, torch.float16)
        place(pipe, family, device, torch.float16)
        _sync(device)
        seconds = time.perf_counter() - started
        pair.append(
            LoadedModel(
                entry.name,
                entry,
                pipe,
                device,
                torch.float16,
                load_seconds=seconds,
                versions=library_versions(),
            )
        )
        models[entry.name] = entry
    return (*pair, models)


# --- jobs --------------------------------------------------------------------------------------


def rect_masks(width: int, height: int, boxes) -> list[str]:
    """PNG data URIs of rectangular masks, boxes as (left, top, right, bottom) fractions."""
    from schemas import encode_png_data_uri

    uris = []
    for left, top, right, bottom in boxes:
        mask = np.zeros((height, width), dtype=bool)
        mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = 1
        uris.append(encode_png_data_uri(mask))
    return uris


def three_regions(side: int) -> dict[str, Any]:
    boxes = [(0, 0.3, 0.4, 1), (0.3, 0.2, 0.7, 0.9), (0.6, 0.4, 1, 1)]
    prompts = ["a red fox", "an old oak tree", "a wooden cabin"]
    masks = rect_masks(side, side, boxes)
    return {
        "kind": "regions",
        "width": side,
        "height": side,
        "seed": SEED,
        "background": {"prompt": "a forest clearing in autumn"},
        "regions": [{"prompt": p, "mask": m} for p, m in zip(prompts, masks)],
    }


def farm_jobs(side: int, count: int) -> list[dict[str, Any]]:
    """`count` mixed specs: regions, a panorama, an image and an inpainting, in turn."""
    from schemas import encode_png_data_uri

    picture = np.random.default_rng(SEED).integers(0, 256, (side, side, 3), dtype=np.uint8)
    masks = rect_masks(side, side, [(0, 0, 0.5, 1), (0.5, 0.25, 1, 1)])
    kinds = [
        {
            "kind": "regions",
            "width": side,
            "height": side,
            "background": {"prompt": "sky"},
            "regions": [
                {"prompt": "a house", "mask": masks[0]},
                {"prompt": "a lake", "mask": masks[1]},
            ],
        },
        {"kind": "panorama", "width": 4 * side, "height": side, "background": {"prompt": PROMPT}},
        {"kind": "image", "width": side, "height": side, "background": {"prompt": "a cat"}},
        {
            "kind": "regions",
            "width": side,
            "height": side,
            "background": {"prompt": "a field", "image": encode_png_data_uri(picture)},
            "regions": [{"prompt": "a lake", "mask": masks[1]}],
        },
    ]
    return [{**kinds[k % len(kinds)], "seed": k} for k in range(count)]


# --- measurements ------------------------------------------------------------------------------


def first_preview_seconds(bench: Bench, data: dict[str, Any]) -> tuple[float, int, int]:
    """(seconds, step, steps): from the start of a render to its first preview, made as a
    worker makes it (worker.preview.latent_preview every PREVIEW_EVERY steps)."""
    from worker.preview import latent_preview
    from worker.render import RenderCanceled, load_inputs, render_job
    from worker.runner import PREVIEW_EVERY

    spec = bench.spec(data)
    inputs = load_inputs(spec, max_pixels=bench.settings.max_pixels)
    seen: list[float] = []
    step = min(PREVIEW_EVERY, spec.steps)

    def on_latent(i: int, latent) -> None:
        if i == step:
            latent_preview(latent)
            seen.append(time.perf_counter())

    _sync(bench.device)
    started = time.perf_counter()
    try:
        render_job(bench.model, spec, inputs, on_latent=on_latent, should_cancel=lambda: bool(seen))
    except RenderCanceled:  # stopped once the preview is out: the rest is not needed
        pass
    return seen[0] - started, step, spec.steps


def yardstick(bench: Bench, side: int, steps: int) -> dict[str, float]:
    """diffusers' StableDiffusionPipeline at batch 1, guidance 7.5 (two UNet samples per
    iteration), DDIM, on the SD1.5 model's modules: iterations per second between the first
    and the last step's end (a warm-up call first)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from worker.render.baseline import diffusers_ddim_pipeline

    plain = diffusers_ddim_pipeline(bench.model, StableDiffusionPipeline)
    ends: list[float] = []

    def on_step_end(_pipe, _i, _t, kwargs):
        _sync(bench.device)
        ends.append(time.perf_counter())
        return kwargs

    for count in (2, steps):  # the first call warms up
        ends.clear()
        plain(
            PROMPT,
            height=side,
            width=side,
            num_inference_steps=count,
            guidance_scale=7.5,
            generator=torch.Generator("cpu").manual_seed(SEED),
            output_type="latent",
            callback_on_step_end=on_step_end,
        )
    rate = (len(ends) - 1) / (ends[-1] - ends[0])
    return {"it_s": rate, "samples_s": 2 * rate, "steps": steps, "side": side}


def farm_run(model: str, device: str, sizes: Sizes, jobs: int, threads: int | None, env_extra):
    """`regionfarm up` with one worker; `jobs` mixed jobs submitted at once over REST.
    Returns the figures (jobs per minute over the whole burst, submit-to-start latencies)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="regionfarm-gpu-bench-"))
    keep = ("REGIONFARM_MODEL_CACHE", "REGIONFARM_MODELS_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONFARM_") or k in keep}
    env |= {"HF_HUB_OFFLINE": "1", **env_extra}
    if threads:
        env["REGIONFARM_TORCH_THREADS"] = str(threads)
    command = [
        str(BIN),
        "up",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--workers",
        "1",
        "--model",
        model,
        "--device",
        device,
    ]
    log = (data / "up.log").open("wb")
    farm = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        _wait_live(base, model, farm, data)
        up_seconds = time.monotonic() - started
        ids = [
            _call(f"{base}/v1/jobs", {**spec, "model": model})["id"]
            for spec in farm_jobs(sizes.farm_side, jobs)
        ]
        done = [_wait_done(base, job_id) for job_id in ids]
    finally:
        farm.send_signal(signal.SIGINT)
        try:
            farm.wait(120)
        except subprocess.TimeoutExpired:
            farm.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
    failed = [j["id"] for j in done if j["status"] != "succeeded"]
    created = [_time(j["created_at"]) for j in done]
    waits = sorted(_time(j["started_at"]) - _time(j["created_at"]) for j in done)
    span = max(_time(j["finished_at"]) for j in done) - min(created)
    return {
        "jobs": jobs,
        "failed": len(failed),
        "up_seconds": up_seconds,
        "jobs_per_minute": 60 * jobs / span,
        "first_wait_s": _time(done[0]["started_at"]) - created[0],
        "wait_p50_s": statistics.median(waits),
        "wait_max_s": waits[-1],
        "command": shlex.join(["regionfarm", *command[1:]]),
    }


def _call(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as answer:
        return json.loads(answer.read())


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _wait_live(base: str, model: str, farm: subprocess.Popen, data: Path) -> None:
    deadline = time.monotonic() + FARM_START_S
    while time.monotonic() < deadline and farm.poll() is None:
        try:
            if any(m["name"] == model and m["live"] for m in _call(f"{base}/v1/models")["models"]):
                return
        except OSError:
            pass
        time.sleep(0.2)
    tail = (data / "up.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"regionfarm up: no live {model} worker in {FARM_START_S:.0f} s:\n{tail}")


def _wait_done(base: str, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = _call(f"{base}/v1/jobs/{job_id}")
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not finish in {JOB_TIMEOUT_S:.0f} s")


def save_for_farm(model, directory: Path) -> dict[str, str]:
    """The environment that lets a farm worker load `model`: on CUDA the random SD1.5 saved as
    a diffusers directory with a models file naming it; the tiny models need nothing."""
    if model.entry.source.startswith("builtin:"):
        return {}
    model.pipe.save_pretrained(directory / model.name)
    entry = model.entry.model_dump(exclude={"name"}, exclude_none=True)
    entry["source"] = str(directory / model.name)
    lines = [f"[models.{model.name}]"] + [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    path = directory / "models.toml"
    path.write_text("\n".join(lines) + "\n")
    return {"REGIONFARM_MODELS_FILE": str(path)}


# --- report ------------------------------------------------------------------------------------


def compiled_section(bench: Bench, sizes: Sizes) -> list[str]:
    """The nine-region job eager, then with the UNet compiled (worker.render.compiled, as a
    worker with `--compile` runs it): compile and warm-up time, the job's time compiled against
    eager, and the graphs that jobs compiled after the warm-up (goal: none)."""
    import torch
    from torch._dynamo.utils import counters

    from worker.render.compiled import compile_unet
    from worker.render.defaults import LATENT_SCALE
    from worker.render.sampler import auto_view_batch

    model = bench.model
    native = model.native_size
    # Canvases at least the native size on each side: their views are all of the warm-up's
    # size (a smaller canvas has smaller views, which compile once each).
    scale = max(1, min(sizes.region_scale, 768 // native))  # a divisor of the example's size
    spec = landscape_spec(scale, baseline_steps=None)
    eager = bench.ours("4e", "nine regions, eager", spec, None)
    side = native // LATENT_SCALE
    batch = auto_view_batch(model.device, (side, side), bench.settings.view_batch)
    started = time.perf_counter()
    compile_unet(model, batch)
    _sync(model.device)
    compile_s = time.perf_counter() - started
    graphs = counters["stats"]["unique_graphs"]
    bench.ours("4w", "nine regions, compiled (first job, not counted)", spec, None)
    row = bench.ours("4", "nine regions, compiled UNet", spec, None)
    pano_h, pano_w = max(sizes.panorama[0], native), sizes.panorama[1]
    bench.ours("4p", "panorama, compiled (another canvas)", panorama_spec(pano_w, pano_h), None)
    recompiles = counters["stats"]["unique_graphs"] - graphs
    torch._dynamo.reset()
    return [
        "",
        "## 4. Eager against compiled",
        "",
        (
            f"- compile and warm-up: {compile_s:.1f} s ({model.compiled_unet.batch} UNet rows "
            f"per call; the repeated transformer blocks compiled, channels_last)"
        ),
        (
            f"- nine-region job {row.height}x{row.width}: eager {eager.wall_s:.2f} s, compiled "
            f"**{row.wall_s:.2f} s** (compiled/eager {row.wall_s / max(eager.wall_s, 1e-9):.2f}; "
            f"{row.unet_samples} UNet rows evaluated with the padding, {eager.unet_samples} eager)"
        ),
        (
            f"- graphs compiled by jobs after the warm-up (the nine-region job twice, then a "
            f"{pano_h}x{pano_w} panorama): **{recompiles}** (goal 0)"
        ),
    ]


def row_line(row: Row, paper: str = "") -> str:
    cells = [
        row.job,
        f"{row.height}x{row.width}",
        f"{row.wall_s:.2f}",
        f"{row.step_s:.3f}",
        row.scaled_note,
        str(row.unet_calls),
        str(row.unet_samples),
        f"{row.peak_added_mb:.0f}",
    ]
    return "| " + " | ".join(cells + ([paper] if paper else [])) + " |"


ROW_HEADER = "| job | canvas | wall s | s/step | timed | UNet calls | UNet samples | +mem MB |"


def machine(device) -> list[str]:
    import diffusers
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    cuda = torch.version.cuda or "none"
    return [
        (
            f"- device: {device} ({name or platform.machine()}); CPUs: {os.cpu_count()}; "
            f"torch threads: {torch.get_num_threads()}"
        ),
        (
            f"- versions: torch {torch.__version__} (CUDA {cuda}), diffusers "
            f"{diffusers.__version__}, transformers {transformers.__version__}, Python "
            f"{platform.python_version()}"
        ),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="cuda[:N] or cpu (default: CUDA when present)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and models on CUDA too")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"the report (default: {RESULTS.relative_to(ROOT)}"
        f" on CUDA at full size, else {CPU_RESULTS})",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--farm-jobs", type=int, default=20, help="jobs of the farm run (20)")
    args = parser.parse_args(argv)
    args.model, args.full_run_limit = None, float("inf")  # what bench.render.Bench reads
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from worker.render.loading import pick_device

    device = pick_device(args.device)
    sizes = FULL if device.type == "cuda" and not args.tiny else TINY
    out = args.out or (RESULTS if sizes is FULL else CPU_RESULTS)
    if out.resolve() == RESULTS and sizes is not FULL:
        raise SystemExit(
            "bench/gpu.py: bench/RESULTS.md holds full-size CUDA figures only; "
            "give --out another path"
        )
    started = time.perf_counter()
    command = shlex.join(["python", "bench/gpu.py", *(argv if argv is not None else sys.argv[1:])])
    sd15, sdxl, models = load_models_for(sizes, device)
    bench = Bench(args, model=sd15, models=models)
    bench_xl = Bench(args, model=sdxl, models=models)
    lines = [
        f"# GPU benchmark ({sizes.name} sizes)",
        "",
        f"Command: `{command}`",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        *machine(device),
    ]
    if sizes is TINY:
        lines.append(
            "- **tiny sizes** (tiny-random models, small canvases): these figures show "
            "that the script runs; they say nothing about a GPU."
        )
    lines.append(
        f"- models: {sd15.name} and {sdxl.name}, {sd15.dtype} (loaded in "
        f"{sd15.load_seconds:.1f} s and {sdxl.load_seconds:.1f} s)"
    )

    # 1. The paper's headline jobs (a warm-up render of each model first, not counted).
    bench.warm_up()
    bench_xl.ours("w", "warm-up", three_regions(sdxl.native_size // 2), None)
    nine = bench.ours(
        "1",
        "nine regions (examples/landscape.json)",
        landscape_spec(sizes.region_scale, baseline_steps=None),
        None,
    )
    ph, pw = sizes.panorama
    pano = bench.ours("2", "panorama", panorama_spec(pw, ph), None)
    xl = bench_xl.ours("3", "SDXL, three regions", three_regions(sizes.xl_side), None)
    lines += [
        "",
        "## 1. The paper's headline jobs (our defaults)",
        "",
        ROW_HEADER + " paper |",
        "|---" * 9 + "|",
        row_line(nine, PAPER["nine-region"]),
        row_line(pano, PAPER["panorama"]),
        row_line(xl, PAPER["sdxl"]),
    ]

    # 2. diffusers' panorama pipeline at its defaults against ours.
    ch, cw = sizes.comparison
    steps, cap = sizes.baseline_steps, sizes.baseline_cap
    a = bench.diffusers_panorama((ch, cw), steps, cap)
    a.job = f"diffusers panorama pipeline (DDIM {steps}, guidance 7.5)"
    md_steps = None if sizes is FULL else steps
    b = bench.ours(
        "b",
        f"ours, method multidiffusion (DDIM {steps})",
        panorama_spec(cw, ch, method="multidiffusion", steps=md_steps),
        cap,
    )
    c = bench.ours("c", "ours, defaults", panorama_spec(cw, ch), None)
    lines += [
        "",
        f"## 2. Panorama {ch}x{cw}: diffusers' pipeline against ours",
        "",
        ROW_HEADER,
        "|---" * 8 + "|",
        row_line(a),
        row_line(b),
        row_line(c),
        "",
        (
            f"Wall time, ours/diffusers: multidiffusion {b.wall_s / a.wall_s:.3f}, defaults "
            f"{c.wall_s / a.wall_s:.4f}."
        ),
    ]

    # 3. The yardstick, and what our jobs get out of the UNet against it.
    ys = yardstick(bench, sizes.yardstick_side, sizes.yardstick_steps)
    lines += [
        "",
        "## 3. Yardstick: diffusers' StableDiffusionPipeline",
        "",
        (
            f"- {ys['side']}x{ys['side']}, batch 1, guidance 7.5, {ys['steps']} DDIM steps: "
            f"**{ys['it_s']:.2f} it/s** ({ys['samples_s']:.1f} UNet samples/s); published: "
            f"{YARDSTICK_PUBLISHED}"
        ),
    ]
    for row in (nine, pano):
        per_s = row.unet_samples / max(row.wall_s, 1e-9)
        lines.append(
            f"- {row.job} {row.height}x{row.width}: {per_s:.1f} UNet samples/s over the "
            f"whole job (views are {sd15.native_size} px, the yardstick's are "
            f"{ys['side']} px)"
        )

    # 4. Eager against compiled: measured after the farm run (compiling changes the loaded
    # UNet in place, and every other figure is eager); its lines go here.
    section4 = len(lines)

    # 5. Peak memory.
    lines += ["", "## 5. Peak memory", ""]
    if device.type == "cuda":
        largest = max((nine, pano, xl, a, b, c), key=lambda row: row.peak_added_mb)
        weights = bench.loaded_bytes / 2**30
        peak = weights + largest.peak_added_mb / 2**10
        lines.append(
            f"- peak GPU memory allocated: {peak:.1f} GiB, during {largest.job} "
            f"{largest.height}x{largest.width}, over {weights:.1f} GiB with both models loaded; "
            "per job: the +mem MB columns above"
        )
    else:
        lines.append(
            "- peak GPU memory: not measured on the CPU; the +mem MB columns above are "
            "the process RSS a job added"
        )

    # 6. Time to first preview.
    seconds, step, total = first_preview_seconds(
        bench, landscape_spec(sizes.region_scale, baseline_steps=None)
    )
    lines += [
        "",
        "## 6. Time to first preview",
        "",
        (
            f"- nine-region job: {seconds:.2f} s from the start of the render to its first "
            f"preview (step {step} of {total}, as a worker makes it)"
        ),
    ]

    # 7. The farm.
    with tempfile.TemporaryDirectory() as scratch:
        env = save_for_farm(sd15, Path(scratch))
        farm = farm_run(sd15.name, str(device), sizes, args.farm_jobs, args.threads, env)
    lines += [
        "",
        "## 7. Farm run",
        "",
        f"- `{farm['command']}`: worker live after {farm['up_seconds']:.1f} s",
        (
            f"- {farm['jobs']} mixed jobs (regions, panorama, image, inpainting; "
            f"{sizes.farm_side} px high) submitted at once over REST, {farm['failed']} failed: "
            f"**{farm['jobs_per_minute']:.1f} jobs/minute**"
        ),
        (
            f"- submit-to-start latency: first job (idle farm) {farm['first_wait_s']:.3f} s; "
            f"over the burst (queueing included) p50 {farm['wait_p50_s']:.2f} s, max "
            f"{farm['wait_max_s']:.2f} s"
        ),
    ]

    lines[section4:section4] = compiled_section(bench, sizes)

    # Goals.
    lines += ["", "## Goals", ""]
    if sizes is FULL and nine.width == 1920:
        verdict = "PASS" if nine.wall_s < NINE_REGION_GOAL_S else "FAIL"
        lines.append(
            f"- {verdict}: 768x1920 nine-region job under {NINE_REGION_GOAL_S:.0f} s: "
            f"{nine.wall_s:.2f} s"
        )
    else:
        lines.append(
            f"- not judged: 768x1920 nine-region job under {NINE_REGION_GOAL_S:.0f} s "
            "(a full-size CUDA run only)"
        )
    lines += ["", f"Benchmark took {time.perf_counter() - started:.0f} s."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
