"""Fidelity benchmark: fixed layouts rendered with the toy models, measured against the toy world.

    .venv/bin/python bench/fidelity.py                 # toy and toy-xl, every layout and row
    .venv/bin/python bench/fidelity.py --quick         # CI: small canvases, three rows, toy only
    .venv/bin/python bench/fidelity.py --models toy --out out/bench/fidelity

Each layout is rendered in-process through the engine (`worker.render.render_job`) in several
variants of its spec ("rows"), and each picture is measured with `toy/measure.py`: region
adherence (min and mean over the regions, and the background), leakage of region colors into
the background, placement of an object prompted in a small region, seams at the tile borders
of the engine's view layout (panoramas) and between the ends of a 360-degree panorama. Writes
a table to stdout, `fidelity.json`, `fidelity.png` (a picture grid) and every picture under
`images/` in the out dir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/fidelity.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

from toy import measure, world

SEED = 7
MARGIN = measure.DEFAULT_MARGIN
FULL_MODELS = ("toy",)
QUICK_MODELS = ("toy",)
BASELINE_BUDGET_CPU = 6_000
"""UNet samples (estimated from the baseline's own view layout) above which the DDIM baseline
row is skipped on the CPU, with a note; `--baseline-budget` changes it (0: never skip)."""


# --- layouts ---------------------------------------------------------------------------------


@dataclass
class Layout:
    """A canvas and its prompts: `regions` are (prompt, mask) pairs; kind `panorama` has none
    (its one prompt is the background's). `object_color`: placement is measured for it."""

    name: str
    kind: str
    width: int
    height: int
    background: str
    regions: list[tuple[str, np.ndarray]] = field(default_factory=list)
    wrap: bool = False
    object_color: str | None = None

    def spec(self) -> dict[str, Any]:
        from schemas import encode_png_data_uri

        data: dict[str, Any] = {
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "seed": SEED,
            "background": {"prompt": self.background},
        }
        if self.regions:
            data["regions"] = [
                {"prompt": prompt, "mask": encode_png_data_uri(mask)}
                for prompt, mask in self.regions
            ]
        if self.wrap:
            data["wrap"] = "horizontal"
        return data


def _draw(width: int, height: int, paint) -> np.ndarray:
    """Where one ImageDraw call paints on a (height, width) canvas, as booleans."""
    img = Image.new("L", (width, height), 0)
    paint(ImageDraw.Draw(img))
    return np.asarray(img) > 127


def halves(height: int, width: int) -> Layout:
    """Left half "red", right half "blue", inside a frame (an eighth of the short side) that
    the background prompt "a gray background" fills."""
    frame = min(height, width) // 8
    left = np.zeros((height, width), dtype=bool)
    right = np.zeros_like(left)
    left[frame : height - frame, frame : width // 2] = True
    right[frame : height - frame, width // 2 : width - frame] = True
    return Layout(
        f"halves {height}x{width}",
        "regions",
        width,
        height,
        "a gray background",
        [("red", left), ("blue", right)],
    )


NINE = [
    # (prompt, shape, points in shares of width and height), in paint order: later ones win.
    (
        "brown",
        "polygon",
        [
            (0, 0.56),
            (0.07, 0.43),
            (0.16, 0.52),
            (0.24, 0.34),
            (0.33, 0.48),
            (0.41, 0.37),
            (0.5, 0.29),
            (0.58, 0.38),
            (0.67, 0.33),
            (0.76, 0.48),
            (0.84, 0.38),
            (0.93, 0.46),
            (1, 0.41),
            (1, 0.78),
            (0, 0.78),
        ],
    ),
    ("yellow", "ellipse", [(0.245, 0.176), (0.042, 0.104)]),
    ("white", "ellipse", [(0.76, 0.15), (0.03, 0.076)]),
    ("gray", "polygon", [(0.378, 0.45), (0.409, 0.45), (0.422, 0.79), (0.365, 0.79)]),
    ("pink", "polygon", [(0.591, 0.40), (0.622, 0.40), (0.635, 0.79), (0.578, 0.79)]),
    (
        "orange",
        "polygon",
        [
            (0, 0.75),
            (0.125, 0.72),
            (0.27, 0.76),
            (0.5, 0.74),
            (0.73, 0.76),
            (0.875, 0.72),
            (1, 0.75),
            (1, 1),
            (0, 1),
        ],
    ),
    ("purple", "ellipse", [(0.5, 0.88), (0.224, 0.163)]),
    ("green", "ellipse", [(0.1, 0.38), (0.089, 0.228)]),
    ("red", "ellipse", [(0.9, 0.38), (0.089, 0.228)]),
]
"""The nine regions, a landscape like examples/landscape.json (mountains, sun, moon, two
waterfalls, meadow, lake, two trees) with nine distinct colors on "a blue background"."""


def nine_regions(height: int, width: int) -> Layout:
    """The nine regions of NINE drawn on the canvas, made disjoint (a later shape takes its
    pixels from the earlier ones), so every pixel has one prompt to be measured against."""
    shapes = []
    for prompt, shape, points in NINE:
        xy = [(x * (width - 1), y * (height - 1)) for x, y in points]
        if shape == "ellipse":
            (cx, cy), (rx, ry) = xy[0], (points[1][0] * width, points[1][1] * height)
            box = (cx - rx, cy - ry, cx + rx, cy + ry)
            shapes.append((prompt, _draw(width, height, lambda d, b=box: d.ellipse(b, fill=255))))
        else:
            shapes.append((prompt, _draw(width, height, lambda d, p=xy: d.polygon(p, fill=255))))
    taken = np.zeros((height, width), dtype=bool)
    regions = []
    for prompt, mask in reversed(shapes):
        regions.append((prompt, mask & ~taken))
        taken |= mask
    regions.reverse()
    return Layout(
        f"nine regions {height}x{width}", "regions", width, height, "a blue background", regions
    )


def small_region(side: int, share: float) -> Layout:
    """One square region covering `share` of a side x side canvas, off centre, prompted with
    an object; placement is measured for the object's color."""
    edge = round(side * share**0.5)
    cx, cy = round(side * 0.36), round(side * 0.42)
    mask = np.zeros((side, side), dtype=bool)
    mask[cy - edge // 2 : cy - edge // 2 + edge, cx - edge // 2 : cx - edge // 2 + edge] = True
    return Layout(
        f"small region {share:.0%} {side}x{side}",
        "regions",
        side,
        side,
        "a blue background",
        [("a red circle on a white background", mask)],
        object_color="red",
    )


def panorama(height: int, width: int, wrap: bool) -> Layout:
    """One plain color over a wide canvas: a flat picture, so any jump at a tile border (or
    between the two ends, with wrap) stands out against the picture's own texture."""
    name = f"panorama {height}x{width}" + (" wrap" if wrap else "")
    return Layout(name, "panorama", width, height, "a green background", wrap=wrap)


def layouts(quick: bool) -> list[Layout]:
    if quick:
        return [
            halves(256, 512),
            nine_regions(512, 768),
            small_region(256, 0.10),
            panorama(256, 1024, wrap=False),
            panorama(256, 1024, wrap=True),
        ]
    return [
        halves(512, 512),
        nine_regions(768, 1920),
        small_region(512, 0.02),
        small_region(512, 0.05),
        small_region(512, 0.10),
        panorama(256, 2048, wrap=False),
        panorama(256, 2048, wrap=True),
    ]


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A variant of a layout's spec: top-level fields, fields set on every region, and the
    engine's benchmark-only `average_noisy_latents`. `regions_only`: it changes nothing on a
    panorama (no masks, no bootstrapping there), which is then not rendered again."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    region_fields: dict[str, Any] = field(default_factory=dict)
    average_noisy_latents: bool = False
    regions_only: bool = False


BASELINE = "multidiffusion"
FAILURE = "failure case"
ROWS = [
    Row("defaults"),
    Row("bootstrap_steps 0", {"bootstrap_steps": 0}, regions_only=True),
    Row("mask_mode discrete", {"mask_mode": "discrete"}, regions_only=True),
    Row("mask_mode semi-continuous", {"mask_mode": "semi-continuous"}, regions_only=True),
    Row("mask_mode continuous", {"mask_mode": "continuous"}, regions_only=True),
    Row("mask_std 0", region_fields={"mask_std": 0.0}, regions_only=True),
    Row("mask_std 8", region_fields={"mask_std": 8.0}, regions_only=True),
    Row(BASELINE, {"method": "multidiffusion"}),
    Row(
        FAILURE,
        {"bootstrap_steps": 0, "mask_mode": "continuous"},
        {"mask_std": 0.0},
        average_noisy_latents=True,
    ),
]
QUICK_ROWS = ("defaults", "bootstrap_steps 0", FAILURE)

NOTES = [
    (
        f"{FAILURE}: MultiDiffusion's plain averaging on the 5-step schedule with none of "
        "StreamMultiDiffusion's fixes: bootstrap_steps 0, mask_mode continuous, mask_std 0, "
        "and noisy latents averaged (each region-view pair noised with noise of its own) "
        "instead of the predicted clean ones (render_job(average_noisy_latents=True))."
    ),
    (
        f"{BASELINE}: the DDIM baseline (50 steps, guidance 7.5, constant-colour "
        "bootstrapping over 10 steps) with its window at the model's native size (tile.size) "
        "and its own 64 px stride; sd15 models only."
    ),
    (
        "panoramas: one plain color, adherence = share of that color; seam = mean jump across "
        "the view layout's tile borders / mean jump between other neighbouring columns "
        "(about 1: no seam); wrap rows: the jump between the last and the first column instead."
    ),
    (
        f"adherence, background and leakage count pixels at least {MARGIN} px from a mask "
        "edge; a pixel's color is its nearest toy-world anchor."
    ),
]


def _row_spec(layout: Layout, row: Row, native: int) -> dict[str, Any]:
    data = layout.spec() | row.fields
    if row.name == BASELINE:
        data["tile"] = {"size": native}
    for region in data.get("regions", []):
        region.update(row.region_fields)
    return data


# --- measuring -------------------------------------------------------------------------------


def _borders(spec, model, width: int, height: int) -> list[int]:
    """Pixel columns where a view of the engine's layout for this spec starts or ends (the
    places a tile seam would show), inside the canvas."""
    from worker.render.defaults import LATENT_SCALE

    h, w = height // LATENT_SCALE, width // LATENT_SCALE
    wrap = spec.wrap == "horizontal"
    if spec.method == "multidiffusion":
        from worker.render.baseline import baseline_views, baseline_window

        window, stride = baseline_window(spec)
        edges = [
            (v.left, v.left + len(v.columns) if v.columns is not None else v.right)
            for v in baseline_views(h, w, window, stride, wrap=wrap)
        ]
    else:
        from worker.render.smd import smd_window
        from worker.render.tiles import tile_views

        window, stride = smd_window(spec, model)
        edges = [(v.left, v.right) for v in tile_views(h, w, window, stride, wrap=wrap)[0]]
    columns = {(edge % w) * LATENT_SCALE for pair in edges for edge in pair}
    return sorted(c for c in columns if 0 < c < width)


def baseline_samples(spec) -> int:
    """UNet samples the DDIM baseline takes for a normalized spec: views x steps x prompts,
    twice with guidance (as worker/render/baseline.py counts them)."""
    from worker.render.baseline import baseline_views, baseline_window
    from worker.render.defaults import LATENT_SCALE

    window, stride = baseline_window(spec)
    h, w = spec.height // LATENT_SCALE, spec.width // LATENT_SCALE
    views = baseline_views(h, w, window, stride, wrap=spec.wrap == "horizontal")
    prompts = len(spec.regions) + (1 if spec.kind == "regions" and spec.background else 0)
    prompts = max(prompts, 1)
    return len(views) * spec.steps * prompts * (2 if spec.guidance_scale > 1 else 1)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def measure_image(layout: Layout, image: np.ndarray, masks, borders: list[int]) -> dict:
    """Every metric that applies to the layout, as JSON-ready numbers (None: not applicable)."""
    out: dict[str, Any] = {}
    if layout.kind == "panorama":
        full = np.ones(image.shape[:2], dtype=bool)
        share = measure.region_adherence(image, [full], [layout.background], None, MARGIN)[0]
        out |= {"adherence": [share], "adherence_min": share, "adherence_mean": share}
        out |= {"background": None, "leakage": None}
        if layout.wrap:
            out["seam_ratio"] = measure.wrap_seam_ratio(image)
        else:
            out["seam_ratio"] = measure.seam_ratio(image, borders, axis=1)
        out["seam_borders"] = borders
    else:
        prompts = [prompt for prompt, _ in layout.regions]
        shares = measure.region_adherence(image, masks, prompts, layout.background, MARGIN)
        regions = [s for s in shares[:-1] if s is not None]
        out |= {
            "adherence": shares[:-1],
            "adherence_min": min(regions) if regions else None,
            "adherence_mean": _mean(regions),
            "background": shares[-1],
            "leakage": measure.leakage(image, masks, prompts, layout.background, MARGIN),
        }
    if layout.object_color is not None:
        inside, distance = measure.placement(image, masks[0], layout.object_color)
        out |= {"placement_inside": inside, "placement_px": distance}
    return out


# --- running ---------------------------------------------------------------------------------


class Runner:
    """Loads the models one at a time and renders the layouts' rows through the engine."""

    def __init__(self, args: argparse.Namespace) -> None:
        from schemas import Settings, ValidationContext, load_models
        from worker.render.runtime import configure_torch, quiet_libraries

        quiet_libraries()
        self.settings = Settings()
        configure_torch(args.threads or self.settings.torch_threads)
        self.models = load_models(self.settings.models_file)
        self.ctx = ValidationContext.from_settings(
            self.settings, self.models, resolve_webhook_hosts=False
        )
        self.args = args

    def load(self, name: str):
        from worker.render import load_model
        from worker.render.loading import pick_device

        if name not in self.models:
            raise SystemExit(f"fidelity: no model {name!r} in the models file (--models)")
        return load_model(
            self.models[name],
            device=pick_device(self.args.device),
            cache_dir=self.settings.model_cache,
        )

    def spec(self, data: dict[str, Any], model):
        from schemas import normalize_spec, parse_spec

        spec, _ = normalize_spec(parse_spec(data | {"model": model.name}, self.ctx), self.ctx)
        return spec

    def render(self, model, spec, noisy: bool):
        from worker.render import load_inputs, render_job

        inputs = load_inputs(spec, max_pixels=self.settings.max_pixels)
        started = time.perf_counter()
        result = render_job(
            model,
            spec,
            inputs,
            view_batch=self.settings.view_batch,
            average_noisy_latents=noisy,
        )
        return result, inputs.masks, time.perf_counter() - started

    def warm_up(self, model) -> None:
        """One small render, not counted (first calls allocate and pick kernels)."""
        side = model.native_size
        spec = self.spec(halves(side, side).spec(), model)
        self.render(model, spec, noisy=False)


def run_model(runner: Runner, name: str, quick: bool, out: Path, progress) -> list[dict]:
    """Every layout and row of one model; returns the JSON rows (images saved under out)."""
    model = runner.load(name)
    print(
        f"{name}: loaded in {model.load_seconds:.1f} s ({model.family}, {model.device}); "
        "warm-up render, not counted",
        flush=True,
    )
    runner.warm_up(model)
    rows = [r for r in ROWS if not quick or r.name in QUICK_ROWS]
    budget = runner.args.baseline_budget
    if budget is None:
        budget = BASELINE_BUDGET_CPU if model.device.type == "cpu" else 0
    results = []
    for layout in layouts(quick):
        done: list[tuple[dict, bool, dict]] = []  # (spec dump, noisy flag, result row)
        for row in rows:
            entry = {
                "model": name,
                "layout": layout.name,
                "row": row.name,
                "width": layout.width,
                "height": layout.height,
            }
            note = _skip_note(layout, row, model, runner, budget)
            if note is None:
                spec = runner.spec(_row_spec(layout, row, model.native_size), model)
                dump = spec.model_dump()
                same = next(
                    (r for d, n, r in done if d == dump and n == row.average_noisy_latents), None
                )
                if same is not None:
                    entry |= {"status": "same spec as " + same["row"]}
                else:
                    entry |= _render_row(runner, model, layout, spec, row, out)
                    done.append((dump, row.average_noisy_latents, entry))
            else:
                entry |= {"status": note}
            results.append(entry)
            progress(entry)
    del model
    return results


def _skip_note(layout: Layout, row: Row, model, runner: Runner, budget: int) -> str | None:
    """Why a row is not rendered, or None."""
    if row.regions_only and layout.kind == "panorama":
        return "n/a: a panorama has no regions (masks, bootstrapping)"
    if row.name == BASELINE:
        if model.family != "sd15":
            return f"n/a: the multidiffusion baseline is sd15 only ({model.family})"
        samples = baseline_samples(runner.spec(_row_spec(layout, row, model.native_size), model))
        if budget and samples > budget:
            return f"skipped: about {samples} UNet samples, over --baseline-budget {budget}"
    return None


def _render_row(runner: Runner, model, layout: Layout, spec, row: Row, out: Path) -> dict:
    result, masks, seconds = runner.render(model, spec, row.average_noisy_latents)
    image = np.asarray(result.image.convert("RGB"))
    borders = (
        _borders(spec, model, layout.width, layout.height) if layout.kind == "panorama" else []
    )
    path = out / "images" / f"{_slug(model.name, layout.name, row.name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(path)
    entry = {
        "status": "rendered",
        "seconds": round(seconds, 3),
        "unet_calls": result.unet_calls,
        "unet_samples": result.unet_samples,
        "steps": spec.steps,
        "image": str(path),
    }
    if row.average_noisy_latents and model.family == "sdxl":
        entry["note"] = "Euler: averaging noisy latents equals averaging clean ones"
    return entry | measure_image(layout, image, masks, borders)


def _slug(*parts: str) -> str:
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


# --- report ----------------------------------------------------------------------------------

HEADER = (
    "model",
    "layout",
    "row",
    "adh min",
    "adh mean",
    "bg",
    "leak",
    "inside",
    "ctr px",
    "seam",
    "s",
    "UNet samples",
)


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not np.isfinite(value):
        return "inf"
    return f"{value:.{digits}f}"


def table_line(r: dict) -> tuple[str, ...]:
    if r["status"] != "rendered":
        return (r["model"], r["layout"], r["row"], r["status"])
    return (
        r["model"],
        r["layout"],
        r["row"],
        _f(r.get("adherence_min")),
        _f(r.get("adherence_mean")),
        _f(r.get("background")),
        _f(r.get("leakage")),
        _f(r.get("placement_inside")),
        _f(r.get("placement_px"), 1),
        _f(r.get("seam_ratio"), 2),
        _f(r["seconds"], 1),
        str(r["unet_samples"]),
    )


def print_table(rows: list[dict]) -> None:
    lines = [HEADER] + [table_line(r) for r in rows]
    full = [line for line in lines if len(line) == len(HEADER)]
    widths = [max(len(line[i]) for line in full) for i in range(len(HEADER))]
    for line in lines:
        if len(line) < len(HEADER):  # a row not rendered: its reason after the first columns
            head = [c.ljust(w) for c, w in zip(line[:3], widths)]
            print("  ".join(head + [line[3]]))
            continue
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip())


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def picture_grid(path: Path, rows: list[dict]) -> None:
    """One line per (model, layout), one cell per row: the picture fitted into the cell, its
    row name and its adherence (or why it was not rendered) under it."""
    cell_w, cell_h, text_h, label_w = 220, 150, 34, 230
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["layout"]), []).append(r)
    columns = max(len(g) for g in groups.values())
    grid = Image.new("RGB", (label_w + columns * cell_w, len(groups) * (cell_h + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(12)
    for y, ((model, layout), cells) in enumerate(groups.items()):
        top = y * (cell_h + text_h)
        draw.text((6, top + cell_h // 2 - 12), f"{model}\n{layout}", fill="black", font=font)
        for x, r in enumerate(cells):
            left = label_w + x * cell_w
            caption = r["row"]
            if r["status"] == "rendered":
                thumb = Image.open(r["image"]).convert("RGB")
                thumb.thumbnail((cell_w - 8, cell_h - 8))
                grid.paste(
                    thumb, (left + (cell_w - thumb.width) // 2, top + (cell_h - thumb.height) // 2)
                )
                caption += f"\nadherence {_f(r.get('adherence_mean'), 2)}"
            else:
                draw.rectangle(
                    (left + 4, top + 4, left + cell_w - 4, top + cell_h - 4),
                    outline=(190, 190, 190),
                )
                caption += "\n" + r["status"][:34]
            draw.text((left + 4, top + cell_h), caption, fill="black", font=font)
    grid.save(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small canvases, rows defaults / bootstrap_steps 0 / failure case, "
        "toy only (unless --models)",
    )
    parser.add_argument(
        "--models", help="comma-separated models-file entries (default toy; toy-xl once trained)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench/fidelity"),
        help="directory of fidelity.json, fidelity.png and images/",
    )
    parser.add_argument("--device", help="cpu or cuda[:N] (default: CUDA when present)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the settings')")
    parser.add_argument(
        "--baseline-budget",
        type=int,
        metavar="SAMPLES",
        help="skip the DDIM baseline row where it would take more UNet samples "
        f"(default {BASELINE_BUDGET_CPU} on the CPU, none on CUDA; 0: never)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = (
        args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else FULL_MODELS)
    )
    started = time.perf_counter()
    from worker.render import ModelUnavailable

    runner = Runner(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"regionfarm fidelity benchmark{' (--quick)' if args.quick else ''}: models "
        f"{', '.join(names)}, seed {SEED}",
        flush=True,
    )
    rows: list[dict] = []
    missing: dict[str, str] = {}
    count = [0]

    def progress(entry: dict) -> None:
        count[0] += 1
        line = f"[{count[0]}] {entry['model']} | {entry['layout']} | {entry['row']}: "
        if entry["status"] == "rendered":
            line += (
                f"{entry['seconds']:.1f} s, {entry['unet_samples']} UNet samples, "
                f"adherence min {_f(entry.get('adherence_min'))} mean "
                f"{_f(entry.get('adherence_mean'))}"
            )
        else:
            line += entry["status"]
        print(line, flush=True)

    for name in names:
        try:
            rows += run_model(runner, name.strip(), args.quick, out, progress)
        except ModelUnavailable as exc:
            missing[name] = str(exc)
            print(f"{name}: not available: {exc}", flush=True)
    print()
    print_table(rows)
    print()
    for note in NOTES:
        print(f"- {note}")
    png = out / "fidelity.png"
    if rows:
        picture_grid(png, rows)
    total = time.perf_counter() - started
    report = {
        "config": {
            "quick": args.quick,
            "models": names,
            "seed": SEED,
            "margin_px": MARGIN,
            "colors": dict(world.COLORS),
        },
        "rows": rows,
        "missing_models": missing,
        "notes": NOTES,
        "grid": str(png) if rows else None,
        "seconds": round(total, 1),
    }
    (out / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\ngrid: {png if rows else '(nothing rendered)'}; json: {out / 'fidelity.json'}; "
        f"took {total:.0f} s"
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
