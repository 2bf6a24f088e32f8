"""The compiled UNet (models file `compile = true`, `regionfarm worker --compile`): every call at
one batch shape, so jobs of other canvas sizes never recompile, and images as the eager UNet's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.render.compiled import FixedBatchUNet, UNetOutput, compile_unet

from .conftest import renderer


class RecordingUNet:
    """A stand-in UNet: records each call's batch sizes and answers a function of every row."""

    dtype = torch.float32
    config = None

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, sample, t, encoder_hidden_states, added_cond_kwargs=None):
        sizes = (sample.shape[0], t.shape[0], encoder_hidden_states.shape[0])
        if added_cond_kwargs is not None:
            sizes += tuple(v.shape[0] for v in added_cond_kwargs.values())
        self.calls.append(sizes)
        row = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        bonus = 0.0
        if added_cond_kwargs is not None:
            bonus = added_cond_kwargs["time_ids"].sum(dim=1).view(-1, 1, 1, 1)
        return UNetOutput(sample * 2 + t.view(-1, 1, 1, 1) + row + bonus)


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 11])
def test_every_call_has_the_fixed_batch_and_the_answer_is_row_by_row(rows):
    inner = RecordingUNet()
    fixed = FixedBatchUNet(inner, 4)
    g = torch.Generator().manual_seed(rows)
    sample = torch.randn(rows, 4, 8, 8, generator=g)
    hidden = torch.randn(rows, 7, 16, generator=g)
    added = {"text_embeds": torch.randn(rows, 12, generator=g), "time_ids": torch.rand(rows, 6)}
    out = fixed(sample, torch.tensor(499), hidden, added_cond_kwargs=added).sample
    assert all(call == (4, 4, 4, 4, 4) for call in inner.calls), inner.calls
    assert len(inner.calls) == -(-rows // 4)
    want = RecordingUNet()(sample, torch.full((rows,), 499), hidden, added).sample
    assert out.shape == sample.shape
    assert torch.equal(out, want)


def test_a_python_number_timestep_becomes_one_tensor_per_sample():
    inner = RecordingUNet()
    out = FixedBatchUNet(inner, 2)(torch.zeros(3, 1, 2, 2), 7, torch.zeros(3, 1, 1)).sample
    assert inner.calls == [(2, 2, 2), (2, 2, 2)]
    assert torch.equal(out, torch.full((3, 1, 2, 2), 7.0))


def test_a_batch_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        FixedBatchUNet(RecordingUNet(), 0)


@pytest.fixture(scope="module")
def compiled_tiny(models, model_cache):
    """A tiny-random of its own (compiling changes the module), compiled at 3 pairs per call."""
    from worker.render import load_model

    torch._dynamo.reset()
    model = load_model(models["tiny-random"], device="cpu", cache_dir=model_cache)
    eager = load_model(models["tiny-random"], device="cpu", cache_dir=model_cache)
    compile_unet(model, 3)
    yield model, eager
    torch._dynamo.reset()


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_canvases_of_other_sizes_never_recompile_and_match_the_eager_render(
    compiled_tiny, ctx, settings
):
    model, eager = compiled_tiny
    compiled_render = renderer(model, "tiny-random", ctx, settings)
    eager_render = renderer(eager, "tiny-random", ctx, settings)
    specs = [
        # 5 views a step: calls of 3 and a padded 2; then 10 views, guided (20 rows a step).
        {"kind": "panorama", "width": 768, "height": 256, "seed": 1, "background": {"prompt": "a"}},
        {
            "kind": "panorama",
            "width": 768,
            "height": 384,
            "seed": 2,
            "guidance_scale": 2.0,
            "background": {"prompt": "b"},
        },
    ]
    graphs = _graphs()
    assert graphs > 0, "the warm-up compiled nothing"
    with torch.compiler.set_stance("fail_on_recompile"):
        results = [compiled_render(spec)[0] for spec in specs]
    assert _graphs() == graphs, "a job compiled a new graph"
    for spec, result in zip(specs, results):
        want = np.asarray(eager_render(spec)[0].image, dtype=np.int16)
        got = np.asarray(result.image, dtype=np.int16)
        assert got.shape == want.shape
        # The compiled kernels fuse and reorder float math: a pixel may round differently.
        assert np.abs(got - want).max() <= 2, spec


def test_the_same_jobs_without_padding_would_recompile(compiled_tiny, ctx, settings):
    """The check above can fail: calls of another batch size make the compiled blocks
    recompile (here: the fixed batch of the wrapper switched off)."""
    model, _ = compiled_tiny
    wrapper = model.compiled_unet
    model.compiled_unet = wrapper.unet  # the compiled UNet called directly, any batch
    try:
        render = renderer(model, "tiny-random", ctx, settings)
        spec = {"kind": "panorama", "width": 768, "height": 256, "seed": 1}  # 5 pairs a call
        with torch.compiler.set_stance("fail_on_recompile"):
            with pytest.raises(Exception, match="(?i)recompil"):
                render({**spec, "background": {"prompt": "a"}})
    finally:
        model.compiled_unet = wrapper


def test_a_worker_with_compile_warms_up_at_its_view_batch(models, model_cache):
    """`regionfarm worker --compile` (or `compile = true`): the child gets the flag, and the
    worker compiles its UNet at REGIONFARM_VIEW_BATCH pairs before its first job."""
    import argparse

    from cli.worker_cmd import render_children
    from schemas import Settings
    from worker.main import _compile
    from worker.render import load_model

    args = argparse.Namespace(gpus=None, gpu=None, device="cpu", name=None, metrics_port=None)
    (child,) = render_children("tiny-random", argparse.Namespace(**vars(args), compile=True))
    assert child.args[-1] == "--compile"
    (plain,) = render_children("tiny-random", args)
    assert "--compile" not in plain.args
    entry = models["tiny-random"].model_copy(update={"compile": True})
    model = load_model(entry, device="cpu", cache_dir=model_cache)
    try:
        _compile(model, Settings(model_cache=model_cache, view_batch=2))
        assert model.compiled_unet.batch == 2  # guidance 1 by default: one pass per pair
        assert model.denoising_unet is model.compiled_unet
    finally:
        torch._dynamo.reset()


def test_a_worker_whose_compile_fails_takes_no_jobs_and_says_what_to_do(
    model_cache, monkeypatch, caplog
):
    import worker.main
    from schemas import Settings

    def broken(model, settings):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(worker.main, "_compile", broken)
    code = worker.main.run_render_worker(
        Settings(model_cache=model_cache),
        "tiny-random",
        device="cpu",
        node_name="t@test",
        compile_unet=True,
    )
    assert code == worker.main.EXIT_MODEL_UNAVAILABLE
    assert "no C++ compiler" in caplog.text and "without --compile" in caplog.text
