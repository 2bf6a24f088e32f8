"""Render benchmark: diffusers' panorama pipeline vs our MultiDiffusion mode vs our defaults."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "landscape.json"
PROMPT = "a photo of the dolomites"
SEED = 0
BASELINE_STEPS = 50
"""diffusers' panorama default and our `multidiffusion` default."""
DEFAULT_CAP = 3
"""Steps a baseline is timed over when its full run would pass the limit."""
FULL_RUN_LIMIT_S = 600.0
"""A run estimated (from its first step) past this many seconds is timed over its first steps."""
RSS_INTERVAL_S = 0.005

FULL = {
    "panorama": (512, 2048),
    "baseline_steps": BASELINE_STEPS,
    "region_scale": 1,
    "widths": (2048, 4096, 8192),
    "widths_height": 512,
}
QUICK = {
    "panorama": (256, 1024),
    "baseline_steps": 5,
    "region_scale": 4,
    "widths": (512, 1024, 2048),
    "widths_height": 256,
}


# --- measuring -------------------------------------------------------------------------------


def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc), so that the RSS before
    a render is not inflated by the previous render's freed memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figures just include more caching
        pass


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _RssSampler(threading.Thread):
    """Samples the process RSS every 5 ms and keeps the highest value."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_bytes()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(RSS_INTERVAL_S):
            self.peak = max(self.peak, _rss_bytes())

    def finish(self) -> int:
        self._done.set()
        self.join()
        self.peak = max(self.peak, _rss_bytes())
        return self.peak


class Probe:
    """One measured render: UNet calls and samples (a forward pre-hook, so it sees diffusers'
    pipeline and ours alike), the time of the first UNet call, and the peak memory the render
    adds (CUDA: allocated bytes over those after the model was loaded; CPU: sampled RSS over
    the RSS just before the render; the peak is the larger of 5 ms samples and the kernel's
    VmHWM mark, reset at the start where /proc/self/clear_refs allows)."""

    def __init__(self, unet, device, loaded_bytes: int) -> None:
        self.unet, self.device, self.loaded_bytes = unet, device, loaded_bytes
        self.calls = self.samples = 0
        self.first_call: float | None = None
        self.t0 = self.t_end = 0.0
        self.peak_added = 0
        self._base = 0
        self._sampler: _RssSampler | None = None
        self._hwm = False
        self._hook = None

    def now(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    def _pre_hook(self, _module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        if self.first_call is None:
            self.first_call = self.now()
        self.calls += 1
        self.samples += int(sample.shape[0])

    def __enter__(self) -> Self:
        import torch

        _release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = self.loaded_bytes
        else:
            self._hwm = _reset_rss_peak()
            self._base = _rss_bytes()
            self._sampler = _RssSampler()
            self._sampler.start()
        self._hook = self.unet.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        self.t0 = self.now()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.t_end = self.now()
        self._hook.remove()
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._sampler.finish()
            if self._hwm:  # the kernel's mark also catches spikes between two samples
                peak = max(peak, _rss_peak_bytes())
        self.peak_added = max(0, peak - self._base)


class StepClock:
    """Step end times of one render, and when to stop it: after `cap` steps when given, else
    (auto) after the first steps when the first one says the whole run would pass the limit."""

    def __init__(self, probe: Probe, total: int, cap: int | None, limit_s: float) -> None:
        self.probe, self.total, self.limit_s = probe, total, limit_s
        self.auto = cap is None
        self.cap = cap if cap is not None and cap < total else None
        self.ends: list[float] = []

    def step_done(self) -> None:
        self.ends.append(self.probe.now())
        if self.auto and len(self.ends) == 1 and self.total > 1:
            first = self.probe.first_call if self.probe.first_call is not None else self.probe.t0
            setup, step = first - self.probe.t0, self.ends[0] - first
            if setup + step * self.total > self.limit_s:
                fits = int((self.limit_s - setup) // step) if step > 0 else DEFAULT_CAP
                self.cap = max(1, min(DEFAULT_CAP, fits))

    @property
    def stop(self) -> bool:
        return self.cap is not None and len(self.ends) >= self.cap


@dataclass
class Row:
    """One benchmarked render; `wall_s`, `unet_calls` and `unet_samples` are scaled to all the
    steps when `scaled` (the run was timed over `ran_steps` of `steps`)."""

    key: str
    job: str
    width: int
    height: int
    steps: int
    ran_steps: int
    scaled: bool
    wall_s: float
    measured_s: float
    setup_s: float
    step_s: float
    decode_s: float
    unet_calls: int
    unet_samples: int
    peak_added_mb: float
    image: Any = field(default=None, repr=False)

    @property
    def scaled_note(self) -> str:
        return f"scaled from {self.ran_steps} of {self.steps} steps" if self.scaled else "measured"

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "image"}
        return data | {"note": self.scaled_note}


def _row(
    key: str, job: str, size: tuple[int, int], probe: Probe, clock: StepClock, decode_s: float
) -> Row:
    """The figures of a probed render; decode_s is the time after the last step (the decode,
    timed inside the run or separately when the run was stopped early)."""
    height, width = size
    ran = len(clock.ends)
    first = probe.first_call if probe.first_call is not None else probe.t0
    setup = first - probe.t0
    step = (clock.ends[-1] - first) / ran if ran else 0.0
    scaled = ran < clock.total
    measured = probe.t_end - probe.t0
    factor = clock.total / ran if scaled else 1.0
    return Row(
        key=key,
        job=job,
        width=width,
        height=height,
        steps=clock.total,
        ran_steps=ran,
        scaled=scaled,
        wall_s=setup + step * clock.total + decode_s if scaled else measured,
        measured_s=measured,
        setup_s=setup,
        step_s=step,
        decode_s=decode_s,
        unet_calls=round(probe.calls * factor),
        unet_samples=round(probe.samples * factor),
        peak_added_mb=probe.peak_added / 2**20,
    )


# --- the renders -----------------------------------------------------------------------------


class Bench:
    """The loaded model, the panorama pipeline on its modules, and how to run each job."""

    def __init__(self, args: argparse.Namespace, model=None, models=None) -> None:
        """Loads `args.model` from the models file, or takes a loaded `model` (bench/gpu.py's
        random full-size ones) with the `models` that specs are validated against."""
        import torch

        from schemas import Settings, ValidationContext, load_models
        from worker.render import load_model
        from worker.render.loading import pick_device
        from worker.render.runtime import configure_torch, quiet_libraries

        quiet_libraries()
        self.settings = Settings()
        configure_torch(args.threads or self.settings.torch_threads)
        self.models = models if models is not None else load_models(self.settings.models_file)
        name = model.name if model is not None else args.model
        if name not in self.models:
            raise SystemExit(f"bench: no model {name!r} in the models file")
        self.ctx = ValidationContext.from_settings(
            self.settings, self.models, resolve_webhook_hosts=False
        )
        if model is None:
            device = pick_device(args.device)
            model = load_model(
                self.models[name], device=device, cache_dir=self.settings.model_cache
            )
        self.model, self.device = model, model.device
        _sync(self.device)
        self.loaded_bytes = (
            torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0
        )
        self._panorama = None
        self.args = args

    @property
    def panorama(self):
        """diffusers' StableDiffusionPanoramaPipeline on the very modules of our loaded model
        (its UNet has the LCM-LoRA fused), with a DDIM scheduler of the model's config."""
        from worker.render.baseline import diffusers_panorama_pipeline

        if self._panorama is None:
            self._panorama = diffusers_panorama_pipeline(self.model)
        return self._panorama

    def _probe(self) -> Probe:
        return Probe(self.model.pipe.unet, self.device, self.loaded_bytes)

    def diffusers_panorama(self, size: tuple[int, int], steps: int, cap: int | None) -> Row:
        """(a): the panorama pipeline at its defaults (DDIM, guidance 7.5, view batch 1). A
        capped run is interrupted after `cap` steps through diffusers' `_interrupt` (the loop
        skips the remaining steps) and still decodes its latent: the time after the last step
        is that decode."""
        import torch

        height, width = size
        pipe = self.panorama
        with self._probe() as probe:
            clock = StepClock(probe, steps, cap, self.args.full_run_limit)

            def on_step_end(p, _i, _t, kwargs: dict) -> dict:
                clock.step_done()
                if clock.stop:
                    p._interrupt = True
                return kwargs

            image = pipe(
                prompt=PROMPT,
                height=height,
                width=width,
                num_inference_steps=steps,
                generator=torch.Generator("cpu").manual_seed(SEED),
                callback_on_step_end=on_step_end,
            ).images[0]
        decode = probe.t_end - clock.ends[-1]
        row = _row("a", "diffusers panorama pipeline", size, probe, clock, decode)
        row.image = None if row.scaled else image
        return row

    def spec(self, data: dict[str, Any]):
        from schemas import normalize_spec, parse_spec

        data = {**data, "model": self.model.name}
        spec, _ = normalize_spec(parse_spec(data, self.ctx), self.ctx)
        return spec

    def ours(self, key: str, job: str, data: dict[str, Any], cap: int | None) -> Row:
        """Our engine on a spec; a capped run is stopped through `should_cancel` after `cap`
        steps, then one decode of a latent of the canvas' size is timed the way the render
        would have decoded it (the full VAE for `multidiffusion`, else the tiny VAE when the
        model has one, tiled above the engine's threshold)."""
        from worker.render import RenderCanceled, load_inputs, render_job

        spec = self.spec(data)
        inputs = load_inputs(spec, max_pixels=self.settings.max_pixels)
        size = (spec.height, spec.width)
        image = None
        with self._probe() as probe:
            clock = StepClock(probe, spec.steps, cap, self.args.full_run_limit)
            try:
                result = render_job(
                    self.model,
                    spec,
                    inputs,
                    on_step=lambda _i, _total: clock.step_done(),
                    should_cancel=lambda: clock.stop,
                    view_batch=self.settings.view_batch,
                )
                image = result.image
                decode = probe.now() - clock.ends[-1]
            except RenderCanceled:
                decode = self._decode_once(spec)
        compiled = self.model.compiled_unet is not None
        if (
            image is not None
            and not compiled
            and (result.unet_calls, result.unet_samples)
            != (
                probe.calls,
                probe.samples,
            )
        ):
            raise RuntimeError(
                f"{job}: the engine counted {result.unet_calls} calls / {result.unet_samples} "
                f"samples, the hook {probe.calls} / {probe.samples}"
            )
        # The hook counts what the UNet evaluates: under a compiled UNet (worker.render.compiled)
        # that includes the rows that pad each call to its fixed batch, which the engine's own
        # count (the region-view pairs it asked for) leaves out.
        row = _row(key, job, size, probe, clock, decode)
        row.image = image
        return row

    def _decode_once(self, spec) -> float:
        """Seconds for one decode of a random latent of the canvas' size into an image."""
        import torch

        from worker.render import vae as vae_ops
        from worker.render.defaults import LATENT_SCALE
        from worker.render.result import to_image

        pipe = self.model.pipe
        shape = (1, pipe.unet.config.in_channels)
        shape += (spec.height // LATENT_SCALE, spec.width // LATENT_SCALE)
        latent = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(SEED))
        latent = latent.to(self.device, self.model.dtype)
        started = time.perf_counter()
        if spec.method == "multidiffusion":
            pixels = vae_ops.decode(pipe.vae, latent).cpu()
        else:
            decoder = self.model.tiny_vae or pipe.vae
            pixels = vae_ops.decode_any(decoder, latent, scaling_vae=pipe.vae).cpu()
        to_image(pixels)
        return time.perf_counter() - started

    def warm_up(self) -> None:
        """Small renders of every path, not counted (first calls allocate and pick kernels)."""
        import torch

        side = self.model.native_size
        self.panorama(
            prompt=PROMPT,
            height=side,
            width=side,
            num_inference_steps=1,
            generator=torch.Generator("cpu").manual_seed(SEED),
        )
        for method, steps in (("multidiffusion", 1), ("streammultidiffusion", None)):
            spec = self.spec(panorama_spec(side, side, method=method, steps=steps))
            from worker.render import load_inputs, render_job

            render_job(self.model, spec, load_inputs(spec, max_pixels=self.settings.max_pixels))


def panorama_spec(
    width: int, height: int, *, method: str = "streammultidiffusion", steps: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "panorama",
        "method": method,
        "width": width,
        "height": height,
        "seed": SEED,
        "background": {"prompt": PROMPT},
    }
    if steps is not None:
        data["steps"] = steps
    return data


def landscape_spec(scale: int, *, baseline_steps: int | None) -> dict[str, Any]:
    """examples/landscape.json, its canvas and masks shrunk by `scale` (1: as it is); with
    `baseline_steps` set, in method `multidiffusion` with the baseline's own defaults (the
    example's LCM steps, guidance and bootstrapping dropped; steps set when not 50)."""
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    if scale > 1:
        from schemas import encode_png_data_uri
        from schemas.images import decode_mask

        width, height = data["width"], data["height"]
        data["width"], data["height"] = width // scale, height // scale
        for k, region in enumerate(data["regions"]):
            mask = decode_mask(
                region["mask"],
                width=width,
                height=height,
                max_pixels=width * height,
                loc=["regions", k, "mask"],
            )
            small = Image.fromarray(mask).resize((width // scale, height // scale), Image.NEAREST)
            region["mask"] = encode_png_data_uri(np.asarray(small))
    if baseline_steps is not None:
        data["method"] = "multidiffusion"
        for name in ("steps", "guidance_scale", "bootstrap_steps"):
            data.pop(name, None)
        if baseline_steps != BASELINE_STEPS:
            data["steps"] = baseline_steps
    return data


# --- report ----------------------------------------------------------------------------------


def machine_facts(device, loadavg_start: list[float]) -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": name,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": loadavg_start,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
    }


HEADER = ("", "job", "wall s", "s/step", "scaled?", "UNet calls", "UNet samples", "+mem MB")


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n== {title}")
    lines = [HEADER]
    for r in rows:
        lines.append(
            (
                r.key,
                r.job,
                f"{r.wall_s:.2f}",
                f"{r.step_s:.3f}",
                r.scaled_note,
                str(r.unet_calls),
                str(r.unet_samples),
                f"{r.peak_added_mb:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    right = {2, 3, 5, 6, 7}
    for line in lines:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))
        ]
        print("  ".join(cells).rstrip())
    if any(r.scaled for r in rows):
        print(
            "   scaled rows: wall = setup (to the first UNet call) + mean step x all steps + one "
            "decode of a latent of that size; calls and samples = counted per step x all steps"
        )


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.inf


def goal_lines(goals: dict[str, dict[str, Any]]) -> list[str]:
    return [
        f"  {'PASS' if g['pass'] else 'FAIL'}  {g['goal']}: {g['value']:.3g}"
        for g in goals.values()
    ]


# --- plot ------------------------------------------------------------------------------------


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 covering `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * k for k in range(math.ceil(top / step - 1e-9) + 1)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.3g}"


def plot_pillow(path: Path, title: str, xs: list[int], panels: list[tuple[str, list[float]]]):
    """A line chart per panel (points joined, axes from 0, ticks and labels) with Pillow."""
    pw, ph = 520, 430
    left, right, top, bottom = 78, 24, 56, 62
    image = Image.new("RGB", (pw * len(panels), ph), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    draw.text((12, 8), title, fill="black", font=font)
    x_top = max(xs) * 1.05
    for k, (label, ys) in enumerate(panels):
        x0, x1 = k * pw + left, (k + 1) * pw - right
        y0, y1 = ph - bottom, top
        yticks = _nice_ticks(max(ys) * 1.1)
        y_top = yticks[-1]

        def px(x: float, x0=x0, x1=x1) -> float:
            return x0 + (x1 - x0) * x / x_top

        def py(y: float, y0=y0, y1=y1, y_top=y_top) -> float:
            return y0 - (y0 - y1) * y / y_top

        for t in yticks:
            y = py(t)
            draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
            draw.line([(x0 - 5, y), (x0, y)], fill="black")
            text = _fmt(t)
            tw = draw.textlength(text, font=small)
            draw.text((x0 - 8 - tw, y - 7), text, fill="black", font=small)
        for x in xs:
            draw.line([(px(x), y0), (px(x), y0 + 5)], fill="black")
            text = str(x)
            tw = draw.textlength(text, font=small)
            draw.text((px(x) - tw / 2, y0 + 8), text, fill="black", font=small)
        draw.line([(x0, y0), (x1, y0)], fill="black", width=2)
        draw.line([(x0, y0), (x0, y1)], fill="black", width=2)
        draw.text((x0, y1 - 24), label, fill="black", font=font)
        xlabel = "canvas width (px)"
        tw = draw.textlength(xlabel, font=small)
        draw.text(((x0 + x1) / 2 - tw / 2, y0 + 28), xlabel, fill="black", font=small)
        points = [(px(x), py(y)) for x, y in zip(xs, ys)]
        draw.line(points, fill=(31, 119, 180), width=3)
        for (x, y), value in zip(points, ys):
            draw.ellipse([(x - 5, y - 5), (x + 5, y + 5)], fill=(31, 119, 180))
            box = draw.textbbox((x + 8, y - 20), _fmt(value), font=small)
            draw.rectangle(box, fill="white")
            draw.text((x + 8, y - 20), _fmt(value), fill=(31, 119, 180), font=small)
    image.save(path)


def plot(path: Path, title: str, xs: list[int], panels: list[tuple[str, list[float]]]) -> str:
    """Writes the chart with matplotlib when it is installed, else with Pillow; says which."""
    try:
        import matplotlib
    except ImportError:
        plot_pillow(path, title, xs, panels)
        return "Pillow"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.3))
    for ax, (label, ys) in zip(axes, panels):
        ax.plot(xs, ys, "o-")
        ax.set_title(label)
        ax.set_xlabel("canvas width (px)")
        ax.set_xticks(xs)
        ax.set_xlim(0, max(xs) * 1.05)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "matplotlib"


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny-random", help="models-file entry (tiny-random)")
    parser.add_argument("--device", help="cpu or cuda[:N] (default: CUDA when present)")
    parser.add_argument(
        "--max-baseline-steps",
        type=int,
        metavar="N",
        help="time the baselines over their first N steps and scale to all (default: run "
        f"them fully unless the first step says the run would pass --full-run-limit, then "
        f"time the first {DEFAULT_CAP})",
    )
    parser.add_argument(
        "--full-run-limit",
        type=float,
        default=FULL_RUN_LIMIT_S,
        metavar="S",
        help="seconds a run may be estimated at and still run fully (default 600)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the settings')")
    parser.add_argument("--out", type=Path, default=Path("out/bench"), help="plot and JSON dir")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="small canvases and 5-step baselines (tests)"
    )
    args = parser.parse_args(argv)
    if args.max_baseline_steps is not None and args.max_baseline_steps < 1:
        parser.error("--max-baseline-steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = QUICK if args.quick else FULL
    cap = args.max_baseline_steps
    base_steps = sizes["baseline_steps"]
    started, loadavg_start = time.perf_counter(), list(os.getloadavg())

    bench = Bench(args)
    facts = machine_facts(bench.device, loadavg_start)
    v = facts["versions"]
    print(
        f"regionfarm render benchmark{' (--quick: small sizes)' if args.quick else ''}: model "
        f"{args.model}, device {facts['device']} ({facts['device_name']})"
    )
    print(
        f"machine: {facts['cpu_count']} CPUs ({facts['cpus_usable']} usable), torch threads "
        f"{facts['torch_threads']}, load average at start "
        f"{'/'.join(f'{x:.2f}' for x in facts['loadavg_start'])}; torch {v['torch']}, "
        f"diffusers {v['diffusers']}, transformers {v['transformers']}, Python {facts['python']}"
    )
    busy = loadavg_start[0] > 0.5 * facts["cpus_usable"]
    if busy and bench.device.type == "cpu":
        print(
            f"note: the machine is busy (load average {loadavg_start[0]:.2f} on "
            f"{facts['cpus_usable']} CPUs): timings are noisy, and several torch threads on busy "
            "cores can be many times slower than one (--threads 1)"
        )
    mem_kind = (
        "CUDA max_memory_allocated minus the allocated memory after load"
        if bench.device.type == "cuda"
        else "process RSS, peak (5 ms samples and the kernel's VmHWM) minus the RSS just before "
        "the render (after gc and malloc_trim); includes allocator caching"
    )
    print(f"memory (+mem MB): {mem_kind}")
    print(f"model loaded in {bench.model.load_seconds:.1f} s; warm-up renders, not counted")
    bench.warm_up()

    # 1. One panorama, three ways.
    ph, pw = sizes["panorama"]
    a = bench.diffusers_panorama((ph, pw), base_steps, cap)
    md_steps = None if base_steps == BASELINE_STEPS else base_steps
    b = bench.ours(
        "b",
        "ours, method multidiffusion",
        panorama_spec(pw, ph, method="multidiffusion", steps=md_steps),
        cap,
    )
    c = bench.ours("c", "ours, defaults (StreamMultiDiffusion)", panorama_spec(pw, ph), None)
    a.job += f" (DDIM {a.steps}, guidance 7.5, view batch 1)"
    b.job += f" (DDIM {b.steps}, 7.5, window 64 / stride 8)"
    c.job += f" ({c.steps} LCM steps)"
    print_table(f'1. panorama {ph}x{pw}, "{PROMPT}", seed {SEED}', [a, b, c])
    ratios = {"b/a": _ratio(b.wall_s, a.wall_s), "c/a": _ratio(c.wall_s, a.wall_s)}
    same = None
    if a.image is not None and b.image is not None:
        diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
        same = int(diff.max())
    print(
        f"ratios (wall time): b/a = {ratios['b/a']:.3f}, c/a = {ratios['c/a']:.4f}; UNet "
        f"samples c/a = {_ratio(c.unet_samples, a.unet_samples):.4f}"
    )
    if same is not None:
        print(f"b reproduces a: largest pixel difference {same}/255")

    # 2. The nine-region example.
    scale = sizes["region_scale"]
    md = bench.ours(
        "md", "ours, method multidiffusion", landscape_spec(scale, baseline_steps=base_steps), cap
    )
    smd = bench.ours(
        "smd",
        "ours, defaults (the example's spec)",
        landscape_spec(scale, baseline_steps=None),
        None,
    )
    md.job += f" (DDIM {md.steps}, 7.5)"
    smd.job += f" ({smd.steps} LCM steps)"
    shrunk = f", masks shrunk 1/{scale}" if scale > 1 else ""
    print_table(
        f"2. nine-region example {md.height}x{md.width} (examples/landscape.json{shrunk})",
        [md, smd],
    )
    ratios["regions md/default"] = _ratio(md.wall_s, smd.wall_s)
    print(f"speed-up of the defaults: {ratios['regions md/default']:.1f}x")

    # 3. Our defaults against the canvas width.
    wh = sizes["widths_height"]
    series = [
        bench.ours(str(k + 1), f"ours, defaults, {wh}x{w}", panorama_spec(w, wh), None)
        for k, w in enumerate(sizes["widths"])
    ]
    print_table(f"3. panoramas at our defaults, height {wh}", series)
    first, last = series[0], series[-1]
    ratios["memory last/first"] = _ratio(last.peak_added_mb, first.peak_added_mb)
    print(
        f"added memory {wh}x{last.width} / {wh}x{first.width} = {ratios['memory last/first']:.2f}"
        f"; time {_ratio(last.wall_s, first.wall_s):.2f}"
    )

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    png = out / "render_scaling.png"
    drawn_with = plot(
        png,
        f"regionfarm defaults ({args.model}, {facts['device']}), panoramas {wh} px high",
        [r.width for r in series],
        [
            ("wall time (s)", [r.wall_s for r in series]),
            ("peak added memory (MB)", [r.peak_added_mb for r in series]),
        ],
    )
    print(f"\nplot: {png} ({drawn_with})")

    goals = {
        "b_over_a": {"goal": "b/a <= 1.0", "value": ratios["b/a"], "pass": ratios["b/a"] <= 1.0},
        "c_over_a": {"goal": "c/a <= 0.05", "value": ratios["c/a"], "pass": ratios["c/a"] <= 0.05},
        "regions_speedup": {
            "goal": "nine-region defaults >= 20x faster than multidiffusion",
            "value": ratios["regions md/default"],
            "pass": ratios["regions md/default"] >= 20,
        },
        "memory_scaling": {
            "goal": f"added memory {wh}x{last.width} <= 2.5 x {wh}x{first.width}",
            "value": ratios["memory last/first"],
            "pass": ratios["memory last/first"] <= 2.5,
        },
    }
    print(
        "\n== goals"
        + (" (quick sizes: the goals are stated for the full ones)" if args.quick else "")
    )
    print("\n".join(goal_lines(goals)))
    facts["loadavg_end"] = list(os.getloadavg())
    total = time.perf_counter() - started
    print(
        f"\nbenchmark took {total:.0f} s; load average at the end "
        f"{'/'.join(f'{x:.2f}' for x in facts['loadavg_end'])}"
    )

    report = {
        "machine": facts,
        "config": {
            "model": args.model,
            "quick": args.quick,
            "max_baseline_steps": cap,
            "full_run_limit_s": args.full_run_limit,
            "memory": mem_kind,
            "prompt": PROMPT,
            "seed": SEED,
        },
        "panorama": [r.as_json() for r in (a, b, c)],
        "regions": [r.as_json() for r in (md, smd)],
        "widths": [r.as_json() for r in series],
        "ratios": ratios,
        "b_reproduces_a_max_diff": same,
        "goals": goals,
        "plot": str(png),
        "seconds": total,
    }
    text = json.dumps(report, indent=2) + "\n"
    (out / "render_bench.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    print(f"json: {out / 'render_bench.json'}" + (f" and {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
