"""TEST ONLY: a render worker whose renders are a cheap stand-in for the engine, so that the
fault and load tests (tests/reliability/, bench/load.py) can run hundreds of jobs through real
worker processes.

    python tests/harness/stand_in_worker.py --step-ms 50 --model tiny-random --device cpu --name w0

starts what ``regionfarm worker --model tiny-random --device cpu --name w0`` starts: its
supervisor (cli/worker_cmd.py's children, worker/supervisor.py's restarts and stops), and in
each child `worker.main.run_render_worker`, which loads the model and serves its queue with
heartbeats, leases, the reconciler and storage, with one difference: the child hands the runner
`stand_in_render` as its renderer instead of the engine. The product has no switch for this;
a worker started by `regionfarm worker` always renders with the engine.

`stand_in_render` sleeps ``--step-ms`` per step, reports progress after each step and honours
cancel (and the job time limit) before each, like the engine; then it returns an image of the
canvas size: noise on the latent's grid, drawn from the seed (the same spec and seed give the
same bytes). A background prompt containing ``rf-test:crash`` kills the worker process with
SIGKILL at the first step (a poison job that crashes every worker it reaches); one containing
``rf-test:raise`` raises (a bug in the engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
CRASH = "rf-test:crash"
"""In a background prompt: the stand-in kills its worker process (SIGKILL) at the first step."""
RAISE = "rf-test:raise"
"""In a background prompt: the stand-in raises at the first step (a bug in the engine)."""
_WORKER_MAIN = ["-P", "-m", "worker.main"]
"""How cli/worker_cmd.py starts each child; the stand-in's children start this file instead."""


def stand_in_render(
    model: Any,
    spec: Any,
    inputs: Any,
    *,
    on_step: Callable[[int, int], None],
    should_cancel: Callable[[], bool],
    on_latent: Any = None,
    view_batch: int | None = None,
    step_ms: float,
) -> Any:
    """A worker.runner.Renderer that sleeps instead of rendering; see the module's docstring."""
    import numpy as np
    from PIL import Image

    from worker.render import RenderCanceled, RenderResult

    steps = spec.steps or 1
    prompt = (spec.background.prompt if spec.background else None) or ""
    started = time.perf_counter()
    for step in range(1, steps + 1):
        if should_cancel():
            raise RenderCanceled()
        if CRASH in prompt:
            os.kill(os.getpid(), signal.SIGKILL)
        if RAISE in prompt:
            raise RuntimeError("stand-in render: the engine failed")
        time.sleep(step_ms / 1000)
        on_step(step, steps)
    seed = int(spec.seed or 0)
    size = (max(1, spec.height // 8), max(1, spec.width // 8), 3)  # the latent's grid: small PNGs
    pixels = np.random.default_rng(seed).integers(0, 256, size, np.uint8)
    image = Image.fromarray(pixels, "RGB").resize((spec.width, spec.height), Image.NEAREST)
    return RenderResult(
        image=image,
        seed=seed,
        warnings=[],
        timings={"render_seconds": time.perf_counter() - started},
    )


def child_args(args: list[str], step_ms: float) -> list[str]:
    """A child's command line from the one `regionfarm worker` gives it: this file, in child
    mode with the stand-in, instead of ``-P -m worker.main``; the rest unchanged."""
    if args[1 : 1 + len(_WORKER_MAIN)] != _WORKER_MAIN:
        raise RuntimeError(
            f"cli/worker_cmd.py starts its children differently now: {args}; "
            "update tests/harness/stand_in_worker.py to match"
        )
    rest = args[1 + len(_WORKER_MAIN) :]
    return [args[0], str(HERE), "--child", "--step-ms", str(step_ms), *rest]


def _supervise(args: argparse.Namespace) -> int:
    """What `regionfarm worker --model M --device D --name N` does, with stand-in children."""
    from cli.worker_cmd import EXIT_BAD_INPUT, render_children
    from schemas import Settings
    from worker.main import EXIT_MODEL_UNAVAILABLE
    from worker.supervisor import supervise

    if not os.environ.get("REGIONFARM_REDIS_URL"):
        print("stand_in_worker.py: REGIONFARM_REDIS_URL is not set", file=sys.stderr)
        return EXIT_BAD_INPUT
    spec = argparse.Namespace(
        gpus=None, gpu=None, device=args.device, name=args.name, metrics_port=None
    )
    children = [
        dataclasses.replace(c, args=child_args(c.args, args.step_ms))
        for c in render_children(args.model, spec)
    ]
    grace = Settings().job_time_limit + 60
    return supervise(
        children, permanent_exit_codes=(EXIT_MODEL_UNAVAILABLE, EXIT_BAD_INPUT), stop_grace=grace
    )


def _serve(args: argparse.Namespace) -> int:
    """What `python -m worker.main` does for a render worker, with the stand-in renderer."""
    from schemas import Settings
    from worker.main import run_render_worker

    renderer = functools.partial(stand_in_render, step_ms=args.step_ms)
    return run_render_worker(
        Settings(), args.model, device=args.device, node_name=args.node_name, renderer=renderer
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/harness/stand_in_worker.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--step-ms", type=float, required=True, help="sleep per step")
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", help="node name prefix, as `regionfarm worker --name`")
    parser.add_argument("--child", action="store_true", help="one worker process (internal)")
    parser.add_argument("--node-name", help="the child's node name (internal)")
    args = parser.parse_args(argv)
    from farm.logs import configure_logging

    configure_logging()
    return _serve(args) if args.child else _supervise(args)


if __name__ == "__main__":
    sys.exit(main())
