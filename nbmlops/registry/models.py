"""Registered models as nbmlops reads them: references (``NAME@alias``, ``NAME/3``), versions with their
lineage and decision history, and the registry client (the backend's: :mod:`nbmlops.backend`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nbmlops.backend import registry as mlflow_registry
from nbmlops.backend.models import (
    EVALUATION_TAG,
    FEATURES_TAG,
    LOCK_PREFIX,
    PARAMS_TAG,
    REGISTRATION_KEY_TAG,
    TRAINING_TAG,
    check_model_name,
)
from nbmlops.backend.store import open_store
from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import ModelNotFoundError, ModelReferenceError, RecordRejected, RegistryError

__all__ = [
    "EVALUATION_TAG", "FEATURES_TAG", "LOCK_PREFIX", "PARAMS_TAG", "REGISTRATION_KEY_TAG", "TRAINING_TAG", "Decision",
    "ModelNotFoundError", "ModelReference", "ModelReferenceError", "ModelVersionInfo", "RegisteredModelInfo",
    "RegistryError", "check_model_name", "get_version", "list_models", "list_versions", "parse_reference",
    "registry_client",
]

DECISION_TAG_PREFIX = "nbmlops.decision."
_ALIAS = re.compile(r"^[\w\-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelReference:
    """``NAME@alias``, ``NAME/VERSION`` or a bare ``NAME`` (its latest version)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version is not None else self.name


def check_alias(alias: str) -> str:
    """``alias`` when MLflow accepts it (letters, digits, ``_`` and ``-``; not ``latest`` or ``v<N>``)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias) or len(alias) > 255:
        raise ModelReferenceError(f"alias {alias!r}: use letters, digits, '_' and '-' only")
    if _RESERVED_ALIAS.match(alias):
        raise ModelReferenceError(f"alias {alias!r} is reserved by MLflow ('latest' and 'v<number>')")
    return alias


def parse_reference(text: str, *, bare: bool = True) -> ModelReference:
    """Parse ``NAME@alias``, ``NAME/VERSION``, their ``models:/`` forms, or (with ``bare``) ``NAME``."""
    raw = text.strip()
    body = raw.removeprefix("models:/")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return ModelReference(check_model_name(name), alias=check_alias(alias))
    if "/" in body:
        name, version = body.rsplit("/", 1)
        if not version.isdigit() or not 1 <= int(version) < 2**63:
            raise ModelReferenceError(
                f"{text!r}: the version after '/' must be a whole number from 1 to 2**63-1, got {version!r}"
            )
        return ModelReference(check_model_name(name), version=int(version))
    if not bare:
        raise ModelReferenceError(f"{text!r}: expected NAME@ALIAS or NAME/VERSION")
    return ModelReference(check_model_name(body))


@dataclass(frozen=True)
class Decision:
    """One promotion decision recorded on a version: who asked, when, for which alias, and every check."""

    at: str
    by: str
    alias: str
    accepted: bool
    checks: tuple[Mapping[str, Any], ...]
    reason: str = ""
    previous: int | None = None

    @classmethod
    def from_tag(cls, value: str) -> Decision | None:
        try:
            data = json.loads(value)
            return cls(
                at=str(data["at"]), by=str(data["by"]), alias=str(data["alias"]), accepted=bool(data["accepted"]),
                checks=tuple(data.get("checks", ())), reason=str(data.get("reason", "")),
                previous=data.get("previous"),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_tag(self) -> str:
        return json.dumps(
            {"at": self.at, "by": self.by, "alias": self.alias, "accepted": self.accepted,
             "checks": list(self.checks), "reason": self.reason, "previous": self.previous},
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version and what nbmlops recorded about it."""

    name: str
    version: int
    run_id: str | None
    source: str
    status: str
    created: int
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def decisions(self) -> list[Decision]:
        """Promotion decisions on this version, oldest first."""
        found = [
            (int(key[len(DECISION_TAG_PREFIX):]), Decision.from_tag(value))
            for key, value in self.tags.items()
            if key.startswith(DECISION_TAG_PREFIX) and key[len(DECISION_TAG_PREFIX):].isdigit()
        ]
        return [decision for _, decision in sorted(found, key=lambda item: item[0]) if decision is not None]

    def datasets(self, role: str) -> dict[str, str]:
        """``{variable: fingerprint}`` of the ``training`` or ``evaluation`` data recorded at registration."""
        tag = {"training": TRAINING_TAG, "evaluation": EVALUATION_TAG}[role]
        try:
            value = json.loads(self.tags.get(tag, "{}"))
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model: its latest version and where its aliases point."""

    name: str
    latest_version: int | None
    aliases: Mapping[str, int]
    updated: int
    description: str = ""


def registry_client(settings: Settings | None = None) -> Any:
    """The backend's client of the configured store (whose registry is the store itself): MLflow's client calls,
    each bounded by the call budget, raising nbmlops' errors (:class:`RecordRejected` with MLflow's code)."""
    settings = settings or resolve_settings()
    return open_store(settings.tracking_uri, settings.artifact_root).client


def version_info(client: Any, version: Any) -> ModelVersionInfo:
    """A :class:`ModelVersionInfo` from MLflow's ``ModelVersion``."""
    return ModelVersionInfo(
        name=version.name,
        version=int(version.version),
        run_id=version.run_id or None,
        source=version.source or "",
        status=str(version.status or ""),
        created=int(version.creation_timestamp or 0),
        aliases=tuple(sorted(version.aliases or ())),
        tags=dict(version.tags or {}),
    )


def get_version(reference: ModelReference | str, settings: Settings | None = None, client: Any = None) -> ModelVersionInfo:
    """The version a reference names (a bare name means its latest version)."""
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    client = client or registry_client(settings)
    try:
        if ref.alias:
            found = mlflow_registry.version_by_alias(client, ref.name, ref.alias)
        elif ref.version is not None:
            found = mlflow_registry.version(client, ref.name, ref.version)
        else:
            versions = mlflow_registry.search_versions(client, f"name = '{_quote(ref.name)}'", 1, newest_first=True)
            if not versions:
                raise ModelNotFoundError(str(ref), "it has no versions")
            found = versions[0]
    except RecordRejected as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise ModelNotFoundError(str(ref), _first_line(exc)) from None
        raise
    return version_info(client, found)


def list_versions(name: str, settings: Settings | None = None, client: Any = None) -> list[ModelVersionInfo]:
    """Every version of model ``name``, newest first; :class:`ModelNotFoundError` when there is no such model."""
    client = client or registry_client(settings)
    check_model_name(name)
    try:
        model = mlflow_registry.get_registered_model(client, name)
    except RecordRejected as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFoundError(name) from None
        raise
    aliases: dict[int, list[str]] = {}
    for alias, number in (model.aliases or {}).items():  # a version search leaves aliases out on SQL stores
        aliases.setdefault(int(number), []).append(alias)
    versions = []
    for found in mlflow_registry.all_versions(client, f"name = '{_quote(name)}'"):
        info = version_info(client, found)
        versions.append(replace(info, aliases=tuple(sorted(aliases.get(info.version, info.aliases)))))
    return sorted(versions, key=lambda v: v.version, reverse=True)


def list_models(settings: Settings | None = None, client: Any = None) -> list[RegisteredModelInfo]:
    """Every registered model (nbmlops' promotion locks excluded), by name."""
    client = client or registry_client(settings)
    models = []
    for model in mlflow_registry.all_registered_models(client):
        if model.name.startswith(LOCK_PREFIX):
            continue
        latest = max((int(v.version) for v in model.latest_versions or ()), default=None)
        models.append(
            RegisteredModelInfo(
                name=model.name,
                latest_version=latest,
                aliases={alias: int(version) for alias, version in (model.aliases or {}).items()},
                updated=int(model.last_updated_timestamp or 0),
                description=model.description or "",
            )
        )
    return sorted(models, key=lambda m: m.name)


def registered_by(run_id: str, run_key: str, settings: Settings | None = None, client: Any = None) -> list[ModelVersionInfo]:
    """The versions registered by run ``run_id`` (local key ``run_key``) or by its child runs (the cells of a
    headless notebook run), oldest first."""
    client = client or registry_client(settings)
    found: dict[tuple[str, int], ModelVersionInfo] = {}
    for condition in (f"run_id = '{run_id}'", f"tags.`nbmlops.parent_run_id` = '{run_id}'",
                      f"tags.`nbmlops.parent_key` = '{run_key}'"):
        for version in mlflow_registry.search_versions(client, condition, 200):
            info = version_info(client, version)
            found[(info.name, info.version)] = info
    return sorted(found.values(), key=lambda v: (v.created, v.name, v.version))


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "message", exc)).splitlines()[0][:300]
