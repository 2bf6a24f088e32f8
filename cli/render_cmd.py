"""`regionfarm render` (one job, locally, no queue) and `regionfarm models`."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from schemas import Settings, SpecError, ValidationContext, load_models, normalize_spec, parse_spec
from schemas.formats import SUFFIX_FORMATS

EXIT_ERROR, EXIT_BAD_INPUT = 1, 2


def add_parsers(sub) -> None:
    p = sub.add_parser("render", help="render one job spec locally, no queue")
    p.add_argument("spec", type=Path, metavar="SPEC.json", help="job spec (see examples/)")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="image to write; its suffix (.png, .webp, .jpg) sets the format",
    )
    p.add_argument("--model", help="model name from the models file (overrides the spec)")
    p.add_argument("--device", help="cpu or cuda:N (default: CUDA when present)")
    p.add_argument("--seed", type=int, help="seed (overrides the spec)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_render)

    m = sub.add_parser("models", help="the models this installation can serve")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(handler=run_models)


def fail(message: str, code: int) -> int:
    print(f"regionfarm: {message}", file=sys.stderr)
    return code


def read_spec_file(path: Path) -> dict:
    """The JSON object in `path`; raises SpecError (bad input) with a readable reason."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError([{"loc": [], "msg": f"{path}: no such file"}]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError([{"loc": [], "msg": f"{path}: not valid JSON ({exc})"}]) from None
    if not isinstance(data, dict):
        raise SpecError([{"loc": [], "msg": f"{path}: a job spec is a JSON object"}])
    return data


def load_spec(path: Path, ctx: ValidationContext, *, model=None, seed=None, out=None):
    """Read, override (--model, --seed, OUT's suffix), validate and normalize a spec file.
    Returns (spec, warnings); raises SpecError for bad input."""
    data = read_spec_file(path)
    if model:
        data["model"] = model
    if seed is not None:
        data["seed"] = seed
    suffix_format = SUFFIX_FORMATS.get(out.suffix.lower()) if out is not None else None
    if suffix_format:
        output = data.get("output") if isinstance(data.get("output"), dict) else {}
        data["output"] = {**output, "format": suffix_format}
    return normalize_spec(parse_spec(data, ctx), ctx)


def render_to_file(
    spec,
    warnings: list[str],
    model,
    out: Path,
    *,
    max_pixels: int,
    view_batch: int | None = None,
    quiet: bool = False,
    label: str = "",
) -> dict:
    """Render a normalized spec with a loaded model; write OUT and OUT.json; return the sidecar.
    Raises SpecError (bad images) or RenderError."""
    from worker.render import encode_image, load_inputs, render_job

    inputs = load_inputs(spec, max_pixels=max_pixels)
    started = time.perf_counter()
    with _progress(quiet, label or f"{spec.width}x{spec.height}", spec.steps) as on_step:
        result = render_job(model, spec, inputs, on_step=on_step, view_batch=view_batch)
    data = encode_image(result.image, spec.output.format, spec.output.quality)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    sidecar = {
        "spec": spec.model_dump(mode="json"),
        "seed": result.seed,
        "model": spec.model,
        "output": {
            "path": out.name,
            "format": spec.output.format,
            "width": result.image.width,
            "height": result.image.height,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "timings": {
            "load_seconds": round(model.load_seconds, 4),
            **result.timings,
            "wall_seconds": round(time.perf_counter() - started, 4),
        },
        "unet_calls": result.unet_calls,
        "unet_samples": result.unet_samples,
        "warnings": warnings + result.warnings,
        "versions": model.versions,
    }
    sidecar_path = out.with_name(out.name + ".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return sidecar


def run_render(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        models = load_models(settings.models_file)
    except (OSError, ValueError) as exc:
        return fail(f"models file: {exc}", EXIT_BAD_INPUT)
    # Webhooks are not called by a local render, so their hosts are not looked up here.
    ctx = ValidationContext.from_settings(settings, models, resolve_webhook_hosts=False)
    try:
        spec, warnings = load_spec(args.spec, ctx, model=args.model, seed=args.seed, out=args.out)
    except SpecError as exc:
        return fail(f"{args.spec}: invalid job spec:\n{exc}", EXIT_BAD_INPUT)

    # torch is imported only now: validating a spec must stay fast and light.
    from worker.render import RenderError, load_model
    from worker.render.runtime import configure_torch

    configure_torch(settings.torch_threads)
    try:
        model = load_model(models[spec.model], device=args.device, cache_dir=settings.model_cache)
        sidecar = render_to_file(
            spec,
            warnings,
            model,
            args.out,
            max_pixels=settings.max_pixels,
            view_batch=settings.view_batch,
            quiet=args.quiet,
            label=f"{args.spec.name} ({spec.width}x{spec.height})",
        )
    except SpecError as exc:
        return fail(f"{args.spec}: invalid job spec:\n{exc}", EXIT_BAD_INPUT)
    except RenderError as exc:
        return fail(str(exc), EXIT_ERROR)
    for warning in sidecar["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"wrote {args.out} ({sidecar['output']['bytes']} bytes) and {args.out.name}.json "
        f"in {sidecar['timings']['render_seconds']:.1f} s"
    )
    return 0


class _progress:
    """A tqdm bar over the denoising steps; yields the engine's on_step callback."""

    def __init__(self, quiet: bool, label: str, total: int):
        self.quiet, self.label, self.total, self.bar = quiet, label, total, None

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=self.label, unit="step", disable=self.quiet)

        def on_step(step: int, total: int) -> None:
            self.bar.total = total
            self.bar.update(step - self.bar.n)

        return on_step

    def __exit__(self, *exc) -> None:
        self.bar.close()


def run_models(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        models = load_models(settings.models_file)
    except (OSError, ValueError) as exc:
        return fail(f"models file: {exc}", EXIT_BAD_INPUT)
    if args.json:
        print(json.dumps({n: m.model_dump(mode="json") for n, m in models.items()}, indent=2))
        return 0
    rows = [("name", "family", "steps", "guidance", "native", "source", "lora")]
    for name, m in models.items():
        default = " (default)" if name == settings.default_model else ""
        rows.append(
            (
                name + default,
                m.family,
                str(m.steps),
                f"{m.guidance_scale:g}",
                str(m.native_size),
                m.source,
                m.lora or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
