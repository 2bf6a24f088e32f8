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
        "id": "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A", "tenant": "acme", "status": status,
        "model": "m", "kind": "image", "priority": "5", "attempts": "1",
        "spec": '{"webhook":{"url":"https://hooks.example.com/x"}}', "created_at": "t",
        "started_at": "", "finished_at": "", "progress": "", "worker": "", "warnings": "[]",
        "result": "", "error": "", "metadata": "{}",
    }  # fmt: skip


def test_a_failed_delivery_is_retried_on_the_backoff_schedule(monkeypatch):
    def fail(*args, **kwargs):
        raise WebhookRetry("receiver answered 503", retry_after=None)

    monkeypatch.setattr("worker.deliveries.deliver", fail)
    sender = WebhookSender(settings=SETTINGS, records=_Records(_record()), keys=_Keys(),
                           storage=None, delays=[10.0, 20.0])  # fmt: skip
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
    sender = WebhookSender(settings=SETTINGS, records=_Records(_record("running")),
                           keys=_Keys(), storage=None)  # fmt: skip
    sender.task(types.SimpleNamespace(request=types.SimpleNamespace(retries=0)), "job_x")
    assert sent == []
