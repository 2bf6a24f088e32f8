"""The keys file of a running farm emptied, corrupted, removed and restored: auth stays on, no
request is ever admitted without a valid key, a broken file keeps the last good keys (and is
logged once per API process and reported by /readyz), an emptied one admits nobody."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

FAILURE = {
    "without a valid key": "admitted without a valid key",
    "with a valid key": "refused a valid key",
    "with a valid key, one process restarted": "refused a valid key",
    "readyz": "readyz wrong",
    "log": "logged more than once",
}
"""What a failed check of each kind is called in the row."""
RESTARTED_REFUSED = "valid key refused by the restarted process"
SETTLE_S = 1.5
"""Longer than the API's keys-file check interval (1 s): after it, every process sees a change."""
API_PROCESSES = 2


def test_keys_file_emptied_corrupted_and_removed_on_a_running_api(make_farm, record_row, rel):
    farm = make_farm()  # no render worker: only auth is exercised
    started = time.monotonic()
    good = farm.keys_file.read_text()
    per_phase = rel.pick(20, 200)
    counts: Counter[str] = Counter()
    problems: list[str] = []
    lock = threading.Lock()

    def note(kind: str, ok: bool, what: str) -> None:
        with lock:
            counts[kind] += 1
            if not ok:
                problems.append(f"{FAILURE[kind]}: {what}")

    wrong = {
        "no key": {},
        "wrong key": {"Authorization": "Bearer rf_" + "x" * 43},
        "not bearer": {"Authorization": f"Basic {farm.keys['acme']}"},
    }

    # All along, from another thread: requests without a valid key, across every change.
    stop, pause, paused = threading.Event(), threading.Event(), threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            if pause.is_set():  # while an API process is killed: its connection would break
                farm.session().close()
                paused.set()
                time.sleep(0.05)
                continue
            paused.clear()
            for label, headers in wrong.items():
                answer = farm.call("GET", "/v1/jobs", tenant=None, headers=headers)
                note(
                    "without a valid key",
                    answer.status_code == 401,
                    f"{label} (background) answered {answer.status_code}",
                )

    background = threading.Thread(target=hammer, daemon=True)
    background.start()

    def phase(name: str, valid: set[str], ready: str | None, restarted: bool = False) -> None:
        """Requests with each tenant's key and without one: only `valid` tenants get in, and
        /readyz says `ready` (None: 200 "ok", else the keys check starts with it: 200
        "degraded" from a process with last good keys, 503 only from one that never had any).
        With `restarted`, an API process that started while the file was broken refuses them too
        (it never saw the last good keys): a 401 for a valid key is then fail-closed."""
        for _ in range(per_phase):
            for tenant in farm.keys:
                answer = farm.call("GET", "/v1/jobs", tenant=tenant)
                if tenant in valid and restarted:
                    with lock:
                        counts[RESTARTED_REFUSED] += answer.status_code == 401
                    note(
                        "with a valid key, one process restarted",
                        answer.status_code in (200, 401),
                        f"{name}: {tenant} answered {answer.status_code}",
                    )
                elif tenant in valid:
                    note(
                        "with a valid key",
                        answer.status_code == 200,
                        f"{name}: {tenant} answered {answer.status_code}",
                    )
                else:
                    note(
                        "without a valid key",
                        answer.status_code == 401,
                        f"{name}: {tenant}'s old key answered {answer.status_code}",
                    )
            for label, headers in wrong.items():
                answer = farm.call("GET", "/v1/jobs", tenant=None, headers=headers)
                note(
                    "without a valid key",
                    answer.status_code == 401,
                    f"{name}: {label} answered {answer.status_code}",
                )
        # New connections, so that both API processes answer some.
        for _ in range(4 * API_PROCESSES):
            answer = requests.get(f"{farm.url}/readyz", timeout=10)
            body: dict[str, Any] = answer.json()
            if ready is None:
                ok = (
                    answer.status_code == 200
                    and body["status"] == "ok"
                    and body["checks"].get("keys") == "ok"
                )
            elif answer.status_code == 200:
                # A process serving with the last good keys stays ready and says what is wrong.
                ok = body["status"] == "degraded" and body["checks"]["keys"].startswith(ready)
            else:
                # Only the restarted process, which never loaded a good file, is not ready.
                ok = (
                    restarted
                    and answer.status_code == 503
                    and [d["loc"] for d in body["error"]["details"]] == [["keys"]]
                    and body["checks"]["keys"].startswith(ready)
                    and rel.contract_problem(answer) is None
                )
            ok = ok and not any(t in answer.text for t in farm.keys)
            note("readyz", ok, f"{name}: readyz {answer.status_code} {answer.text[:200]}")

    def change(text: str | None) -> None:
        if text is None:
            farm.keys_file.unlink()
        else:
            farm.keys_file.write_text(text)  # in place, as an editor or `: >` does
        time.sleep(SETTLE_S)

    everyone = set(farm.keys)
    phase("as started", everyone, None)
    change('{"tenants": {}}')
    phase("emptied", set(), None)
    change(good[: len(good) // 2])  # then corrupted: the last good keys are "nobody"
    phase("emptied, then corrupted", set(), "invalid")
    change("")
    phase("emptied to 0 bytes", set(), None)
    change(good)
    phase("restored", everyone, None)
    change("{ not json")
    phase("corrupted", everyone, "invalid")  # the last good keys keep working
    # An API process dies while the file is broken: gunicorn starts another, which cannot load
    # the file; it must come up (a worker that fails to boot stops all of gunicorn) and admit
    # nobody, while the other process keeps the last good keys.
    workers = _children(farm.api_proc.pid)
    assert len(workers) == API_PROCESSES, workers
    pause.set()
    assert paused.wait(30)
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while len(now := _children(farm.api_proc.pid)) < API_PROCESSES or workers[0] in now:
        assert farm.api_proc.poll() is None, farm.log_tail()
        assert time.monotonic() < deadline, f"no new API process: {farm.log_tail()}"
        time.sleep(0.2)
    time.sleep(SETTLE_S)
    assert farm.api_proc.poll() is None, farm.log_tail()
    farm.session().close()  # kept-alive connections to the killed process are dead
    pause.clear()
    phase("corrupted, one API process restarted", everyone, "invalid", restarted=True)
    change(None)
    phase("removed", everyone, "missing", restarted=True)
    change(good)
    phase("restored again", everyone, None)
    stop.set()
    background.join(30)

    # The keys file's problems are logged once per problem and API process, not per request.
    log = (farm.logs / "api.log").read_text(errors="replace")
    logged = log.count("until the file is fixed")
    most = 3 * API_PROCESSES + 2  # 3 problems per process; 2 for the restarted one
    note("log", 0 < logged <= most, f"{logged} log lines, at most {most} expected")

    total = farm.counted.count
    failed = Counter(p.split(":")[0] for p in problems)
    admitted = failed[FAILURE["without a valid key"]]
    with_key = counts["with a valid key"] + counts["with a valid key, one process restarted"]
    row = rel.Row(
        "keys file emptied, corrupted, removed on a running API",
        total,
        succeeded=total - admitted - failed[FAILURE["with a valid key"]],
        errors_5xx=farm.counted.errors_5xx,
        seconds=time.monotonic() - started,
        notes=(
            f"{counts['without a valid key']} requests without a valid key (admitted: "
            f"{admitted}), {with_key} with one; readyz right "
            f"{counts['readyz'] - failed[FAILURE['readyz']]}/{counts['readyz']}; keys-file "
            f"errors logged {logged} times (3 problems, {API_PROCESSES} API processes, one "
            f"restarted while the file was broken: it refused "
            f"{counts[RESTARTED_REFUSED]} requests with a valid key)"
        ),
    )
    row.failed.update(failed)
    record_row(row)
    assert problems == [], "\n".join(problems[:20])
    assert farm.counted.contract_breaks == []
    assert row.errors_5xx == 0


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (gunicorn's workers under its arbiter)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)
