"""Engine fixtures: the tiny-random model loaded once, and a helper that renders a spec dict."""

from __future__ import annotations

import pytest

from schemas import Settings, ValidationContext, load_models, normalize_spec, parse_spec


@pytest.fixture(scope="session")
def settings(model_cache) -> Settings:
    return Settings(model_cache=model_cache)


@pytest.fixture(scope="session")
def models():
    return load_models()


@pytest.fixture(scope="session")
def ctx(settings, models) -> ValidationContext:
    return ValidationContext.from_settings(settings, models)


@pytest.fixture(scope="session")
def tiny(models, model_cache):
    from worker.render import load_model

    return load_model(models["tiny-random"], device="cpu", cache_dir=model_cache)


def renderer(model, name: str, ctx, settings):
    """render(spec_dict, **kw) -> (RenderResult, normalized spec) on a loaded model."""
    from worker.render import load_inputs, render_job

    def _render(data: dict, **kwargs):
        spec, _ = normalize_spec(parse_spec({"model": name, **data}, ctx), ctx)
        inputs = load_inputs(spec, max_pixels=settings.max_pixels)
        return render_job(model, spec, inputs, **kwargs), spec

    return _render


@pytest.fixture(scope="session")
def render(tiny, ctx, settings):
    """render(spec_dict, **kw) -> (RenderResult, normalized spec) on tiny-random."""
    return renderer(tiny, "tiny-random", ctx, settings)
