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


class InvalidAsset(RenderError):
    """An asset the job refers to cannot be used: gone from the farm (assets expire) or not an
    image. `ref` is the reference as the spec holds it (``asset:<id>``), so that the caller can
    name the field; the message says the fix."""

    code = "invalid_asset"

    def __init__(self, ref: str, message: str) -> None:
        super().__init__(message)
        self.ref, self.message = ref, message
