"""The render engine: StreamMultiDiffusion on diffusers, as plain functions (no queue, no storage)."""

from .errors import InvalidJob, ModelUnavailable, RenderCanceled, RenderError
from .imageio import encode_image
from .inputs import JobInputs, load_inputs
from .job import render_job
from .loading import LoadedModel, load_model
from .result import RenderResult

__all__ = [
    "InvalidJob",
    "JobInputs",
    "LoadedModel",
    "ModelUnavailable",
    "RenderCanceled",
    "RenderError",
    "RenderResult",
    "encode_image",
    "load_inputs",
    "load_model",
    "render_job",
]
