"""The worker's Celery app: every task name registered, the settings long GPU tasks need, the
same broker options as the sender, and the webhook task's retry schedule."""

from __future__ import annotations

import types

import pytest
from celery.exceptions import Retry

from farm.broker import celery_settings
from schemas import Settings
from schemas.names import TASKS
from worker.celery_app import make_worker_app
from worker.deliveries import WebhookSender
from worker.tasks import register_tasks
from worker.webhooks import WebhookRetry

SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0")


def test_the_worker_registers_every_task_name():
    app = make_worker_app(SETTINGS)
    register_tasks(app, render=lambda job_id: "succeeded", webhook=lambda task, job_id: None)
    assert set(TASKS) <= set(app.tasks)


def test_long_gpu_task_settings():
    conf = make_worker_app(SETTINGS).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    # A visibility timeout above the longest render: a running job is never handed out twice.
    assert conf.broker_transport_options["visibility_timeout"] > SETTINGS.job_time_limit
    # Sender and receiver agree on the priority lists, or priorities silently break.
    sender = celery_settings(SETTINGS)["broker_transport_options"]
    for key in ("priority_steps", "sep"):
        assert conf.broker_transport_options[key] == sender[key]


class _Records:
    def __init__(self, record):
        self.record = record

    def get(self, job_id):
        return self.record


class _Keys:
    configured = True  # a farm with keys: the tenant's secret comes from them

    def by_name(self, name):
        return types.SimpleNamespace(webhook_secret="whsec_test")


def _record(status="succeeded"):
    return {
        "id": "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A",
        "tenant": "acme",
        "status": status,
        "model": "m",
        "kind": "image",
        "priority": "5",
        "attempts": "1",
        "spec": '{"webhook":{"url":"https://hooks.example.com/x"}}',
        "created_at": "t",
        "started_at": "",
        "finished_at": "",
        "progress": "",
        "worker": "",
        "warnings": "[]",
        "result": "",
        "error": "",
        "metadata": "{}",
    }


def test_a_failed_delivery_is_retried_on_the_backoff_schedule(monkeypatch):
    def fail(*args, **kwargs):
        raise WebhookRetry("receiver answered 503", retry_after=None)

    monkeypatch.setattr("worker.deliveries.deliver", fail)
    sender = WebhookSender(
        settings=SETTINGS,
        records=_Records(_record()),
        keys=_Keys(),
        storage=None,
        delays=[10.0, 20.0],
    )
    calls = []

    def retry(countdown, max_retries):
        calls.append((countdown, max_retries))
        return Retry()

    for attempt, expected in [(0, 10.0), (1, 20.0)]:
        task = types.SimpleNamespace(request=types.SimpleNamespace(retries=attempt), retry=retry)
        with pytest.raises(Retry):
            sender.task(task, "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A")
        assert calls[-1] == (expected, 2)
    # Out of retries: given up (logged), not raised.
    task = types.SimpleNamespace(request=types.SimpleNamespace(retries=2), retry=retry)
    sender.task(task, "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A")
    assert len(calls) == 2


def test_a_job_not_yet_final_sends_nothing(monkeypatch):
    sent = []
    monkeypatch.setattr("worker.deliveries.deliver", lambda *a, **k: sent.append(a))
    sender = WebhookSender(
        settings=SETTINGS, records=_Records(_record("running")), keys=_Keys(), storage=None
    )
    sender.task(types.SimpleNamespace(request=types.SimpleNamespace(retries=0)), "job_x")
    assert sent == []


# -- decisions from typed fields ----------------------------------------------------------------


def test_a_new_record_says_whether_it_has_a_webhook_and_the_job_object_does_not_show_it():
    from farm.records import new_record, to_public, wants_webhook

    spec = {"model": "m", "kind": "image", "priority": 5}
    hooked = new_record(
        job_id="job_a",
        tenant="acme",
        spec={**spec, "webhook": {"url": "https://hooks.example.com/x"}},
    )
    # A spec whose metadata holds a "webhook" object has no webhook of its own.
    plain = new_record(
        job_id="job_b",
        tenant="acme",
        spec={**spec, "metadata": {"webhook": {"url": "https://x.example"}}},
    )
    assert (hooked["has_webhook"], plain["has_webhook"]) == ("1", "0")
    assert wants_webhook(hooked) and not wants_webhook(plain)
    assert "has_webhook" not in to_public(hooked)


def test_a_record_from_before_has_webhook_is_decided_by_its_parsed_spec():
    from farm.records import wants_webhook

    old = {k: v for k, v in _record().items() if k != "has_webhook"}
    assert "has_webhook" not in old and wants_webhook(old)  # queued before an upgrade: kept
    nested = {**old, "spec": '{"metadata":{"webhook":{"url":"https://x.example"}}}'}
    assert not wants_webhook(nested)
    assert not wants_webhook({**old, "spec": "not json"})


class _ReconcileRecords:
    """Three running jobs whose worker is gone, each failed by `requeue` (out of attempts)."""

    def __init__(self, records):
        self.records = records

    def active_ids(self, status):
        return sorted(self.records) if status == "running" else []

    def lease_holder(self, job_id):
        return None

    def requeue(self, job_id, *, max_attempts, take_over):
        return "failed"

    def get(self, job_id):
        return self.records[job_id]


def test_the_reconciler_announces_a_failed_job_only_when_its_record_has_a_webhook(monkeypatch):
    from worker import heartbeat

    sent = []
    monkeypatch.setattr(heartbeat, "send_webhook", lambda celery, job_id: sent.append(job_id))
    old = {k: v for k, v in _record("failed").items() if k != "has_webhook"}
    records = {
        "job_new_hooked": {**_record("failed"), "has_webhook": "1", "spec": "{}"},
        # The spec's text holds '"webhook":{' (in its metadata) but the job has no webhook.
        "job_new_plain": {
            **_record("failed"),
            "has_webhook": "0",
            "spec": '{"metadata":{"webhook":{"url":"https://x.example"}}}',
        },
        "job_old_hooked": old,
    }
    outcomes = heartbeat.reconcile(
        _ReconcileRecords(records), None, max_attempts=3, holder_alive=lambda holder: False
    )
    assert outcomes == {"failed": 3}
    assert sorted(sent) == ["job_new_hooked", "job_old_hooked"]


def _runner(hgetall=lambda key: {}):
    from schemas import load_models
    from worker.runner import Runner

    records = types.SimpleNamespace(redis=types.SimpleNamespace(hgetall=hgetall))
    return Runner(
        settings=SETTINGS,
        model=types.SimpleNamespace(name="tiny-random"),
        models=load_models(),
        records=records,
        storage=types.SimpleNamespace(prefix=""),
        celery=None,
        name="w@test",
    )


def _regions_spec(mask: str) -> dict:
    return {
        "kind": "regions",
        "model": "tiny-random",
        "width": 256,
        "height": 256,
        "regions": [{"prompt": "a red house", "mask": mask}],
    }


def test_a_missing_asset_fails_invalid_asset_naming_its_field():
    from worker.runner import JobFailed

    ref = "asset:" + "a" * 64
    with pytest.raises(JobFailed) as failed:
        _runner()._validate(_regions_spec(ref), "acme")
    assert failed.value.code == "invalid_asset"
    assert failed.value.message.startswith(f"regions.0.mask: unknown asset {ref!r}")
    assert "POST /v1/assets" in failed.value.message


def test_a_bad_mask_whose_message_mentions_assets_is_invalid_spec():
    from worker.runner import JobFailed

    with pytest.raises(JobFailed) as failed:
        _runner()._validate(_regions_spec("https://example.com/mask.png"), "acme")
    assert "asset reference" in failed.value.message  # the word is there; the code is not
    assert failed.value.code == "invalid_spec"


# -- no test machinery in the product -----------------------------------------------------------


def test_the_runner_renders_with_the_engine_and_reads_no_environment():
    from pathlib import Path

    from worker.render import render_job
    from worker.runner import Runner

    assert _runner().renderer is render_job
    assert Runner.__dataclass_fields__["renderer"].default is render_job
    source = (Path(__file__).resolve().parents[2] / "worker" / "runner.py").read_text()
    assert "os.environ" not in source and "getenv" not in source


def test_product_packages_hold_no_test_switch():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}: {marker}"
        for package in ("api", "worker", "farm", "schemas", "cli")
        for path in sorted((root / package).rglob("*.py"))
        for marker in ("RF_TEST", "rf-test:", "TEST ONLY")
        if marker in path.read_text()
    ]
    assert found == []


def test_a_stuck_consumer_ends_the_worker_with_its_exit_code(monkeypatch):
    from worker import main

    exits, stopped, renewed = [], [], []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(main.os, "_exit", fake_exit)
    monkeypatch.setattr(main.logging, "shutdown", lambda: None)
    runner = types.SimpleNamespace(renew_lease=lambda: renewed.append(1))
    heartbeat = types.SimpleNamespace(stop=lambda: stopped.append(1))
    main.renew_or_exit(runner, types.SimpleNamespace(check=lambda: False), heartbeat, "w@h")
    assert (renewed, stopped, exits) == ([1], [], [])
    with pytest.raises(SystemExit):
        main.renew_or_exit(runner, types.SimpleNamespace(check=lambda: True), heartbeat, "w@h")
    assert (renewed, stopped, exits) == ([1, 1], [1], [main.EXIT_CONSUMER_STUCK])


# -- the test harness's stand-in worker (tests/harness/stand_in_worker.py) ----------------------


def _stand_in_spec(prompt: str = "a clear sky", steps: int = 3):
    return types.SimpleNamespace(
        steps=steps, seed=7, width=64, height=48, background=types.SimpleNamespace(prompt=prompt)
    )


def test_the_stand_in_renders_like_the_engines_contract():
    from tests.harness.stand_in_worker import stand_in_render
    from worker.render import RenderCanceled

    steps = []
    kwargs = {
        "on_step": lambda s, t: steps.append((s, t)),
        "should_cancel": lambda: False,
        "on_latent": None,
        "view_batch": None,
        "step_ms": 0,
    }
    first = stand_in_render(None, _stand_in_spec(), None, **kwargs)
    again = stand_in_render(None, _stand_in_spec(), None, **kwargs)
    assert steps == [(1, 3), (2, 3), (3, 3)] * 2
    assert first.image.size == (64, 48) and first.seed == 7
    assert first.image.tobytes() == again.image.tobytes()  # same spec and seed, same image
    with pytest.raises(RenderCanceled):
        stand_in_render(None, _stand_in_spec(), None, **{**kwargs, "should_cancel": lambda: True})
    with pytest.raises(RuntimeError, match="stand-in render"):
        stand_in_render(None, _stand_in_spec("x rf-test:raise"), None, **kwargs)


def test_the_stand_in_worker_starts_what_regionfarm_worker_starts_but_its_own_children():
    import argparse
    import sys

    from cli.worker_cmd import render_children
    from tests.harness.stand_in_worker import HERE, child_args

    args = argparse.Namespace(gpus=None, gpu=None, device="cpu", name="w0", metrics_port=None)
    [child] = render_children("tiny-random", args)
    assert child_args(child.args, 50) == [
        sys.executable,
        str(HERE),
        "--child",
        "--step-ms",
        "50",
        *child.args[4:],
    ]
    assert child.args[:4] == [sys.executable, "-P", "-m", "worker.main"]
    assert child.args[4:] == [
        "--model",
        "tiny-random",
        "--device",
        "cpu",
        "--node-name",
        child.name,
    ]
    with pytest.raises(RuntimeError, match="update tests/harness"):
        child_args([sys.executable, "-m", "other.main"], 50)
