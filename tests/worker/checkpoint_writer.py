"""Test support: writes a diffusers pipeline's modules as a single-file checkpoint in the
original Stable Diffusion (LDM) layout, as users download them, so that the product's loader
(worker/render/single_file.py) can be tested on files made here. Only tests write checkpoints:
this mapping is the inverse of the one diffusers' single-file loader applies."""

from __future__ import annotations

from pathlib import Path

import torch

from farm.files import write_atomically
from worker.render.single_file import (
    CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    XL_CLIP_PREFIX,
    XL_OPENCLIP_PREFIX,
)

__all__ = ["save_single_file", "to_original_layout"]

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
            "them to the mapping in tests/worker/checkpoint_writer.py"
        )
    return state


def save_single_file(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint as one `.safetensors` file (atomically: never half a file)."""
    from safetensors.torch import save

    tensors = {key: tensor.detach().contiguous() for key, tensor in state_dict.items()}
    write_atomically(path, save(tensors, metadata={"format": "pt"}))


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
            "tests/worker/checkpoint_writer.py"
        )
    return out


def _rename_inner(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest
