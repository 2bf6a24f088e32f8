"""Single-file checkpoints in the original Stable Diffusion layout: key mapping, offline loading."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ModelUnavailable

ASSET_DIR = Path(__file__).parent / "assets"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
XL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
"""SDXL's first text encoder (CLIP ViT-L), in the transformers layout as in SD1.5."""
XL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
"""SDXL's second text encoder (OpenCLIP ViT-bigG), in open_clip's own layout."""
CONFIG_DIR_NAMES = ("{stem}.config", "config")
"""Config directories looked for next to a checkpoint, in order (diffusers layout)."""
CACHE_TOKENIZER_DIR = "{family}-{subfolder}"
"""A tokenizer in the model cache, shared by every checkpoint of a family."""


@dataclass(frozen=True)
class Family:
    """How one architecture family is loaded from a single file."""

    pipeline: str  # the diffusers pipeline class
    config_asset: str  # directory under assets/ with the full-size configs, flat
    configs: dict[str, str]  # pipeline subfolder -> the config file diffusers reads in it
    tokenizers: tuple[str, ...]  # tokenizer subfolders (SDXL has two)
    parts: dict[str, str]  # key prefix -> what it holds; a checkpoint must have them all
    foreign: dict[str, str]  # key prefix of another family -> what to tell the user
    modules: tuple[str, ...] = ("unet", "vae", "text_encoder")  # what the file must fill
    pipeline_kwargs: tuple[tuple[str, Any], ...] = ()  # extra arguments of the pipeline class


FAMILIES: dict[str, Family] = {
    "sd15": Family(
        pipeline="StableDiffusionPipeline",
        config_asset="sd15-config",
        configs={
            "unet": "config.json",
            "vae": "config.json",
            "text_encoder": "config.json",
            "scheduler": "scheduler_config.json",
        },
        tokenizers=("tokenizer",),
        parts={UNET_PREFIX: "UNet", VAE_PREFIX: "VAE", CLIP_PREFIX: "CLIP text encoder"},
        foreign={
            "conditioner.embedders.": 'an SDXL checkpoint: set family = "sdxl"',
            "cond_stage_model.model.": "an SD2.x checkpoint (OpenCLIP text encoder), not supported",
        },
        pipeline_kwargs=(
            ("safety_checker", None),
            ("feature_extractor", None),
            ("requires_safety_checker", False),
        ),
    ),
    "sdxl": Family(
        pipeline="StableDiffusionXLPipeline",
        config_asset="sdxl-config",
        configs={
            "unet": "config.json",
            "vae": "config.json",
            "text_encoder": "config.json",
            "text_encoder_2": "config.json",
            "scheduler": "scheduler_config.json",
        },
        tokenizers=("tokenizer", "tokenizer_2"),
        parts={
            UNET_PREFIX: "UNet",
            VAE_PREFIX: "VAE",
            XL_CLIP_PREFIX: "CLIP text encoder",
            XL_OPENCLIP_PREFIX: "OpenCLIP text encoder",
        },
        foreign={
            "cond_stage_model.": 'an SD1.x/SD2.x checkpoint: set family = "sd15" for SD1.x',
            "conditioner.embedders.0.model.": "an SDXL refiner checkpoint, not supported",
        },
        modules=("unet", "vae", "text_encoder", "text_encoder_2"),
        pipeline_kwargs=(("add_watermarker", False),),
    ),
}
"""Families that load from single files: their pipeline, configs, tokenizers and the parts a
checkpoint must hold. Each tokenizer `tokenizer<N>` belongs to the encoder `text_encoder<N>`."""

# --- key mapping: diffusers module state dicts -> the original (LDM) checkpoint layout ---------

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_VAE_CONV_1X1 = ("q.weight", "k.weight", "v.weight", "proj_out.weight")
"""The original VAE's attention projections are 1x1 convolutions, diffusers' are linear."""

Rename = tuple[str, str, dict[str, str]]  # (diffusers prefix, original prefix, inner renames)


def to_original_layout(unet, vae, text_encoder, text_encoder_2=None) -> dict[str, torch.Tensor]:
    """The modules' weights under the original checkpoint's names, as users download them and
    as diffusers' single-file loader reads them back: SD1.5's, or SDXL's when the second text
    encoder is given. Works on meta tensors too."""
    state: dict[str, torch.Tensor] = {}
    state.update(_renamed(unet.state_dict(), _unet_renames(unet), UNET_PREFIX, "UNet"))
    for key, tensor in _renamed(vae.state_dict(), _vae_renames(vae), VAE_PREFIX, "VAE").items():
        if key.endswith(_VAE_CONV_1X1) and ".mid.attn_1." in key and tensor.ndim == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)
        state[key] = tensor
    clip_prefix = CLIP_PREFIX if text_encoder_2 is None else XL_CLIP_PREFIX
    for key, tensor in text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel; the original names keep `text_model.`.
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        state[clip_prefix + name] = tensor
    # The original layout carries the position ids (a persistent buffer in older transformers).
    embedding = text_encoder.get_input_embeddings().weight
    positions = text_encoder.config.max_position_embeddings
    ids_key = f"{clip_prefix}text_model.embeddings.position_ids"
    state.setdefault(ids_key, torch.arange(positions, device=embedding.device)[None])
    if text_encoder_2 is not None:
        state.update(_open_clip_layout(text_encoder_2, XL_OPENCLIP_PREFIX))
    return state


_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _open_clip_layout(encoder, prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection in open_clip's names: the token and position embeddings
    at the top, `transformer.resblocks.N` with q, k and v stacked into one `in_proj`, and the
    projection as a (width, dim) matrix, the transpose of the linear layer's weight."""
    weights = {k.removeprefix("text_model."): t for k, t in encoder.state_dict().items()}
    state = {
        prefix + "token_embedding.weight": weights.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": weights.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": weights.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": weights.pop("final_layer_norm.bias"),
        prefix + "text_projection": weights.pop("text_projection.weight").T,
    }
    weights.pop("embeddings.position_ids", None)
    for n in range(encoder.config.num_hidden_layers):
        old, new = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            state[f"{new}attn.in_proj_{kind}"] = torch.cat(
                [weights.pop(f"{old}self_attn.{p}_proj.{kind}") for p in "qkv"]
            )
            for ours, theirs in _OPEN_CLIP_LAYER.items():
                state[f"{new}{theirs}.{kind}"] = weights.pop(f"{old}{ours}.{kind}")
    if weights:
        raise ValueError(
            f"text encoder weights with no open_clip name: {', '.join(list(weights)[:5])}; add "
            "them to the mapping in worker/render/single_file.py"
        )
    return state


def save_single_file(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint as one `.safetensors` file (atomically: never half a file)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {key: tensor.detach().contiguous() for key, tensor in state_dict.items()}
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _unet_renames(unet) -> list[Rename]:
    """The original UNet's flat block numbering: input_blocks counts every resnet(+attention)
    and every downsampler in order; output_blocks counts every up-block layer, and the
    upsampler sits after the attention of the block's last layer."""
    renames: list[Rename] = [
        ("conv_in.", "input_blocks.0.0.", {}),
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("class_embedding.linear_1.", "label_emb.0.0.", {}),
        ("class_embedding.linear_2.", "label_emb.0.2.", {}),
        ("add_embedding.linear_1.", "label_emb.0.0.", {}),
        ("add_embedding.linear_2.", "label_emb.0.2.", {}),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
    ]
    index = 1
    for b, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            renames.append(
                (f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{index}.0.", _UNET_RESNET)
            )
            renames.append((f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{index}.1.", {}))
            index += 1
        if block.downsamplers is not None:
            renames.append(
                (f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", {})
            )
            index += 1
    # The middle block alternates resnet, attention, resnet, ...
    mid = unet.mid_block
    for j in range(len(mid.resnets) if mid is not None else 0):
        renames.append((f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.", _UNET_RESNET))
    for j in range(len(getattr(mid, "attentions", ()))):
        renames.append((f"mid_block.attentions.{j}.", f"middle_block.{2 * j + 1}.", {}))
    index = 0
    for b, block in enumerate(unet.up_blocks):
        has_attention = hasattr(block, "attentions")
        for j in range(len(block.resnets)):
            renames.append(
                (f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{index}.0.", _UNET_RESNET)
            )
            renames.append((f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{index}.1.", {}))
            index += 1
        if block.upsamplers is not None:
            slot = 2 if has_attention else 1
            renames.append(
                (f"up_blocks.{b}.upsamplers.0.conv.", f"output_blocks.{index - 1}.{slot}.conv.", {})
            )
    return renames


def _vae_renames(vae) -> list[Rename]:
    """The original VAE numbers the decoder's up blocks from the lowest resolution up, the
    reverse of diffusers, and names the mid block's two resnets block_1 and block_2."""
    renames: list[Rename] = [
        ("quant_conv.", "quant_conv.", {}),
        ("post_quant_conv.", "post_quant_conv.", {}),
    ]
    for side in ("encoder", "decoder"):
        renames += [
            (f"{side}.conv_in.", f"{side}.conv_in.", {}),
            (f"{side}.conv_out.", f"{side}.conv_out.", {}),
            (f"{side}.conv_norm_out.", f"{side}.norm_out.", {}),
            (f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", _VAE_ATTENTION),
        ]
        for j in range(len(getattr(vae, side).mid_block.resnets)):
            renames.append(
                (f"{side}.mid_block.resnets.{j}.", f"{side}.mid.block_{j + 1}.", _VAE_RESNET)
            )
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            renames.append(
                (
                    f"encoder.down_blocks.{i}.resnets.{j}.",
                    f"encoder.down.{i}.block.{j}.",
                    _VAE_RESNET,
                )
            )
        renames.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", {})
        )
    levels = len(vae.decoder.up_blocks)
    for i, block in enumerate(vae.decoder.up_blocks):
        level = levels - 1 - i
        for j in range(len(block.resnets)):
            renames.append(
                (
                    f"decoder.up_blocks.{i}.resnets.{j}.",
                    f"decoder.up.{level}.block.{j}.",
                    _VAE_RESNET,
                )
            )
        renames.append(
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{level}.upsample.", {})
        )
    return renames


def _renamed(
    state: dict[str, torch.Tensor], renames: list[Rename], prefix: str, what: str
) -> dict[str, torch.Tensor]:
    # Longest prefix first, so a more specific entry always wins over a shorter one it extends.
    ordered = sorted(renames, key=lambda rename: len(rename[0]), reverse=True)
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in state.items():
        for old, new, inner in ordered:
            if key.startswith(old):
                out[prefix + new + _rename_inner(key[len(old) :], inner)] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"{what} weights with no original-layout name: {', '.join(unmapped[:5])}"
            f"{' ...' if len(unmapped) > 5 else ''}; add their block to the mapping in "
            "worker/render/single_file.py"
        )
    return out


def _rename_inner(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


# --- loading ------------------------------------------------------------------------------------


def family_of(name: str) -> Family:
    """The family's single-file recipe, or ModelUnavailable naming the ones there are."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelUnavailable(
            f"single-file checkpoints of family {name} are not supported yet (supported: "
            f"{', '.join(FAMILIES)}); convert it to a diffusers directory or name a hub id"
        ) from None


def find_config_dir(checkpoint: Path) -> Path | None:
    """`<stem>.config/` or `config/` next to the checkpoint (a diffusers-layout directory:
    model_index.json and each component's config), or None for the shipped configs."""
    for pattern in CONFIG_DIR_NAMES:
        candidate = checkpoint.parent / pattern.format(stem=checkpoint.stem)
        if not candidate.is_dir():
            continue
        if not (candidate / "model_index.json").is_file():
            raise ModelUnavailable(
                f"config directory {candidate} (next to {checkpoint.name}) has no "
                "model_index.json: give it the diffusers layout (model_index.json, unet/, vae/, "
                "text_encoder/, scheduler/) or remove it to use the shipped configs"
            )
        return candidate
    return None


def shipped_config_dir(family: str, target: Path) -> Path:
    """Assemble the family's shipped full-size configs into a diffusers-layout directory.

    They are packaged flat (`unet.json`, ...) since the package data holds one directory
    level; no tokenizer is shipped (see `find_tokenizer`)."""
    spec = family_of(family)
    source = ASSET_DIR / spec.config_asset
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "model_index.json", target / "model_index.json")
    for subfolder, filename in spec.configs.items():
        (target / subfolder).mkdir(exist_ok=True)
        shutil.copyfile(source / f"{subfolder}.json", target / subfolder / filename)
    return target


def find_tokenizer(
    checkpoint: Path,
    family: str,
    config_dir: Path | None,
    cache_dir: Path | None,
    subfolder: str = "tokenizer",
) -> Path:
    """The tokenizer directory for a checkpoint, from the first of: `<subfolder>/` next to the
    checkpoint, the config directory's `<subfolder>/`, `<family>-<subfolder>/` in the model
    cache. The project ships only a tiny vocabulary, and a real checkpoint needs its real one
    (CLIP's 49408-token BPE for sd15), which cannot be fetched offline."""
    candidates = [checkpoint.parent / subfolder]
    if config_dir is not None:
        candidates.append(config_dir / subfolder)
    if cache_dir is not None:
        name = CACHE_TOKENIZER_DIR.format(family=family, subfolder=subfolder)
        candidates.append(Path(cache_dir) / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ModelUnavailable(
        f"single-file checkpoint {checkpoint}: no {subfolder} found; put the model's "
        f"{subfolder} (vocab.json and merges.txt, as in a diffusers `{subfolder}/` folder) in one "
        f"of: {', '.join(str(c) for c in candidates)}"
    )


def check_checkpoint(path: Path, family: str) -> None:
    """Fail early, naming what is wrong, on a file that is not a complete checkpoint of
    `family` (reads only the header, not the weights)."""
    from safetensors import safe_open

    spec = family_of(family)
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # SafetensorError, OSError: truncated, not safetensors, unreadable
        raise ModelUnavailable(
            f"single-file checkpoint {path} is not a readable .safetensors file ({exc}); "
            "download it again or check the path"
        ) from exc
    for prefix, what in spec.foreign.items():
        if any(key.startswith(prefix) for key in keys):
            raise ModelUnavailable(f"single-file checkpoint {path} looks like {what}")
    missing = [
        f"{what} ({prefix}*)"
        for prefix, what in spec.parts.items()
        if not any(key.startswith(prefix) for key in keys)
    ]
    if missing:
        raise ModelUnavailable(
            f"single-file checkpoint {path} has no {' and no '.join(missing)} weights; only "
            f"complete {family} checkpoints (UNet, VAE and text encoder in one file) load"
        )


def load_single_file(
    path: Path,
    family: str,
    *,
    config_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
):
    """A diffusers pipeline from an original-layout `.safetensors` checkpoint, fully offline.

    Configs (diffusers layout) come from `config_dir` when given, else from `<stem>.config/`
    or `config/` next to the checkpoint, else from the family's shipped full-size configs
    (`assets/<family>-config/`). The tokenizer comes from the first of `tokenizer/` next to the
    checkpoint, the config directory's `tokenizer/`, `<family>-tokenizer/` in the model cache
    (`cache_dir`); none is shipped for full-size models, so without one this raises
    ModelUnavailable naming where to put it."""
    import diffusers
    from transformers import CLIPTokenizer

    path = Path(path)
    spec = family_of(family)
    check_checkpoint(path, family)
    config_dir = Path(config_dir) if config_dir is not None else find_config_dir(path)
    directories = {
        name: find_tokenizer(path, family, config_dir, cache_dir, name) for name in spec.tokenizers
    }
    with tempfile.TemporaryDirectory(prefix="regionfarm-configs-") as scratch:
        configs = config_dir or shipped_config_dir(family, Path(scratch))
        where = f"the configs in {config_dir}" if config_dir else f"the shipped {family} configs"
        tokenizers = {}
        for name, directory in directories.items():
            encoder = name.replace("tokenizer", "text_encoder")
            text_config = _text_encoder_config(configs / encoder, where)
            tokenizers[name] = _load_tokenizer(CLIPTokenizer, directory, text_config)
            _check_vocabulary(tokenizers[name], text_config, where)
        pipeline_class = getattr(diffusers, spec.pipeline)
        try:
            pipe = pipeline_class.from_single_file(
                str(path),
                config=str(configs),
                local_files_only=True,
                dtype=dtype,
                **dict(spec.pipeline_kwargs),
                **tokenizers,
            )
        except Exception as exc:  # shape mismatches, weights left on the meta device, ...
            raise ModelUnavailable(
                f"single-file checkpoint {path} does not load with {where}: {exc} -- the "
                "checkpoint and the configs must describe the same architecture: put the "
                f"checkpoint's own diffusers configs in {path.stem}.config/ next to it"
            ) from exc
    _check_complete(pipe, spec.modules, path, where)
    return pipe


def _text_encoder_config(directory: Path, where: str) -> dict[str, Any]:
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"{where}: {directory}/config.json cannot be read ({exc}); a config directory needs "
            "the diffusers layout"
        ) from exc


def _load_tokenizer(cls, directory: Path, text_config: dict[str, Any]):
    # A bare vocab.json + merges.txt has no model_max_length and the pipeline pads prompts to
    # it: the text encoder's positions are the length it takes.
    try:
        return cls.from_pretrained(
            str(directory),
            local_files_only=True,
            model_max_length=text_config.get("max_position_embeddings", 77),
        )
    except Exception as exc:
        raise ModelUnavailable(f"tokenizer in {directory} cannot be loaded: {exc}") from exc


def _check_vocabulary(tokenizer: Any, text_config: dict[str, Any], where: str) -> None:
    # A tokenizer of another model would produce ids the embedding does not have (or silently
    # wrong ones): the sizes must agree.
    vocab = text_config.get("vocab_size")
    if len(tokenizer) != vocab:
        raise ModelUnavailable(
            f"tokenizer in {tokenizer.name_or_path} has {len(tokenizer)} tokens but the text "
            f"encoder of {where} has {vocab}: put the checkpoint's own tokenizer there"
        )


def _check_complete(pipe: Any, modules: tuple[str, ...], path: Path, where: str) -> None:
    # diffusers loads the weights into modules built on the meta device and leaves there those
    # the checkpoint lacks; 0.42 then fails in its dtype cast, but not every path casts.
    for name in modules:
        module = getattr(pipe, name)
        tensors = [*module.named_parameters(), *module.named_buffers()]
        missing = [key for key, tensor in tensors if tensor.is_meta]
        if missing:
            raise ModelUnavailable(
                f"single-file checkpoint {path} lacks {len(missing)} {name} weights for "
                f"{where} (e.g. {missing[0]}): the checkpoint and the configs describe "
                "different architectures"
            )
