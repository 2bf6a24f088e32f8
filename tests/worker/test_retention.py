"""The retention sweep: old results and unused assets go, recent and used ones stay."""

from __future__ import annotations

import os
import time

import redis

from farm import redis_keys
from farm.storage import LocalStorage, asset_key, job_object_key
from worker.retention import sweep

JOB_OLD, JOB_NEW = "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A", "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1B"
DAY = 86400


def test_sweep_deletes_expired_results_and_unused_assets(tmp_path, redis_url):
    storage = LocalStorage(tmp_path, prefix="rf")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    now = time.time()
    keys = {
        "old_image": job_object_key("rf", "acme", JOB_OLD, "image.png"),
        "old_json": job_object_key("rf", "acme", JOB_OLD, "job.json"),
        "new_image": job_object_key("rf", "acme", JOB_NEW, "image.png"),
        "unused_asset": asset_key("rf", "acme", "a" * 64, "png"),
        "used_asset": asset_key("rf", "acme", "b" * 64, "png"),
        "fresh_asset": asset_key("rf", "acme", "c" * 64, "png"),
    }
    for key in keys.values():
        storage.put_bytes(key, b"x", "image/png")
    ages = {
        "old_image": 8 * DAY,
        "old_json": 8 * DAY,
        "new_image": 6 * DAY,
        "unused_asset": 2 * DAY,
        "used_asset": 2 * DAY,
        "fresh_asset": 3600,
    }
    for name, age in ages.items():
        path = storage.local_path(keys[name])
        os.utime(path, (now - age, now - age))
    used = redis_keys.asset_meta_key("acme", "b" * 64)
    client.hset(used, mapping={"ext": "png"})  # used in the last 24 h
    deleted = sweep(storage, client, retention_days=7, now=now)
    assert deleted == {"results": 2, "assets": 1}
    left = {key for key, _ in storage.list_keys("rf")}
    assert left == {keys["new_image"], keys["used_asset"], keys["fresh_asset"]}
    client.close()
