"""The engine's error tree: permanent job errors vs. a render stopped on request."""

from __future__ import annotations


class RenderError(Exception):
    """Base of every error the engine raises on purpose; `code` is the contract's error code."""

    code = "internal"


class InvalidJob(RenderError):
    """The job cannot be rendered as given (permanent: the user must change the spec)."""

    code = "invalid_job"


class ModelUnavailable(RenderError):
    """The model could not be loaded (missing weights, offline hub, bad directory)."""

    code = "model_unavailable"


class RenderCanceled(RenderError):
    """The render was stopped between two steps because its cancel check said so."""

    code = "canceled"
