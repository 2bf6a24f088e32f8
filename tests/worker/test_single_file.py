"""Single-file checkpoints: the tiny model written in the original SD layout loads back exactly."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from schemas import ModelEntry, normalize_spec, parse_spec
from worker.render import ModelUnavailable, load_inputs, load_model, render_job
from worker.render.single_file import find_config_dir, find_tokenizer, shipped_config_dir
from worker.render.tiny import builtin_path
from worker.render.tokenizer_vocab import ASSET_DIR as TOKENIZER_DIR

from .checkpoint_writer import save_single_file, to_original_layout

PARTS = ("unet", "vae", "text_encoder")


def entry(**kw) -> ModelEntry:
    return ModelEntry(**{"name": "t", "source": "builtin:tiny-random", "dtype": "float32", **kw})


def copy_configs(model_dir: Path, target: Path) -> Path:
    """A diffusers directory without its weights: configs, scheduler and tokenizer only."""
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.safetensors", ".complete"))
    return target


@pytest.fixture(scope="module")
def base(model_cache):
    """The tiny model without its LoRA: the weights a checkpoint file holds."""
    return load_model(entry(), device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="module")
def checkpoint(base, model_cache, tmp_path_factory) -> Path:
    """`tiny.safetensors` in the original layout, its configs in `tiny.config/` next to it."""
    directory = tmp_path_factory.mktemp("single-file")
    path = directory / "tiny.safetensors"
    pipe = base.pipe
    save_single_file(path, to_original_layout(pipe.unet, pipe.vae, pipe.text_encoder))
    copy_configs(builtin_path("tiny-random", model_cache), directory / "tiny.config")
    return path


def alone(checkpoint: Path, directory: Path) -> Path:
    """The checkpoint copied into a directory of its own, with no configs next to it."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(checkpoint, directory / checkpoint.name))


def assert_same_weights(got, want) -> None:
    for part in PARTS:
        got_state = getattr(got.pipe, part).state_dict()
        want_state = getattr(want.pipe, part).state_dict()
        assert got_state.keys() == want_state.keys(), part
        unequal = [key for key in want_state if not torch.equal(got_state[key], want_state[key])]
        assert not unequal, f"{part}: {unequal[:3]}"


def test_checkpoint_loads_back_every_weight_unchanged(base, checkpoint, model_cache):
    loaded = load_model(entry(source=str(checkpoint)), device="cpu", cache_dir=model_cache)
    assert_same_weights(loaded, base)
    assert type(loaded.pipe.scheduler).__name__ == "LCMScheduler"
    assert loaded.pipe.tokenizer.name_or_path == str(
        checkpoint.parent / "tiny.config" / "tokenizer"
    )


def test_checkpoint_renders_the_same_bytes_as_the_diffusers_model(
    tiny, checkpoint, model_cache, ctx, settings
):
    # The served tiny-random entry (LoRA fused, LCM) with only its source changed.
    single = load_model(
        tiny.entry.model_copy(update={"source": str(checkpoint)}),
        device="cpu",
        cache_dir=model_cache,
    )
    data = {
        "kind": "image",
        "model": "tiny-random",
        "width": 128,
        "height": 128,
        "steps": 2,
        "seed": 3,
        "background": {"prompt": "a photo of the alps"},
    }
    spec, _ = normalize_spec(parse_spec(data, ctx), ctx)
    inputs = load_inputs(spec, max_pixels=settings.max_pixels)
    want = render_job(tiny, spec, inputs).image
    got = render_job(single, spec, inputs).image
    assert got.size == (128, 128)
    assert got.tobytes() == want.tobytes()


def test_lora_from_a_single_safetensors_file_fuses_like_the_builtin(model_cache):
    lora_file = (
        builtin_path("tiny-random-lcm-lora", model_cache) / "pytorch_lora_weights.safetensors"
    )
    from_file = load_model(entry(lora=str(lora_file)), device="cpu", cache_dir=model_cache)
    builtin = load_model(
        entry(lora="builtin:tiny-random-lcm-lora"), device="cpu", cache_dir=model_cache
    )
    want = builtin.pipe.unet.state_dict()
    got = from_file.pipe.unet.state_dict()
    assert all(torch.equal(got[key], want[key]) for key in want)


def test_missing_and_unreadable_files_are_model_unavailable(checkpoint, model_cache, tmp_path):
    missing = tmp_path / "gone.safetensors"
    with pytest.raises(
        ModelUnavailable, match=f"single-file weights {re.escape(str(missing))} do not exist"
    ):
        load_model(entry(source=str(missing)), device="cpu", cache_dir=model_cache)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    for bad in (garbage, truncated):
        with pytest.raises(ModelUnavailable, match=f"{re.escape(str(bad))} is not a readable"):
            load_model(entry(source=str(bad)), device="cpu", cache_dir=model_cache)


@pytest.mark.parametrize(
    "edit,needle",
    [
        ("drop_vae", r"has no VAE \(first_stage_model\.\*\) weights"),
        ("sdxl_keys", 'an SDXL checkpoint: set family = "sdxl"'),
    ],
)
def test_incomplete_or_foreign_checkpoints_say_what_is_wrong(
    base, model_cache, tmp_path, edit, needle
):
    pipe = base.pipe
    state = to_original_layout(pipe.unet, pipe.vae, pipe.text_encoder)
    if edit == "drop_vae":
        state = {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}
    else:
        state["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = (
            torch.ones(4)
        )
    path = tmp_path / "odd.safetensors"
    save_single_file(path, state)
    with pytest.raises(ModelUnavailable, match=needle):
        load_model(entry(source=str(path)), device="cpu", cache_dir=model_cache)


@pytest.mark.parametrize(
    "change,needle",
    [
        # Other shapes: diffusers refuses the weights.
        ({"layers_per_block": 2}, "does not load with the configs in"),
        # More layers of the same shapes: weights the checkpoint does not have.
        ({"transformer_layers_per_block": 2}, "does not load with the configs in"),
    ],
)
def test_configs_of_another_architecture_are_model_unavailable(
    checkpoint, model_cache, tmp_path, change, needle
):
    path = alone(checkpoint, tmp_path)
    configs = copy_configs(checkpoint.parent / "tiny.config", tmp_path / "config")
    unet_config = configs / "unet" / "config.json"
    unet_config.write_text(json.dumps({**json.loads(unet_config.read_text()), **change}))
    with pytest.raises(ModelUnavailable, match=f"{needle} {re.escape(str(configs))}"):
        load_model(entry(source=str(path)), device="cpu", cache_dir=model_cache)


def test_weights_left_on_the_meta_device_are_model_unavailable(base, tmp_path):
    from worker.render.single_file import _check_complete

    pipe = SimpleNamespace(
        unet=base.pipe.unet, vae=base.pipe.vae, text_encoder=torch.nn.Linear(2, 2)
    )
    _check_complete(pipe, PARTS, tmp_path / "m.safetensors", "the configs")
    pipe.text_encoder = torch.nn.Linear(2, 2, device="meta")
    with pytest.raises(ModelUnavailable, match="lacks 2 text_encoder weights for the configs"):
        _check_complete(pipe, PARTS, tmp_path / "m.safetensors", "the configs")


def test_shipped_configs_load_with_a_tokenizer_next_to_the_checkpoint(
    base, checkpoint, model_cache, tmp_path, monkeypatch
):
    from worker.render import single_file

    # The shipped configs stood in for by the tiny model's, flat as the package lays them out.
    tiny_configs = checkpoint.parent / "tiny.config"
    flat = tmp_path / "assets" / "sd15-config"
    flat.mkdir(parents=True)
    shutil.copy(tiny_configs / "model_index.json", flat)
    for subfolder, filename in single_file.FAMILIES["sd15"].configs.items():
        shutil.copy(tiny_configs / subfolder / filename, flat / f"{subfolder}.json")
    monkeypatch.setattr(single_file, "ASSET_DIR", tmp_path / "assets")
    path = alone(checkpoint, tmp_path / "models")
    # A bare vocabulary (vocab.json, merges.txt), with no tokenizer_config.json.
    shutil.copytree(TOKENIZER_DIR, path.parent / "tokenizer")
    loaded = load_model(entry(source=str(path)), device="cpu", cache_dir=model_cache)
    assert_same_weights(loaded, base)
    assert loaded.pipe.tokenizer.name_or_path == str(path.parent / "tokenizer")
    assert loaded.pipe.tokenizer.model_max_length == 77  # prompts pad to the text positions


def test_shipped_configs_need_the_real_tokenizer(checkpoint, model_cache, tmp_path):
    path = alone(checkpoint, tmp_path)
    with pytest.raises(ModelUnavailable, match="no tokenizer found") as info:
        load_model(entry(source=str(path)), device="cpu", cache_dir=model_cache)
    assert str(tmp_path / "tokenizer") in str(info.value)
    assert str(model_cache / "sd15-tokenizer") in str(info.value)
    # A tokenizer next to the checkpoint is found; the tiny one cannot serve the full-size
    # text encoder of the shipped configs.
    copy_configs(checkpoint.with_name("tiny.config") / "tokenizer", tmp_path / "tokenizer")
    with pytest.raises(
        ModelUnavailable,
        match="has 758 tokens but the text encoder of the shipped sd15 configs has 49408",
    ):
        load_model(entry(source=str(path)), device="cpu", cache_dir=model_cache)


def test_config_dir_next_to_the_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    assert find_config_dir(path) is None
    for name in ("config", "model.config"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text("{}")
    assert find_config_dir(path) == tmp_path / "model.config"
    assert find_config_dir(tmp_path / "other.safetensors") == tmp_path / "config"
    (tmp_path / "broken.config").mkdir()
    with pytest.raises(ModelUnavailable, match="broken.config .* has no model_index.json"):
        find_config_dir(tmp_path / "broken.safetensors")


def test_tokenizer_is_taken_next_to_the_checkpoint_then_configs_then_cache(tmp_path):
    path = tmp_path / "models" / "model.safetensors"
    configs, cache = tmp_path / "models" / "model.config", tmp_path / "cache"
    order = [path.parent / "tokenizer", configs / "tokenizer", cache / "sd15-tokenizer"]
    for directory in reversed(order):
        directory.mkdir(parents=True)
        assert find_tokenizer(path, "sd15", configs, cache) == directory


def test_shipped_sd15_configs_are_full_size_and_the_mapping_is_what_diffusers_reads():
    from diffusers import AutoencoderKL, LCMScheduler, PNDMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    with tempfile.TemporaryDirectory() as scratch:
        configs = shipped_config_dir("sd15", Path(scratch))
        assert json.loads((configs / "model_index.json").read_text())["_class_name"] == (
            "StableDiffusionPipeline"
        )
        unet_config = UNet2DConditionModel.load_config(configs, subfolder="unet")
        vae_config = AutoencoderKL.load_config(configs, subfolder="vae")
        text_config = CLIPTextConfig.from_pretrained(configs, subfolder="text_encoder")
        scheduler = PNDMScheduler.from_pretrained(configs, subfolder="scheduler")
    assert LCMScheduler.from_config(scheduler.config).config.beta_schedule == "scaled_linear"
    # Meta tensors: the full-size models' names and shapes, no memory for their weights.
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text_encoder = CLIPTextModel(text_config)
    millions = [round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for m in (unet, vae)]
    assert millions == [859.5, 83.7]  # SD1.5's UNet and VAE
    assert (text_config.hidden_size, text_config.num_hidden_layers) == (768, 12)

    state = to_original_layout(unet, vae, text_encoder)
    assert infer_diffusers_model_type(state) == "v1"
    # Names as in the released SD1.5 checkpoints.
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    for key in (
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.encoder.down.0.downsample.conv.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
    ):
        assert key in state, key
    # diffusers' own converters map every name back onto the module, with its shape.
    converted = {
        "unet": convert_ldm_unet_checkpoint(state, unet.config),
        "vae": convert_ldm_vae_checkpoint(state, vae.config),
        "text_encoder": {
            # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` in its names).
            key if hasattr(text_encoder, "text_model") else key.removeprefix("text_model."): t
            for key, t in convert_ldm_clip_checkpoint(state).items()
            if not key.endswith("position_ids")  # a buffer the module no longer saves
        },
    }
    for part, module in zip(PARTS, (unet, vae, text_encoder), strict=True):
        want = {key: tuple(t.shape) for key, t in module.state_dict().items()}
        got = {key: tuple(t.shape) for key, t in converted[part].items()}
        assert got == want, part
