"""Loads a served model once: hub id, diffusers directory, single file or built-in; LoRA, LCM."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import Module

from schemas import ModelEntry

from . import checksums, single_file, tiny
from .errors import ModelUnavailable
from .runtime import quiet_libraries
from .toy_models import TOY_MODELS, toy_path

log = logging.getLogger(__name__)

LOAD_COUNT = 0
"""Pipelines this process has loaded; workers load once, tests and metrics count it."""


@dataclass
class LoadedModel:
    """A pipeline ready to render, with what the engine needs to know about it."""

    name: str
    entry: ModelEntry
    pipe: Any  # a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline
    device: torch.device
    dtype: torch.dtype
    tiny_vae: Any = None  # an AutoencoderTiny for decoding, when the models file names one
    load_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    """Per-model constants the engine computes once (the white latent)."""
    compiled_unet: Any = None
    """The compiled UNet at its fixed batch (`compiled.compile_unet`); None: the eager one."""

    @property
    def denoising_unet(self) -> Any:
        """The UNet that StreamMultiDiffusion's sampler calls: the compiled one if any."""
        return self.compiled_unet if self.compiled_unet is not None else self.pipe.unet

    @property
    def family(self) -> str:
        """`sd15` or `sdxl`."""
        return self.entry.family

    @property
    def native_size(self) -> int:
        """The model's native canvas side in pixels (its tile size)."""
        return self.entry.native_size


def pick_device(requested: str | None = None) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`, or None for CUDA when present, else the CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelUnavailable(f"device {requested!r} was asked for but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(entry: ModelEntry, device: torch.device) -> torch.dtype:
    """fp16 on CUDA and fp32 on the CPU unless the models file names a dtype."""
    if entry.dtype != "auto":
        return getattr(torch, entry.dtype)
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve_source(source: str, cache_dir: Path) -> tuple[str, bool]:
    """(path or hub id, is_local) for a models-file source; builds built-ins on first use.

    A `.safetensors` source is one file: a local path, or `<owner>/<repo>/<file>` on the hub
    (downloaded, or taken from the hub cache when offline). As a model's `source` it is a
    checkpoint in the original SD layout (see `single_file.load_single_file` for where its
    configs and tokenizers come from); as `lora` or `unet` it holds those weights.

    Local weights with recorded digests (`SHA256SUMS`, see `checksums`) are checked here."""
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name in TOY_MODELS:
            path = toy_path(name)
            checksums.verify(str(path))
            return str(path), True
        return str(tiny.builtin_path(name, cache_dir)), True
    path = Path(source).expanduser()
    if is_single_file(source):
        if path.is_file():
            checksums.verify(str(path))
            return str(path), True
        if hub_file_parts(source) is not None:
            return _hub_file(source), True
        raise ModelUnavailable(
            f"single-file weights {source} do not exist (or are not a file); fix the path "
            "in the models file (a hub file is written <owner>/<repo>/<file>.safetensors)"
        )
    if path.is_dir():
        checksums.verify(str(path))
        return str(path), True
    if source.startswith((".", "/", "~")):
        raise ModelUnavailable(f"model directory {source} does not exist")
    return source, False


def hub_file_parts(source: str) -> tuple[str, str] | None:
    """(repo id, file) of a `<owner>/<repo>/<file>.safetensors` source, else None."""
    if not is_single_file(source) or source.startswith((".", "/", "~")):
        return None
    parts = source.split("/", 2)
    return (f"{parts[0]}/{parts[1]}", parts[2]) if len(parts) == 3 else None


def _hub_file(source: str) -> str:
    """The local path of `<owner>/<repo>/<file>` from the hub (its cache when offline)."""
    from huggingface_hub import hf_hub_download

    repo, filename = hub_file_parts(source)
    try:
        return hf_hub_download(repo, filename)
    except Exception as exc:  # offline and not cached, no such repo or file, no network
        raise ModelUnavailable(
            f"{source}: neither a local file nor a file that can be fetched from the hub "
            f"(repo {repo}, file {filename}): {exc}"
        ) from exc


def is_single_file(source: str) -> bool:
    """Whether a models-file source names one `.safetensors` file (not a directory or hub id)."""
    return source.endswith(".safetensors")


PIPELINES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
"""The diffusers pipeline class of each family."""


def load_model(
    entry: ModelEntry, *, device: str | torch.device | None = None, cache_dir: Path
) -> LoadedModel:
    """Load the pipeline named by `entry`: its UNet replaced if the entry names one, its LoRA
    fused, and its scheduler switched to the entry's sampler."""
    global LOAD_COUNT
    quiet_libraries()
    import diffusers

    if entry.family not in PIPELINES:
        raise ModelUnavailable(f"model {entry.name}: family {entry.family} is not supported")
    started = time.perf_counter()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dtype = pick_dtype(entry, dev)
    source, local = resolve_source(entry.source, cache_dir)
    kwargs = {"dtype": dtype, "local_files_only": local}
    if entry.family == "sd15":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        if is_single_file(source):
            pipe = single_file.load_single_file(
                Path(source), entry.family, dtype=dtype, cache_dir=cache_dir
            )
        else:
            pipeline_class = getattr(diffusers, PIPELINES[entry.family])
            pipe = _from_pretrained(pipeline_class, source, dev, kwargs)
    except ModelUnavailable:
        raise
    except Exception as exc:  # diffusers raises OSError, ValueError, EnvironmentError...
        raise ModelUnavailable(f"model {entry.name}: cannot load {source}: {exc}") from exc
    if entry.unet:
        _replace_unet(pipe, entry, cache_dir, dtype)
    if dev.type == "cpu":  # a GPU copies the weights into its own memory in pipe.to(dev)
        own_memory(module for module in pipe.components.values() if isinstance(module, Module))
    pipe.scheduler = make_scheduler(entry.scheduler, pipe.scheduler.config)
    if entry.lora:
        _fuse_lora(pipe, entry, cache_dir)
    place(pipe, entry.family, dev, dtype)
    tiny_vae = _load_tiny_vae(entry, dev, dtype, cache_dir) if entry.tiny_vae else None
    LOAD_COUNT += 1
    seconds = time.perf_counter() - started
    log.info(
        "loaded model %s from %s on %s (%s) in %.1f s", entry.name, source, dev, dtype, seconds
    )
    return LoadedModel(
        name=entry.name,
        entry=entry,
        pipe=pipe,
        device=dev,
        dtype=dtype,
        tiny_vae=tiny_vae,
        load_seconds=seconds,
        versions=library_versions(),
    )


def place(pipe, family: str, device: torch.device, dtype: torch.dtype) -> None:
    """Move a loaded pipeline to its device, the VAE in fp32 where fp16 would overflow: SDXL's
    (its config says `force_upcast`). SD1.5's VAE runs in fp16, as its diffusers pipeline runs
    it (its config leaves `force_upcast` at diffusers' default, true, which that pipeline
    ignores)."""
    pipe.to(device)
    upcast = getattr(pipe.vae.config, "force_upcast", False)
    if family == "sdxl" and upcast and dtype == torch.float16:
        # SDXL's VAE overflows in fp16 (NaN images): it encodes and decodes in fp32.
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)


def make_scheduler(name: str, config):
    """The sampler's scheduler, from the model's own scheduler config (its noise schedule).

    `euler` uses trailing timesteps, which SDXL-Lightning was distilled on."""
    from diffusers import EulerDiscreteScheduler, LCMScheduler

    if name == "euler":
        return EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    return LCMScheduler.from_config(config)


def _replace_unet(pipe, entry: ModelEntry, cache_dir: Path, dtype: torch.dtype) -> None:
    """Swap in the entry's UNet weights (diffusers layout, same architecture as the source's)."""
    from safetensors.torch import load_file

    path, _ = resolve_source(entry.unet, cache_dir)
    try:
        state = load_file(path)
    except Exception as exc:  # not a safetensors file, truncated
        raise ModelUnavailable(
            f"model {entry.name}: cannot read UNet {entry.unet}: {exc}; it must be a "
            ".safetensors file of diffusers-layout UNet weights"
        ) from exc
    want = {key: tuple(t.shape) for key, t in pipe.unet.state_dict().items()}
    got = {key: tuple(t.shape) for key, t in state.items()}
    wrong = sorted(set(want) ^ set(got)) + [k for k in want if k in got and want[k] != got[k]]
    if wrong:
        raise ModelUnavailable(
            f"model {entry.name}: UNet {entry.unet} does not match the source's UNet: "
            f"{len(wrong)} weights are missing, unexpected or of another shape (e.g. "
            f"{wrong[0]}); it must be the same architecture, in the diffusers layout"
        )
    pipe.unet.load_state_dict(state)
    pipe.unet.to(dtype)


def own_memory(modules: Iterable[Module]) -> None:
    """Copy loaded weights into fresh allocations. Loaders leave them as views into the
    memory-mapped file, at whatever alignment the file's layout gives, and CPU kernels round
    differently with the alignment: the same weights as a diffusers directory and as a single
    file rendered different bytes. Fresh allocations are aligned alike (and unmap the file)."""
    with torch.no_grad():
        for module in modules:
            for tensor in itertools.chain(module.parameters(), module.buffers()):
                tensor.data = tensor.data.clone()


def _from_pretrained(cls, source: str, device: torch.device, kwargs: dict):
    # Hub repos of SD1.5 models usually carry an fp16 variant; try it first on the GPU only,
    # and fall back to the default weights when the repo has none.
    if device.type == "cuda" and not kwargs["local_files_only"]:
        try:
            return cls.from_pretrained(source, variant="fp16", **kwargs)
        except (OSError, ValueError):
            pass
    return cls.from_pretrained(source, **kwargs)


def _fuse_lora(pipe, entry: ModelEntry, cache_dir: Path) -> None:
    """Load the LoRA, fuse it into the UNet at its scale, and drop the adapter layers."""
    lora_source, _ = resolve_source(entry.lora, cache_dir)
    try:
        pipe.load_lora_weights(lora_source, adapter_name="lcm")
    except Exception as exc:
        raise ModelUnavailable(f"model {entry.name}: cannot load LoRA {entry.lora}: {exc}") from exc
    pipe.fuse_lora(lora_scale=entry.lora_scale)
    # Fused weights stay; the PEFT wrappers go, so every UNet call is a plain one.
    pipe.unload_lora_weights()


def _load_tiny_vae(entry: ModelEntry, device: torch.device, dtype: torch.dtype, cache_dir: Path):
    from diffusers import AutoencoderTiny

    source, local = resolve_source(entry.tiny_vae, cache_dir)
    try:
        vae = AutoencoderTiny.from_pretrained(source, dtype=dtype, local_files_only=local)
    except Exception as exc:
        raise ModelUnavailable(f"model {entry.name}: cannot load tiny VAE {source}: {exc}") from exc
    if device.type == "cpu":
        own_memory([vae])
    return vae.to(device)


def _toy_present(name: str) -> bool:
    try:
        toy_path(name)
    except ModelUnavailable:
        return False
    return True


def library_versions() -> dict[str, str]:
    """Versions that decide the pixels; written next to every image."""
    import diffusers
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def weights_available(entry: ModelEntry, cache_dir: Path) -> bool:
    """Whether `entry` can be loaded without the network (built-ins can always be built)."""
    for source in filter(None, (entry.source, entry.lora, entry.unet)):
        if source.startswith("builtin:"):
            name = source.removeprefix("builtin:")
            if name in TOY_MODELS and not _toy_present(name):
                return False
            continue
        if Path(source).expanduser().exists():
            continue
        try:
            from huggingface_hub import hf_hub_download, snapshot_download

            if (hub_file := hub_file_parts(source)) is not None:
                hf_hub_download(*hub_file, local_files_only=True)
            else:
                snapshot_download(source, local_files_only=True)
        except Exception:  # noqa: BLE001 -- any failure means "not available offline"
            return False
    return True
