"""The compiled UNet: torch.compile once per worker, called at one batch shape, so that no job
recompiles (docs/gpu.md, "Compiled UNet")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .conditioning import encode_prompts
from .defaults import LATENT_SCALE
from .loading import LoadedModel

__all__ = ["FixedBatchUNet", "UNetOutput", "compile_unet"]


@dataclass
class UNetOutput:
    """What the engine reads of a UNet call (diffusers' output has the same `.sample`)."""

    sample: torch.Tensor


class FixedBatchUNet:
    """Calls `unet` (compiled) with exactly `batch` samples every time: a smaller call is padded
    by repeating its last sample (the padding's outputs are dropped), a larger one goes in
    chunks of `batch`. Every batched input (the latents, the timestep, the prompt embeddings,
    SDXL's added conditioning) is padded alike, so a compiled graph sees one shape per view
    size whatever the canvas, the number of regions or the guidance."""

    def __init__(self, unet: Any, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.unet, self.batch = unet, batch

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def config(self) -> Any:
        return self.unet.config

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> UNetOutput:
        n = sample.shape[0]
        # A tensor timestep, one per sample: a Python number would be a constant that the
        # compiled graph is specialized on (one recompile per step).
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(n) if t.numel() == 1 else t
        outs = []
        for start in range(0, n, self.batch):
            end = min(n, start + self.batch)
            added = None
            if added_cond_kwargs is not None:
                added = {k: _padded(v[start:end], self.batch) for k, v in added_cond_kwargs.items()}
            out = self.unet(
                _padded(sample[start:end], self.batch),
                _padded(t[start:end], self.batch),
                encoder_hidden_states=_padded(encoder_hidden_states[start:end], self.batch),
                added_cond_kwargs=added,
                **kwargs,
            ).sample
            outs.append(out[: end - start])
        return UNetOutput(torch.cat(outs))


def _padded(x: torch.Tensor, batch: int) -> torch.Tensor:
    """`x` (rows first) with its last row repeated up to `batch` rows, contiguous: compiled
    graphs are guarded on strides too, and an expanded view (stride 0) is another input."""
    missing = batch - x.shape[0]
    if missing > 0:
        x = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
    return x.contiguous()


def compile_unet(model: LoadedModel, view_batch: int) -> FixedBatchUNet:
    """Compile `model`'s UNet in place (channels_last; the repeated transformer blocks only
    where diffusers offers regional compilation, else the whole UNet), then warm it up at the
    shape every call will have: `view_batch` region-view pairs of the native window, guided
    (two passes per pair) when the model's default guidance is above 1. Sets
    `model.compiled_unet`; returns it."""
    unet = model.pipe.unet
    unet.to(memory_format=torch.channels_last)
    if getattr(unet, "_repeated_blocks", None):
        unet.compile_repeated_blocks(fullgraph=True)
        compiled = unet
    else:
        compiled = torch.compile(unet, fullgraph=True)
    passes = 2 if model.entry.guidance_scale > 1.0 else 1
    wrapper = FixedBatchUNet(compiled, view_batch * passes)
    _warm_up(model, wrapper)
    model.compiled_unet = wrapper
    return wrapper


@torch.no_grad()
def _warm_up(model: LoadedModel, unet: FixedBatchUNet) -> None:
    """One call at the fixed shape, with real prompt embeddings (their length and width)."""
    side = model.native_size // LATENT_SCALE
    embeds = encode_prompts(model.pipe, [""]).to(model.device, unet.dtype)
    rows = unet.batch
    sample = torch.zeros(
        rows, unet.config.in_channels, side, side, device=model.device, dtype=unet.dtype
    )
    added = None
    if embeds.pooled is not None:
        size = float(model.native_size)
        ids = torch.tensor(
            [[size, size, 0.0, 0.0, size, size]], device=model.device, dtype=unet.dtype
        )
        added = {"text_embeds": embeds.pooled.repeat(rows, 1), "time_ids": ids.repeat(rows, 1)}
    hidden = embeds.hidden.repeat(rows, 1, 1)
    unet(sample, torch.tensor(999, device=model.device), hidden, added_cond_kwargs=added)
