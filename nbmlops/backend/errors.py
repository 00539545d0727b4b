"""The errors the backend raises besides the root tree's (:mod:`nbmlops.exceptions`): MLflow's own never leave it."""

from __future__ import annotations

from nbmlops.exceptions import NbmlopsError

__all__ = ["ModelReferenceError", "RecordRejected", "RegistryError"]


class RecordRejected(NbmlopsError):
    """The store answered, and refused a request for good (a bad value, a deleted run, a name that exists).

    Attributes:
        error_code: MLflow's code for the refusal (``INVALID_PARAMETER_VALUE``, ``RESOURCE_DOES_NOT_EXIST``,
            ``RESOURCE_ALREADY_EXISTS``, ...), or None when nbmlops refused it itself.
    """

    def __init__(self, message: str, error_code: str | None = None) -> None:
        self.error_code = error_code
        super().__init__(message)


class RegistryError(NbmlopsError):
    """Root of the registry's errors."""

    http_status = 409


class ModelReferenceError(RegistryError, ValueError):
    """A model reference, name or alias that does not follow the rules."""
