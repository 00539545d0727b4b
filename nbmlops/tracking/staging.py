"""Staging a model for registration, in the user's process (the kernel never imports mlflow).

On the user's thread the model is serialized with skops (safe to load: no pickle) and a few rows of its
training features are copied, so later changes to the objects do not change what is registered; the record
carries the serialized model's SHA-256 and the types it holds, read from the live object. In the background
both are written under ``.nbmlops/models/`` and a ``model`` record is journaled, which the delivery turns into a
registry version (:func:`nbmlops.backend.models.deliver_model`).

In a kernel ``nbmlops reproduce`` runs (:data:`REPRODUCTION_ENV`), nothing is staged unless the reproduction was
asked to register: the run is tagged :data:`REGISTRATION_SKIPPED_TAG` instead; a version it does register is tagged
:data:`REPRODUCTION_OF_TAG` with the original's version (``NAME/VERSION``), else the original run id.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from nbmlops.backend.models import check_model_name
from nbmlops.exceptions import UnsupportedModelError

__all__ = [
    "REGISTRATION_SKIPPED_TAG", "REPRODUCTION_ENV", "REPRODUCTION_OF_TAG", "UnsupportedModelError", "check_model",
    "features_of", "reproduction_environment", "stage_model",
]

_EXAMPLE_ROWS = 5
#: set by ``nbmlops reproduce`` for the kernel it runs: JSON ``{"run": <original run id>, "register": <bool>,
#: "versions": {<model name>: "<NAME>/<VERSION>" the original registered}}``
REPRODUCTION_ENV = "NBMLOPS_REPRODUCTION"
#: tag of a run of a reproduction whose model was not registered: the model names, comma-separated
REGISTRATION_SKIPPED_TAG = "nbmlops.registration_skipped"
#: tag of a model version a reproduction registered (``reproduce --register``): the original's ``NAME/VERSION``,
#: or the original run id when the original registered no version of that name
REPRODUCTION_OF_TAG = "nbmlops.reproduction_of"
_skipped: dict[str, list[str]] = {}  # run key -> the models a reproduction did not register in it


def reproduction_environment(run_id: str, register: bool, versions: dict[str, str]) -> dict[str, str]:
    """The environment telling a kernel that it re-executes run ``run_id`` (see :data:`REPRODUCTION_ENV`)."""
    return {REPRODUCTION_ENV: json.dumps({"run": run_id, "register": bool(register), "versions": versions})}


def _reproduction() -> dict[str, Any] | None:
    """What ``nbmlops reproduce`` told this kernel, or None outside a reproduction."""
    text = os.environ.get(REPRODUCTION_ENV)
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    return found if isinstance(found, dict) and isinstance(found.get("run"), str) else {"run": "", "register": False}


def _model_class(model: Any) -> str:
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def check_model(model: Any) -> None:
    """Raise :class:`UnsupportedModelError` unless ``model`` is a scikit-learn estimator or pipeline."""
    if not type(model).__module__.startswith("sklearn") and "sklearn" not in _mro_modules(model):
        raise UnsupportedModelError(
            f"cannot register a {_model_class(model)}: nbmlops registers scikit-learn estimators and pipelines"
        )
    from sklearn.base import BaseEstimator

    if not isinstance(model, BaseEstimator):
        raise UnsupportedModelError(f"cannot register a {_model_class(model)}: it is not a scikit-learn estimator")


def _mro_modules(model: Any) -> set[str]:
    return {cls.__module__.split(".")[0] for cls in type(model).__mro__}


def features_of(model: Any, candidates: dict[str, Any]) -> tuple[str, Any] | None:
    """Among named data objects, the one the model was fitted on: as many columns as ``n_features_in_``
    (and the same names as ``feature_names_in_`` when the model has them)."""
    wanted = getattr(model, "n_features_in_", None)
    names = getattr(model, "feature_names_in_", None)
    for name, obj in candidates.items():
        shape: tuple[int, ...] = getattr(obj, "shape", ())
        if len(shape) != 2 or (wanted is not None and shape[1] != wanted):
            continue
        if names is not None:
            columns = getattr(obj, "columns", None)
            if columns is None or [str(c) for c in columns] != [str(n) for n in names]:
                continue
        return name, obj
    return None


def stage_model(
    model: Any,
    name: str,
    run: Any,
    *,
    features: Any = None,
    training: dict[str, str] | None = None,
    evaluation: dict[str, str] | None = None,
) -> str | None:
    """Stage ``model`` for registration as ``name`` from ``run`` (a started :class:`~nbmlops.tracking.run.Run`).

    ``features`` is the data the model was fitted on (for its signature and input example);
    ``training`` and ``evaluation`` map variable names to fingerprints. Returns the registration key, or None
    in a reproduction that does not register (the run is tagged :data:`REGISTRATION_SKIPPED_TAG`).

    Raises:
        ModelReferenceError: a name MLflow would refuse.
        UnsupportedModelError: not a scikit-learn model.
    """
    import skops.io

    check_model_name(name)
    check_model(model)
    reproduction = _reproduction()
    if reproduction is not None and not reproduction.get("register"):
        skipped = _skipped.setdefault(run.key, [])
        skipped += [name] if name not in skipped else []
        run.set_tags({REGISTRATION_SKIPPED_TAG: ",".join(skipped)})
        sys.stderr.write(f"nbmlops: reproduction: model {name!r} not registered (nbmlops reproduce --register does)\n")
        return None
    data = skops.io.dumps(model)
    trusted = skops.io.get_untrusted_types(data=data)  # the types of our own model, listed for loading it back
    example = _example(features)
    key = uuid.uuid4().hex
    folder = run.settings.state_dir / "models"
    record = {
        "t": "model",
        "run": run.key,
        "key": key,
        "name": name,
        "flavor": "sklearn",
        "class": _model_class(model),
        "trusted": trusted,
        "sha256": hashlib.sha256(data).hexdigest(),
        "training": dict(training or {}),
        "evaluation": dict(evaluation or {}),
    }
    if reproduction is not None:
        original = (reproduction.get("versions") or {}).get(name) or reproduction["run"]
        record["tags"] = {REPRODUCTION_OF_TAG: original}
    run.session.background(_write_staged, run.session, folder, key, data, example, features, record)
    return key


def _example(features: Any) -> Any:
    if features is None:
        return None
    head = features.iloc[:_EXAMPLE_ROWS] if hasattr(features, "iloc") else features[:_EXAMPLE_ROWS]
    return head.copy()


def _write_staged(session: Any, folder: Path, key: str, data: bytes, example: Any, features: Any,
                  record: dict[str, Any]) -> None:
    from nbmlops.data import fingerprint, mlflow_schema

    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{key}.skops"
    _write(model_path, data)
    record["file"] = str(model_path)
    if example is not None:
        record["schema"] = mlflow_schema(features)
        record["features"] = fingerprint(features)
        if hasattr(example, "to_parquet"):
            path = folder / f"{key}.example.parquet"
            example.to_frame().to_parquet(path) if example.ndim == 1 else example.to_parquet(path)
        else:
            import numpy as np

            path = folder / f"{key}.example.npy"
            with open(path, "wb") as handle:
                np.save(handle, example, allow_pickle=False)
        record["example"] = str(path)
    session.emit([record])


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
