"""`make demo`: render every example job locally with one loaded model and print a table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cli.render_cmd import load_spec, render_to_file
from schemas import Settings, SpecError, ValidationContext, load_models

EXAMPLES = ("street", "inpaint", "panorama", "landscape", "landscape_palette")
HERE = Path(__file__).parent
FALLBACK_MODEL = "tiny-random"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--model", help="model name (default: the farm's default, if present)")
    parser.add_argument("--device")
    parser.add_argument(
        "--examples",
        nargs="+",
        choices=EXAMPLES,
        default=list(EXAMPLES),
        help="render only these examples",
    )
    args = parser.parse_args(argv)

    from worker.render import load_model
    from worker.render.runtime import configure_torch

    settings = Settings()
    models = load_models(settings.models_file)
    # Webhooks are not called by a local render, so their hosts are not looked up here.
    ctx = ValidationContext.from_settings(settings, models, resolve_webhook_hosts=False)
    configure_torch(settings.torch_threads)
    name = choose_model(settings, models, args.model)
    model = load_model(models[name], device=args.device, cache_dir=settings.model_cache)
    print(f"demo: {name} loaded on {model.device} in {model.load_seconds:.1f} s")
    rows = []
    for example in args.examples:
        out = args.out / f"{example}.png"
        started = time.perf_counter()
        try:
            spec, warnings = load_spec(HERE / f"{example}.json", ctx, model=name, out=out)
            render_to_file(
                spec,
                warnings,
                model,
                out,
                max_pixels=settings.max_pixels,
                label=f"{example} {spec.width}x{spec.height}",
            )
            status = "succeeded"
        except SpecError as exc:
            status, out = f"invalid: {exc}", None
        rows.append((example, status, f"{time.perf_counter() - started:.1f}", str(out or "-")))
    _table([("job", "status", "seconds", "path"), *rows])
    return 0 if all(r[1] == "succeeded" for r in rows) else 1


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
