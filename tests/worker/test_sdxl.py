"""The SDXL family on `tiny-random-xl`: loading, the Euler sampler against diffusers' SDXL
pipeline, per-view size/crop conditioning, pooled embeddings, single files, replaced UNets."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from schemas import ModelEntry, SpecError, encode_png_data_uri, normalize_spec, parse_spec
from worker.render import ModelUnavailable, load_model
from worker.render.conditioning import Embeds, encode_prompts, pull_toward
from worker.render.loading import make_scheduler
from worker.render.schedule import build_schedule
from worker.render.single_file import shipped_config_dir
from worker.render.tiles import tile_views
from worker.render.tiny import builtin_path

from .checkpoint_writer import save_single_file, to_original_layout
from .conftest import renderer

XL_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ["street", "inpaint", "panorama", "landscape", "landscape_palette"]


def xl_entry(**kw) -> ModelEntry:
    fields = {
        "name": "xl",
        "source": "builtin:tiny-random-xl",
        "family": "sdxl",
        "scheduler": "euler",
        "dtype": "float32",
        "native_size": 256,
        **kw,
    }
    return ModelEntry(**fields)


@pytest.fixture(scope="module")
def xl(models, model_cache):
    return load_model(models["tiny-random-xl"], device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="module")
def render_xl(xl, ctx, settings):
    return renderer(xl, "tiny-random-xl", ctx, settings)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def test_tiny_xl_is_an_sdxl_pipeline_with_euler_trailing_and_its_lora_fused(xl, model_cache):
    pipe = xl.pipe
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and xl.family == "sdxl"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.unet.config.addition_embed_type == "text_time"
    # The LoRA is fused: the UNet differs from the base weights, and no adapter is left.
    bare = load_model(xl_entry(), device="cpu", cache_dir=model_cache)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(pipe.unet.state_dict()[name], bare.pipe.unet.state_dict()[name])
    assert not any("lora" in key for key in pipe.unet.state_dict())


def test_euler_schedule_is_the_smd_table_on_a_trailing_grid(xl):
    schedule = build_schedule(xl.pipe.scheduler, 5)
    assert schedule.sampler == "euler"
    assert schedule.timesteps == (999, 919, 759, 499, 259)
    sigmas = [b / a for a, b in zip(schedule.a, schedule.b, strict=True)]
    assert [round(s, 2) for s in sigmas] == [14.61, 9.24, 4.26, 1.61, 0.72]
    assert build_schedule(xl.pipe.scheduler, 4).timesteps == (999, 749, 499, 249)


@pytest.mark.parametrize(
    ("guidance", "negative"), [(0.0, None), (3.0, None), (3.0, "blurry, dark")]
)
def test_one_view_render_matches_diffusers_sdxl_pipeline(xl, render_xl, guidance, negative):
    """Kind `image` at the native size is one view and one region: our Euler sampler (mixing
    x0 and the predicted noise) must give diffusers' Euler image, with guidance rescale."""
    from diffusers import StableDiffusionXLPipeline

    background = {"prompt": "a lighthouse at dusk"}
    if negative:
        background["negative_prompt"] = negative
    data = {"kind": "image", "seed": 11, "steps": 4, "guidance_scale": guidance}
    ours, spec = render_xl({**data, "background": background})

    pipe = StableDiffusionXLPipeline(**xl.pipe.components)
    pipe.scheduler = make_scheduler("euler", xl.pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(spec.seed)
    latents = torch.randn((1, 4, 32, 32), generator=generator, dtype=torch.float32)
    theirs = pipe(
        prompt=background["prompt"],
        negative_prompt=negative,
        height=256,
        width=256,
        num_inference_steps=4,
        guidance_scale=guidance,
        guidance_rescale=0.7,
        latents=latents,
        output_type="np",
    ).images[0]
    diff = np.abs(pixels(ours.image) - theirs)
    assert diff.max() <= 2 / 255, diff.max()
    assert theirs.std() > 0.05  # not a flat image: the comparison can fail


def test_each_view_is_conditioned_on_its_own_crop_and_the_canvas_size(xl, render_xl):
    calls = []
    unet = xl.pipe.unet
    original = unet.forward

    def recording(sample, t, encoder_hidden_states, added_cond_kwargs=None, **kw):
        calls.append(added_cond_kwargs["time_ids"].clone())
        assert added_cond_kwargs["text_embeds"].shape == (sample.shape[0], 32)
        return original(sample, t, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs, **kw)

    unet.forward = recording
    try:
        result, _ = render_xl(
            {
                "kind": "panorama",
                "width": 768,
                "height": 256,
                "seed": 1,
                "background": {"prompt": "hills"},
            }
        )
    finally:
        del unet.forward
    ids = torch.cat(calls)
    assert len(ids) == result.unet_samples
    views, _ = tile_views(32, 96, (32, 32), (16, 16))
    want = {(256.0, 768.0, v.top * 8.0, v.left * 8.0, 256.0, 768.0) for v in views}
    assert {tuple(row.tolist()) for row in ids} == want
    assert len(want) == 5  # views at left 0, 128, 256, 384, 512 pixels


def test_pooled_embeddings_are_pulled_toward_the_background_too(xl):
    embeds = encode_prompts(xl.pipe, ["a red car", "a blue house", "fog"])
    assert embeds.hidden.shape == (3, 77, 80) and embeds.pooled.shape == (3, 32)
    fg, bg = embeds[[0, 1]], embeds[[2]]
    pulled = pull_toward(fg, bg, [1.0, 0.25])
    assert torch.equal(pulled.pooled[0], fg.pooled[0])
    want = bg.pooled[0] + 0.25 * (fg.pooled[1] - bg.pooled[0])
    assert torch.allclose(pulled.pooled[1], want, atol=1e-6)
    assert torch.allclose(pulled.hidden[1], bg.hidden[0] + 0.25 * (fg.hidden[1] - bg.hidden[0]))


def test_empty_negative_prompts_are_zeros_as_in_sdxl(xl):
    negatives = encode_prompts(xl.pipe, ["", "ugly"], negative=True)
    assert not negatives.hidden[0].any() and not negatives.pooled[0].any()
    assert negatives.hidden[1].abs().sum() > 0
    assert isinstance(negatives, Embeds)


def test_every_kind_renders_on_tiny_xl(render_xl):
    left = np.zeros((256, 256), dtype=bool)
    left[:, :128] = True
    regions = [{"prompt": "a tree", "mask": encode_png_data_uri(left)}]
    for data in (
        {"kind": "image", "background": {"prompt": "a cat"}},
        {"kind": "panorama", "width": 512, "height": 256, "background": {"prompt": "a beach"}},
        {"kind": "regions", "width": 256, "height": 256, "regions": regions},
        {
            "kind": "regions",
            "width": 256,
            "height": 256,
            "regions": regions,
            "background": {"prompt": "a field"},
        },
    ):
        result, spec = render_xl({"seed": 3, **data})
        assert result.image.size == (spec.width, spec.height)
        assert pixels(result.image).std() > 0.02, data["kind"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_renders_on_tiny_xl_as_on_tiny_random(render_xl, example):
    """The examples `make demo` and `regionfarm render` run (tests/cli renders them on
    tiny-random through the command line)."""
    data = json.loads((REPO / "examples" / f"{example}.json").read_text())
    data.pop("model", None)
    steps = []
    result, spec = render_xl(data, on_step=lambda done, total: steps.append((done, total)))
    assert result.image.size == (data["width"], data["height"]) == (spec.width, spec.height)
    assert steps[-1] == (5, 5) and result.seed == data["seed"]
    assert pixels(result.image).std() > 0.02


def test_wrapped_xl_panorama_has_no_seam(render_xl):
    data = {"kind": "panorama", "width": 768, "height": 128, "seed": 2, "wrap": "horizontal"}
    result, _ = render_xl({**data, "background": {"prompt": "a city skyline"}})
    image = pixels(result.image)
    seam = np.abs(image[:, 0] - image[:, -1]).mean()
    typical = np.mean([np.abs(image[:, k] - image[:, k + 1]).mean() for k in range(0, 760, 8)])
    assert seam <= 2 * typical, (seam, typical)


def test_fp16_sdxl_decodes_with_an_fp32_vae(model_cache):
    model = load_model(xl_entry(dtype="float16"), device="cpu", cache_dir=model_cache)
    assert model.pipe.unet.dtype == torch.float16
    assert model.pipe.text_encoder_2.dtype == torch.float16
    assert model.pipe.vae.dtype == torch.float32  # SDXL's VAE overflows in fp16


def test_the_baseline_method_is_refused_for_sdxl_models_naming_the_field(ctx):
    spec = parse_spec(
        {
            "model": "tiny-random-xl",
            "kind": "image",
            "method": "multidiffusion",
            "background": {"prompt": "x"},
        },
        ctx,
    )
    with pytest.raises(SpecError) as info:
        normalize_spec(spec, ctx)
    assert info.value.details[0]["loc"] == ["method"]


def test_a_replacement_unet_file_is_loaded_over_the_sources(model_cache, tmp_path):
    """SDXL-Lightning ships its distilled UNet as one diffusers-layout file."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from worker.render.tiny import tiny_unet_config, tiny_xl_unet_config

    torch.manual_seed(5)
    other = UNet2DConditionModel(**tiny_xl_unet_config())
    save_file(other.state_dict(), str(tmp_path / "unet.safetensors"))
    model = load_model(
        xl_entry(unet=str(tmp_path / "unet.safetensors")), device="cpu", cache_dir=model_cache
    )
    for key, tensor in other.state_dict().items():
        assert torch.equal(model.pipe.unet.state_dict()[key], tensor), key
    wrong = UNet2DConditionModel(**tiny_unet_config())
    save_file(wrong.state_dict(), str(tmp_path / "sd15-unet.safetensors"))
    with pytest.raises(ModelUnavailable, match="does not match the source's UNet"):
        load_model(
            xl_entry(unet=str(tmp_path / "sd15-unet.safetensors")),
            device="cpu",
            cache_dir=model_cache,
        )


def test_a_hub_file_that_is_not_cached_offline_is_model_unavailable(model_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = xl_entry(unet="nobody/no-such-repo/unet.safetensors")
    with pytest.raises(ModelUnavailable, match="repo nobody/no-such-repo, file unet.safetensors"):
        load_model(entry, device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="module")
def xl_checkpoint(model_cache, tmp_path_factory) -> tuple[Path, object]:
    """The tiny XL model (no LoRA) as one original-layout file, its configs next to it."""
    base = load_model(xl_entry(), device="cpu", cache_dir=model_cache)
    directory = tmp_path_factory.mktemp("xl-single-file")
    path = directory / "xl.safetensors"
    pipe = base.pipe
    save_single_file(
        path, to_original_layout(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
    )
    shutil.copytree(
        builtin_path("tiny-random-xl", model_cache),
        directory / "xl.config",
        ignore=shutil.ignore_patterns("*.safetensors", ".complete"),
    )
    return path, base


def test_sdxl_single_file_loads_back_every_weight_unchanged(xl_checkpoint, model_cache):
    path, base = xl_checkpoint
    loaded = load_model(xl_entry(source=str(path)), device="cpu", cache_dir=model_cache)
    assert type(loaded.pipe).__name__ == "StableDiffusionXLPipeline"
    for part in XL_PARTS:
        got, want = getattr(loaded.pipe, part).state_dict(), getattr(base.pipe, part).state_dict()
        assert got.keys() == want.keys(), part
        assert all(torch.equal(got[k], want[k]) for k in want), part
    assert loaded.pipe.tokenizer_2.name_or_path == str(path.parent / "xl.config" / "tokenizer_2")


def test_an_sd15_checkpoint_named_sdxl_says_so(model_cache, tmp_path):
    base = load_model(
        ModelEntry(name="t", source="builtin:tiny-random", dtype="float32"),
        device="cpu",
        cache_dir=model_cache,
    )
    path = tmp_path / "sd15.safetensors"
    save_single_file(
        path, to_original_layout(base.pipe.unet, base.pipe.vae, base.pipe.text_encoder)
    )
    with pytest.raises(ModelUnavailable, match='set family = "sd15"'):
        load_model(xl_entry(source=str(path)), device="cpu", cache_dir=model_cache)


def test_shipped_sdxl_configs_are_full_size_and_the_mapping_is_what_diffusers_reads():
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_open_clip_checkpoint,
        infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with tempfile.TemporaryDirectory() as scratch:
        configs = shipped_config_dir("sdxl", Path(scratch))
        unet_config = UNet2DConditionModel.load_config(configs, subfolder="unet")
        vae_config = AutoencoderKL.load_config(configs, subfolder="vae")
        text_config = CLIPTextConfig.from_pretrained(configs, subfolder="text_encoder")
        text_config_2 = CLIPTextConfig.from_pretrained(configs, subfolder="text_encoder_2")
        scheduler = EulerDiscreteScheduler.from_pretrained(configs, subfolder="scheduler")
    assert make_scheduler("euler", scheduler.config).config.timestep_spacing == "trailing"
    with torch.device("meta"):
        modules = (
            UNet2DConditionModel.from_config(unet_config),
            AutoencoderKL.from_config(vae_config),
            CLIPTextModel(text_config),
            CLIPTextModelWithProjection(text_config_2),
        )
    millions = [round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for m in modules]
    assert millions == [2567.5, 83.7, 123.1, 694.7]  # SDXL base's UNet, VAE, CLIP-L, bigG
    state = to_original_layout(*modules)
    assert infer_diffusers_model_type(state) == "xl_base"
    for key in (
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight",
        "conditioner.embedders.1.model.text_projection",
    ):
        assert key in state, key
    assert state["conditioner.embedders.1.model.positional_embedding"].shape == (77, 1280)
    unet, _, _, text_encoder_2 = modules
    converted = convert_ldm_unet_checkpoint(state, unet.config)
    want = {key: tuple(t.shape) for key, t in unet.state_dict().items()}
    assert {key: tuple(t.shape) for key, t in converted.items()} == want
    converted = convert_open_clip_checkpoint(
        text_encoder_2, state, prefix="conditioner.embedders.1.model."
    )
    want = {key: tuple(t.shape) for key, t in text_encoder_2.state_dict().items()}
    assert {key: tuple(t.shape) for key, t in converted.items()} == want
