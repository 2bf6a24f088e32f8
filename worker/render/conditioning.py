"""Text conditioning: prompts to CLIP embeddings, and the prompt-strength pull to the background."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """(N, tokens, dim) last hidden states; every prompt, negative ones too, is truncated to the
    encoder's token limit (the reference left negatives untruncated and broke on long ones).
    Identical prompts are encoded once."""
    unique = list(dict.fromkeys(prompts))
    tokens = pipe.tokenizer(
        unique,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    device = pipe.text_encoder.device
    hidden = pipe.text_encoder(tokens.input_ids.to(device))[0]
    index = {p: k for k, p in enumerate(unique)}
    return hidden[[index[p] for p in prompts]]


def pull_toward(embeds: torch.Tensor, background: torch.Tensor, strengths: Sequence[float]):
    """e_p <- e_bg + s_p (e_p - e_bg): strength 1 keeps the prompt, 0 gives the background's."""
    out = embeds.clone()
    for p, s in enumerate(strengths):
        if s != 1.0:
            out[p] = torch.lerp(background[0], embeds[p], float(s))
    return out
