"""Single-file checkpoints in the original Stable Diffusion layout: checked, then loaded offline.

Only the tests write such files (tests/worker/checkpoint_writer.py)."""

from __future__ import annotations

import json
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
