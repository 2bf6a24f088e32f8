"""Builds the random-weight test models once: `tiny-random` (SD1.5 layout) with its random
LCM-LoRA, and `tiny-random-xl` (SDXL layout: two text encoders, pooled and time conditioning)
with its random Lightning-style LoRA."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .tokenizer_vocab import ASSET_DIR as TOKENIZER_DIR

log = logging.getLogger(__name__)

BUILD_VERSION = "v1"
"""Bumped whenever a config below changes, so old caches are not reused."""
SEED = 20240314
"""Seed of the random weights: every machine builds the same model."""
NATIVE_SIZE = 256
"""Pixels; the UNet's sample_size is NATIVE_SIZE // 8."""
TEXT_GAIN = 10.0
"""Cross-attention value/output weights are scaled by this: at default init a random UNet barely
listens to its prompt, and the tiny model's images must differ visibly between prompts."""
KEY_GAIN = 4.0
"""Cross-attention keys are scaled by this: sharper attention, so each token of a prompt counts
instead of all 77 being averaged."""
EPS_GAIN = 4.0
"""The UNet's output layer is scaled by this so its noise prediction has about unit variance, as
a trained model's has (at default init it is ~0.25, and the prompt would hardly matter)."""
LORA_RANK = 4
LORA_INIT_STD = 0.05
"""Std of the random LoRA factors: large enough to change the UNet measurably, small enough to
keep its outputs in range."""

# The SD1.5 noise schedule, so the LCM grid and the noise levels are those of the real model.
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}
# SDXL's Euler schedule (the same betas; Lightning models sample it with trailing timesteps).
SDXL_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}
XL_TEXT_WIDTHS = (32, 48)
"""Hidden sizes of the two tiny text encoders (CLIP-L and OpenCLIP-bigG stand-ins). They differ
as in SDXL (768 and 1280): diffusers' single-file loader tells the two apart by width."""
XL_POOLED_DIM = 32
"""The second encoder's projection (the pooled embedding; 1280 in SDXL)."""
XL_TIME_EMBED_DIM = 8
"""Per-number embedding of the six size/crop conditioning numbers (256 in SDXL)."""
BUILTIN_MODELS = (
    "tiny-random",
    "tiny-random-lcm-lora",
    "tiny-random-xl",
    "tiny-random-xl-lightning-lora",
)


def builtin_path(name: str, cache_dir: Path) -> Path:
    """The directory of a built-in model in the cache, building it first if it is missing."""
    if name not in BUILTIN_MODELS:
        raise KeyError(
            f"unknown built-in model {name!r}; built-ins are {', '.join(BUILTIN_MODELS)}"
        )
    target = Path(cache_dir) / f"{name}-{BUILD_VERSION}"
    if (target / ".complete").exists():
        return target
    with _locked(Path(cache_dir) / f".{name}.lock"):
        if not (target / ".complete").exists():
            _build_into(name, target)
    return target


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialize builds across processes: many workers may start at once on one cache."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(name: str, target: Path) -> None:
    # Build in a temporary sibling and rename, so a crash never leaves half a model behind.
    from .runtime import quiet_libraries

    quiet_libraries()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        if name == "tiny-random":
            build_tiny_pipeline().save_pretrained(tmp)
        elif name == "tiny-random-xl":
            build_tiny_xl_pipeline().save_pretrained(tmp)
        elif name == "tiny-random-xl-lightning-lora":
            save_random_lora(tmp, tiny_xl_unet_config(), seed=SEED + 3)
        else:
            save_random_lora(tmp, tiny_unet_config(), seed=SEED + 1)
        (tmp / ".complete").write_text(BUILD_VERSION + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        log.info("built %s into %s", name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_unet_config() -> dict:
    """A 3-level UNet (two downsamplings) with cross-attention, SD1.5's block types."""
    return {
        "sample_size": NATIVE_SIZE // 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
    }


def tiny_xl_unet_config() -> dict:
    """The tiny UNet in SDXL's shape: linear projections, two transformer layers at the deepest
    level, and the text-time added conditioning (SD1.5's tiny UNet already has no attention at
    the first level, as SDXL)."""
    return {
        **tiny_unet_config(),
        "transformer_layers_per_block": (1, 1, 2),
        "cross_attention_dim": sum(XL_TEXT_WIDTHS),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": XL_TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": 6 * XL_TIME_EMBED_DIM + XL_POOLED_DIM,
    }


def tiny_vae_config() -> dict:
    """Four levels, so the latent is 1/8 of the image as in SD1.5's VAE."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": (8, 16, 32, 32),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": NATIVE_SIZE,
        "scaling_factor": 0.18215,
    }


def build_tiny_pipeline():
    """A StableDiffusionPipeline of random weights drawn from SEED."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**tiny_unet_config())
    vae = AutoencoderKL(**tiny_vae_config())
    text_encoder = sd15_text_encoder(tokenizer)
    _scale_text_attention(unet)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sd15_text_encoder(tokenizer):
    """A tiny CLIP text encoder (the SD1.5 family's one encoder), of the default init."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def xl_text_encoders(tokenizer) -> list:
    """SDXL's two tiny text encoders (CLIP-L and OpenCLIP-bigG stand-ins), of the default init."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    encoders = []
    for width, cls in zip(XL_TEXT_WIDTHS, (CLIPTextModel, CLIPTextModelWithProjection)):
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_attention_heads=4,
            num_hidden_layers=3,
            max_position_embeddings=77,
            projection_dim=XL_POOLED_DIM,
            hidden_act="quick_gelu" if cls is CLIPTextModel else "gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        encoders.append(cls(config))
    return encoders


def _scale_text_attention(unet) -> None:
    """The gains above, applied to a freshly initialised UNet."""
    import torch

    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):  # the cross-attention to the text
                module.to_k.weight.mul_(KEY_GAIN)
                module.to_v.weight.mul_(TEXT_GAIN)
                module.to_out[0].weight.mul_(TEXT_GAIN)
        unet.conv_out.weight.mul_(EPS_GAIN)
        unet.conv_out.bias.mul_(EPS_GAIN)


def build_tiny_xl_pipeline():
    """A StableDiffusionXLPipeline of random weights drawn from SEED (+2)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77)
    torch.manual_seed(SEED + 2)
    unet = UNet2DConditionModel(**tiny_xl_unet_config())
    # SDXL's VAE: the SD1.5 architecture with its own scaling, unstable in fp16.
    vae = AutoencoderKL(**{**tiny_vae_config(), "scaling_factor": 0.13025, "force_upcast": True})
    encoders = xl_text_encoders(tokenizer)
    _scale_text_attention(unet)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoders[0],
        text_encoder_2=encoders[1],
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def save_random_lora(directory: Path, unet_config: dict, *, seed: int) -> None:
    """A random LoRA on a tiny UNet's attention projections, saved as diffusers writes LoRAs."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel(**unet_config)
    unet.add_adapter(
        LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_RANK,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * LORA_INIT_STD)
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )
