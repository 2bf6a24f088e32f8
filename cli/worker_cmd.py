"""`regionfarm worker`: worker processes for one model (one per GPU), or the webhook worker."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from typing import Any

from farm.logs import configure_logging

__all__ = ["add_parsers", "render_children", "visible_gpus", "webhook_child"]

EXIT_BAD_INPUT = 2


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("worker", help="worker process(es) for one model, one per GPU")
    p.add_argument("--model", help="model name from the models file (its queue is render.NAME)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu", type=int, metavar="N", help="one worker on GPU N")
    where.add_argument("--gpus", choices=["all"], help="one worker per visible GPU")
    where.add_argument("--device", help="cpu (or cuda:N) for one worker without GPU pinning")
    p.add_argument("--name", help="node name prefix (default: gpuN or cpu, @ the host name)")
    p.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics from here (+N per GPU)"
    )
    p.add_argument("--webhooks", action="store_true", help="the webhook delivery worker instead")
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the UNet at start (torch.compile; as the models file's `compile = true`)",
    )
    p.set_defaults(handler=run_worker)


def visible_gpus() -> list[str]:
    """GPU indices this host shows (CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list);
    found without initializing CUDA in this process."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    done = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False, timeout=30)
    return [str(i) for i, line in enumerate(done.stdout.splitlines()) if line.startswith("GPU ")]


def _child_args(*args: str) -> list[str]:
    from worker.supervisor import python_module

    return python_module("worker.main", *args)


def _compile_flag(args: argparse.Namespace) -> list[str]:
    return ["--compile"] if getattr(args, "compile", False) else []


def render_children(model: str, args: argparse.Namespace):
    """The worker processes to run: one per GPU asked for, or one on the CPU / given device."""
    from worker.supervisor import Child

    host = socket.gethostname()
    port = args.metrics_port
    if args.gpus == "all" or args.gpu is not None:
        gpus = visible_gpus() if args.gpus == "all" else [str(args.gpu)]
        if not gpus:
            raise ValueError("--gpus all: no GPU is visible (nvidia-smi lists none)")
        children = []
        for i, gpu in enumerate(gpus):
            name = f"{args.name or 'gpu' + gpu}@{host}" if len(gpus) == 1 else f"gpu{gpu}@{host}"
            extra = ["--metrics-port", str(port + i)] if port else []
            children.append(
                Child(
                    name=name,
                    env={"CUDA_VISIBLE_DEVICES": gpu},
                    args=_child_args(
                        "--model",
                        model,
                        "--device",
                        "cuda:0",
                        "--node-name",
                        name,
                        *extra,
                        *_compile_flag(args),
                    ),
                )
            )
        return children
    device = args.device or ("cuda" if visible_gpus() else "cpu")
    name = f"{args.name or device.replace(':', '')}@{host}"
    extra = ["--metrics-port", str(port)] if port else []
    return [
        Child(
            name=name,
            args=_child_args(
                "--model",
                model,
                "--device",
                device,
                "--node-name",
                name,
                *extra,
                *_compile_flag(args),
            ),
        )
    ]


def webhook_child(name: str | None = None):
    from worker.supervisor import Child

    node = f"{name or 'webhooks'}@{socket.gethostname()}"
    return Child(name=node, args=_child_args("--webhooks", "--node-name", node))


def run_worker(args: argparse.Namespace) -> int:
    configure_logging()
    from worker.main import EXIT_MODEL_UNAVAILABLE
    from worker.supervisor import supervise

    if args.webhooks:
        children = [webhook_child(args.name)]
    else:
        if not args.model:
            print("regionfarm worker: --model NAME is required (or --webhooks)", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            children = render_children(args.model, args)
        except ValueError as exc:
            print(f"regionfarm worker: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if not os.environ.get("REGIONFARM_REDIS_URL"):
        print(
            "regionfarm worker: REGIONFARM_REDIS_URL is not set: point it at the farm's "
            "Redis (`regionfarm up` starts workers itself)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from schemas import Settings

    # A deployment's stop (SIGTERM) lets the render in hand finish: up to the job time limit.
    grace = Settings().job_time_limit + 60
    return supervise(
        children, permanent_exit_codes=(EXIT_MODEL_UNAVAILABLE, EXIT_BAD_INPUT), stop_grace=grace
    )
