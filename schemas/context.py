"""ValidationContext: what a spec is checked against (the farm's limits, models and assets)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.defaults import DEFAULT_MODEL, MAX_PIXELS, MAX_REGIONS
from schemas.images import AssetReader
from schemas.models_file import ModelEntry
from schemas.settings import Settings

__all__ = ["ValidationContext"]


@dataclass
class ValidationContext:
    """The farm-side facts that `parse_spec` and `normalize_spec` check a spec against."""

    max_pixels: int = MAX_PIXELS
    """Most pixels per canvas and per decoded image."""
    max_regions: int = MAX_REGIONS
    """Most regions (or palette colors) per job."""
    models: Mapping[str, ModelEntry] | None = None
    """The known models by name; None: model names are not checked (local renders)."""
    default_model: str = DEFAULT_MODEL
    """Model used when a spec names none."""
    webhook_allowlist: list[str] = field(default_factory=list)
    """Hosts or networks that webhooks may reach over http or at private addresses."""
    assets: AssetReader | None = None
    """Reads an uploaded asset's bytes by id; None: ``asset:`` references are refused."""
    resolve_webhook_hosts: bool = True
    """Resolve webhook host names (DNS) to refuse names that point at private addresses."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        models: Mapping[str, ModelEntry] | None = None,
        *,
        assets: AssetReader | None = None,
        resolve_webhook_hosts: bool = True,
    ) -> ValidationContext:
        """Build the context of a farm process from its settings and its loaded models file."""
        return cls(
            max_pixels=settings.max_pixels,
            max_regions=settings.max_regions,
            models=models,
            default_model=settings.default_model,
            webhook_allowlist=list(settings.webhook_allowlist),
            assets=assets,
            resolve_webhook_hosts=resolve_webhook_hosts,
        )
