"""The model registry over MLflow's: register models with their lineage, promote them through gates,
trace a model back to its data and code, and watch live data drift away from it.

The only package that talks to MLflow's registry; mlflow is imported inside the functions.
"""

from nbmlops.registry.models import (
    Decision,
    ModelNotFoundError,
    ModelReference,
    ModelReferenceError,
    ModelVersionInfo,
    RegisteredModelInfo,
    RegistryError,
    get_version,
    list_models,
    list_versions,
    parse_reference,
)
from nbmlops.registry.promote import AliasChangedError, Beat, Check, Promotion, PromotionRefused, promote
from nbmlops.registry.register import UnsupportedModelError, register

__all__ = [
    "AliasChangedError",
    "Beat",
    "Check",
    "Decision",
    "ModelNotFoundError",
    "ModelReference",
    "ModelReferenceError",
    "ModelVersionInfo",
    "Promotion",
    "PromotionRefused",
    "RegisteredModelInfo",
    "RegistryError",
    "UnsupportedModelError",
    "get_version",
    "list_models",
    "list_versions",
    "parse_reference",
    "promote",
    "register",
]
