"""The models resource: what the farm's models file names, and which models have live workers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.state import state
from farm.workers import workers_per_model

__all__ = ["bp"]

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    st = state()
    live = workers_per_model(st.redis)
    models = [
        {
            "name": name,
            "family": entry.family,
            "description": entry.description,
            "steps": entry.steps,
            "guidance_scale": entry.guidance_scale,
            "native_size": entry.native_size,
            "prompts": entry.prompts,
            "workers": live.get(name, 0),
            "live": live.get(name, 0) > 0,
            "default": name == st.settings.default_model,
        }
        for name, entry in st.models.items()
    ]
    # Live models first: they are what the contract's table lists; the others are known but
    # would wait for a worker.
    models.sort(key=lambda m: (not m["live"], m["name"]))
    return jsonify({"models": models})
