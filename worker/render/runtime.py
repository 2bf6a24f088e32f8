"""Process-wide torch settings, applied the same way by `render` and by workers."""

from __future__ import annotations

import torch


def configure_torch(threads: int | None) -> None:
    """Inference only, and the configured CPU thread count (the same count gives the same
    bytes: reductions split across threads round differently)."""
    torch.set_grad_enabled(False)
    if threads:
        torch.set_num_threads(int(threads))


def quiet_libraries() -> None:
    """Our own log line says what was loaded; the libraries' progress bars and notes (no
    text-encoder keys in a UNet-only LoRA, torchvision absent) are noise in a worker's log.
    Called before the pipelines are imported, since some notes come at import time."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for logging_module in (diffusers_logging, transformers_logging):
        logging_module.disable_progress_bar()
        logging_module.set_verbosity_error()
