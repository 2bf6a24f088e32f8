"""Loading through the same code path as a real model: directory, LoRA fused, errors, cache."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from schemas import ModelEntry
from worker.render import ModelUnavailable, load_model
from worker.render.tiny import builtin_path

LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


def entry(**kw) -> ModelEntry:
    return ModelEntry(**{"name": "t", "source": "builtin:tiny-random", "dtype": "float32", **kw})


def test_lora_is_fused_into_the_unet_at_its_scale(model_cache):
    directory = builtin_path("tiny-random", model_cache)
    base = load_model(entry(source=str(directory)), device="cpu", cache_dir=model_cache)
    fused = load_model(
        entry(lora="builtin:tiny-random-lcm-lora"), device="cpu", cache_dir=model_cache
    )
    half = load_model(
        entry(lora="builtin:tiny-random-lcm-lora", lora_scale=0.5),
        device="cpu",
        cache_dir=model_cache,
    )
    lora = load_file(
        builtin_path("tiny-random-lcm-lora", model_cache) / "pytorch_lora_weights.safetensors"
    )
    a = next(v for k, v in lora.items() if LAYER in k and "lora_A" in k)
    b = next(v for k, v in lora.items() if LAYER in k and "lora_B" in k)
    w0 = base.pipe.unet.get_submodule(LAYER).weight
    w1 = fused.pipe.unet.get_submodule(LAYER).weight
    w_half = half.pipe.unet.get_submodule(LAYER).weight
    assert torch.allclose(w1 - w0, b @ a, atol=1e-5)
    assert torch.allclose(w_half - w0, 0.5 * (b @ a), atol=1e-5)
    # Fused and unloaded: plain Linear layers, no adapter left to slow every call.
    assert not any("lora" in name for name, _ in fused.pipe.unet.named_modules())
    assert type(fused.pipe.scheduler).__name__ == "LCMScheduler"


def test_loaded_model_is_fp32_on_cpu_and_counts_loads(model_cache):
    from worker.render import loading

    before = loading.LOAD_COUNT
    model = load_model(entry(), device="cpu", cache_dir=model_cache)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert loading.LOAD_COUNT == before + 1
    assert set(model.versions) == {"torch", "diffusers", "transformers"}


@pytest.mark.parametrize(
    "source,needle",
    [
        ("nobody/no-such-model-here", "cannot load nobody/no-such-model-here"),
        ("/does/not/exist", "does not exist"),
        ("/models/some-checkpoint.safetensors", "single-file"),
    ],
)
def test_unavailable_models_raise_model_unavailable_with_the_reason(model_cache, source, needle):
    with pytest.raises(ModelUnavailable, match=needle):
        load_model(entry(source=source), device="cpu", cache_dir=model_cache)


def test_cuda_requested_without_cuda_is_a_clear_error(model_cache):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA (GPU machines test the CUDA path instead)")
    with pytest.raises(ModelUnavailable, match="CUDA is not available"):
        load_model(entry(), device="cuda:0", cache_dir=model_cache)


def test_builtin_models_are_built_once_even_by_concurrent_processes(tmp_path):
    code = (
        "import sys; from pathlib import Path; from worker.render.tiny import builtin_path;"
        "print(builtin_path('tiny-random-lcm-lora', Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = {p.communicate(timeout=120)[0].decode().strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(outs) == 1
    built = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in built] == ["tiny-random-lcm-lora-v1"]
    marker = built[0] / ".complete"
    stamp = marker.stat().st_mtime_ns
    builtin_path("tiny-random-lcm-lora", tmp_path)
    assert marker.stat().st_mtime_ns == stamp  # found in the cache, not rebuilt


def test_tiny_vae_from_a_directory_decodes_the_render(model_cache, tmp_path, ctx, settings):
    from diffusers import AutoencoderTiny

    from schemas import normalize_spec, parse_spec
    from worker.render import load_inputs, render_job

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).save_pretrained(tmp_path / "taesd")
    plain = load_model(entry(), device="cpu", cache_dir=model_cache)
    with_tiny = load_model(
        entry(tiny_vae=str(tmp_path / "taesd")), device="cpu", cache_dir=model_cache
    )
    assert type(with_tiny.tiny_vae).__name__ == "AutoencoderTiny"
    spec, _ = normalize_spec(
        parse_spec(
            {"kind": "image", "model": "tiny-random", "seed": 1, "background": {"prompt": "a cat"}},
            ctx,
        ),
        ctx,
    )
    inputs = load_inputs(spec, max_pixels=settings.max_pixels)
    a = render_job(plain, spec, inputs).image
    b = render_job(with_tiny, spec, inputs).image
    assert a.size == b.size == (256, 256) and a.tobytes() != b.tobytes()
