"""Examples in the OpenAPI document; a test validates each against its pydantic model."""

from __future__ import annotations

import numpy as np

from schemas import encode_png_data_uri

_mask = np.zeros((128, 256), dtype=bool)
_mask[:, 128:] = True

SPEC = {
    "kind": "regions",
    "model": "sd15-lcm",
    "width": 256,
    "height": 128,
    "seed": 2024,
    "background": {"prompt": "clear deep blue sky", "negative_prompt": "worst quality"},
    "regions": [{"prompt": "summer mountains", "mask": encode_png_data_uri(_mask)}],
    "priority": 5,
    "metadata": {"project": "poster-7"},
}

_NORMALIZED = {
    **SPEC,
    "steps": 5,
    "guidance_scale": 1.0,
}

_JOB = {
    "id": "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A",
    "model": "sd15-lcm",
    "kind": "regions",
    "spec": _NORMALIZED,
    "created_at": "2026-11-26T04:47:15.123Z",
    "started_at": None,
    "finished_at": None,
    "progress": None,
    "worker": None,
    "attempts": 0,
    "warnings": [],
    "result": None,
    "error": None,
    "metadata": {"project": "poster-7"},
}

JOB_QUEUED = {**_JOB, "status": "queued"}
JOB_CANCELED = {**_JOB, "status": "canceled", "finished_at": "2026-11-26T04:47:16.001Z"}
JOB_SUCCEEDED = {
    **_JOB,
    "status": "succeeded",
    "started_at": "2026-11-26T04:47:15.400Z",
    "finished_at": "2026-11-26T04:47:17.950Z",
    "progress": {"step": 5, "total": 5, "eta_seconds": 0.0},
    "worker": "gpu0@host-a",
    "attempts": 1,
    "result": {
        "url": "https://farm.example.com/v1/jobs/job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A/result",
        "key": "acme/job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A/image.png",
        "format": "png",
        "width": 256,
        "height": 128,
        "bytes": 61234,
        "sha256": "9f2c" + "0" * 60,
        "seed": 2024,
        "render_seconds": 2.3,
    },
}

SPEC_PROBLEMS = [
    {"loc": ["regions", 0, "mask"], "msg": "mask is 512x512 but the canvas is 256x128"},
    {"loc": ["width"], "msg": "must be a multiple of 8"},
]

ASSET = {
    "id": "asset:" + "ab" * 32,
    "width": 256,
    "height": 128,
    "sha256": "ab" * 32,
    "format": "png",
    "bytes": 1045,
}

MODELS = {
    "models": [
        {
            "name": "sd15-lcm",
            "family": "sd15",
            "description": "Stable Diffusion 1.5 with the LCM-LoRA",
            "steps": 5,
            "guidance_scale": 1.0,
            "native_size": 512,
            "prompts": [],
            "workers": 2,
            "live": True,
            "default": True,
        }
    ]
}

NOT_READY = {
    "error": {
        "code": "not_ready",
        "message": "storage down",
        "details": [{"loc": ["storage"], "msg": "down: endpoint http://s3:8333 does not answer"}],
    },
    "status": "unavailable",
    "checks": {"broker": "ok", "storage": "down: endpoint http://s3:8333 does not answer"},
}

EVENTS = (
    "retry: 1000\n\n"
    'id: 1733221930412-0\nevent: status\ndata: {"status":"running"}\n\n'
    'id: 1733221931020-0\nevent: progress\ndata: {"step":3,"total":5,"eta_seconds":1.2}\n\n'
    'id: 1733221932311-0\nevent: job\ndata: {"id":"job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A",'
    '"status":"succeeded",...}\n\n'
)

STATUS = {
    "queues": [{"model": "sd15-lcm", "queued": 12, "workers": 2}],
    "workers": [
        {"name": "gpu0@host-a", "model": "sd15-lcm", "device": "cuda:0", "seen_seconds_ago": 3.2}
    ],
    "recent_failures": [
        {
            "id": "job_01JDX3Q7S9V5T0ZQ4W8N2C6B1A",
            "finished_at": "2026-11-26T04:47:17.950Z",
            "error": {"code": "out_of_memory", "message": "out of GPU memory rendering ..."},
        }
    ],
}
