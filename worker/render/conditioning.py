"""Text conditioning: prompts to embeddings (SD1.5: CLIP; SDXL: two encoders and a pooled
embedding), the prompt-strength pull to the background, and SDXL's size/crop numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Embeds:
    """Per prompt: the token embeddings (N, tokens, dim) the UNet cross-attends to, and for
    SDXL the pooled embedding (N, dim) it is conditioned on as well. Indexing selects prompts."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def __getitem__(self, index) -> Embeds:
        pooled = self.pooled[index] if self.pooled is not None else None
        return Embeds(self.hidden[index], pooled)

    def to(self, device, dtype) -> Embeds:
        pooled = self.pooled.to(device, dtype) if self.pooled is not None else None
        return Embeds(self.hidden.to(device, dtype), pooled)

    @staticmethod
    def cat(parts: Sequence[Embeds]) -> Embeds:
        pooled = None
        if parts[0].pooled is not None:
            pooled = torch.cat([p.pooled for p in parts])
        return Embeds(torch.cat([p.hidden for p in parts]), pooled)


def _tokens(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def embed(pipe, prompts: Sequence[str]) -> Embeds:
    """The prompts' embeddings as the UNet sees them, with gradients (training uses this).

    SD1.5: the CLIP encoder's last hidden states. SDXL, as its pipeline does: both encoders'
    penultimate hidden states side by side, and the second encoder's projected pooled output."""
    if getattr(pipe, "text_encoder_2", None) is None:
        device = pipe.text_encoder.device
        return Embeds(pipe.text_encoder(_tokens(pipe.tokenizer, prompts).to(device))[0])
    hiddens, pooled = [], None
    for tokenizer, encoder in (
        (pipe.tokenizer, pipe.text_encoder),
        (pipe.tokenizer_2, pipe.text_encoder_2),
    ):
        out = encoder(_tokens(tokenizer, prompts).to(encoder.device), output_hidden_states=True)
        hiddens.append(out.hidden_states[-2])
        pooled = out[0]  # the second encoder's (projected) pooled output
    return Embeds(torch.cat(hiddens, dim=-1), pooled)


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str], *, negative: bool = False) -> Embeds:
    """Every prompt embedded (see `embed`), negative ones too, truncated to the encoders' token
    limit (the reference left negatives untruncated and broke on long ones). Identical prompts
    are encoded once. For SDXL an empty negative prompt gives zeros when the model asks for it
    (`force_zeros_for_empty_prompt`)."""
    unique = list(dict.fromkeys(prompts))
    index = [unique.index(p) for p in prompts]
    embeds = embed(pipe, unique)
    if embeds.pooled is None:
        return embeds[index]
    if negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        for k, prompt in enumerate(unique):
            if not prompt:
                embeds.hidden[k] = 0
                embeds.pooled[k] = 0
    return embeds[index]


def pull_toward(embeds: Embeds, background: Embeds, strengths: Sequence[float]) -> Embeds:
    """e_p <- e_bg + s_p (e_p - e_bg): strength 1 keeps the prompt, 0 gives the background's.
    SDXL's pooled embedding is pulled the same way (the reference forgot it at first, and the
    UNet's added conditioning then disagreed with the tokens)."""
    hidden = embeds.hidden.clone()
    pooled = embeds.pooled.clone() if embeds.pooled is not None else None
    for p, s in enumerate(strengths):
        if s != 1.0:
            hidden[p] = torch.lerp(background.hidden[0], embeds.hidden[p], float(s))
            if pooled is not None:
                pooled[p] = torch.lerp(background.pooled[0], embeds.pooled[p], float(s))
    return Embeds(hidden, pooled)


def time_ids(canvas: tuple[int, int], crops: Sequence[tuple[int, int]]) -> torch.Tensor:
    """SDXL's micro-conditioning per view, (N, 6): original size, crop top-left, target size.
    Original and target are the whole canvas; the crop is the view's pixel offset, which tells
    the model where in the picture the view sits."""
    height, width = canvas
    return torch.tensor(
        [[height, width, top, left, height, width] for top, left in crops], dtype=torch.float32
    )
