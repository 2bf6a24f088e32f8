"""Keeps worker processes running: one per GPU (each with its own CUDA_VISIBLE_DEVICES and node
name), restarted with backoff when one dies, stopped together on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from farm.embedded import die_with_parent

__all__ = ["Child", "supervise"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
"""Most seconds between two restarts of a worker that keeps dying."""
QUICK_STOP_GRACE = 30.0
"""Seconds a worker gets to stop after Ctrl-C (SIGINT) before it is killed; its job, if any,
goes back to the queue. SIGTERM (a deployment's stop) waits for the job instead."""
STEADY_SECONDS = 60.0
"""A worker that ran this long before dying is restarted at once (its backoff is reset)."""


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    retired: bool = False
    restart_at: float = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args,
            env={**os.environ, **self.env},
            preexec_fn=die_with_parent,  # noqa: PLW1509 -- prctl only: no orphan if we die
        )
        self.started = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)


def supervise(
    children: list[Child],
    *,
    permanent_exit_codes: tuple[int, ...] = (),
    stop_grace: float = QUICK_STOP_GRACE,
) -> int:
    """Run `children` until a signal stops us; 1 when every child exited for good.

    On SIGTERM each child gets `stop_grace` seconds (give it the longest render: Celery's warm
    shutdown lets the job in hand finish); on SIGINT, QUICK_STOP_GRACE.
    """
    stopping = False
    grace = stop_grace

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping, grace
        stopping = True
        if signum == signal.SIGINT:
            grace = min(grace, QUICK_STOP_GRACE)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.start()
        while not stopping:
            now = time.monotonic()
            for child in children:
                if child.retired or child.proc is None:
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                if code in permanent_exit_codes:
                    child.retired = True
                    log.error("%s exited with %d and is not restarted", child.name, code)
                    continue
                if child.restart_at == 0.0:
                    ran = now - child.started
                    child.failures = 0 if ran > STEADY_SECONDS else child.failures + 1
                    delay = min(MAX_BACKOFF, 2.0 ** max(0, child.failures - 1) - 1)
                    child.restart_at = now + delay
                    log.warning("%s exited with %d; restarting in %.0f s", child.name, code, delay)
                if now >= child.restart_at:
                    child.restart_at = 0.0
                    child.start()
            if all(c.retired for c in children):
                return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop_all(children, grace)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_all(children: list[Child], grace: float) -> None:
    live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown: the job in hand finishes
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs `module` in a child process with this interpreter. `-P`: the
    working directory is not put on the child's import path, so a folder there named like one
    of ours (a data dir called `farm`, a checkout's `worker/`) cannot stand in for the
    installed package."""
    return [sys.executable, "-P", "-m", module, *args]
