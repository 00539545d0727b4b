"""Staging a model for registration, in the user's process (the kernel never imports mlflow).

On the user's thread the model is serialized (:func:`_serialized`: skops, or the library's own format) and a few rows of its
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
import tempfile
import uuid
from pathlib import Path
from typing import Any

from nbmlops.backend.models import check_model_name
from nbmlops.exceptions import UnsupportedModelError

__all__ = [
    "REGISTRATION_SKIPPED_TAG", "REPRODUCTION_ENV", "REPRODUCTION_OF_TAG", "UnsupportedModelError", "check_model",
    "features_of", "model_flavor", "reproduction_environment", "stage_model",
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


#: the flavor of each library nbmlops registers, found from the top-level package of the model's classes (the
#: library is never imported to find it); scikit-learn comes last, as the boosting wrappers derive from it
_LIBRARIES = (("xgboost", "xgboost"), ("lightgbm", "lightgbm"), ("catboost", "catboost"),
              ("statsmodels", "statsmodels"), ("mlflow", "pyfunc"), ("sklearn", "sklearn"))


def model_flavor(model: Any) -> str:
    """The MLflow flavor ``model`` is registered in: ``xgboost``, ``lightgbm``, ``catboost``, ``statsmodels``,
    ``pyfunc`` or ``sklearn`` (a scikit-learn pipeline is ``sklearn``, whatever its steps);
    :class:`UnsupportedModelError` when it is none of them."""
    modules = _mro_modules(model)
    found = next((flavor for package, flavor in _LIBRARIES if package in modules), None)
    if found == "pyfunc" and "PythonModel" not in {cls.__name__ for cls in type(model).__mro__}:
        found = None
    if found == "statsmodels" and not hasattr(model, "predict"):
        found = None
    if found is None:
        raise UnsupportedModelError(
            f"cannot register a {_model_class(model)}: nbmlops registers scikit-learn estimators and pipelines, "
            "XGBoost, LightGBM and CatBoost models, statsmodels results and mlflow.pyfunc.PythonModel instances"
        )
    if found == "sklearn":
        from sklearn.base import BaseEstimator

        if not isinstance(model, BaseEstimator):
            raise UnsupportedModelError(f"cannot register a {_model_class(model)}: it is not a scikit-learn estimator")
    return found


def check_model(model: Any) -> None:
    """Raise :class:`UnsupportedModelError` unless nbmlops can register ``model`` (see :func:`model_flavor`)."""
    model_flavor(model)


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
        UnsupportedModelError: not a model nbmlops registers (see :func:`model_flavor`).
    """
    check_model_name(name)
    check_model(model)
    reproduction = _reproduction()
    if reproduction is not None and not reproduction.get("register"):
        skipped = _skipped.setdefault(run.key, [])
        skipped += [name] if name not in skipped else []
        run.set_tags({REGISTRATION_SKIPPED_TAG: ",".join(skipped)})
        sys.stderr.write(f"nbmlops: reproduction: model {name!r} not registered (nbmlops reproduce --register does)\n")
        return None
    flavor = model_flavor(model)
    try:
        data, trusted, serialization = _serialized(model, flavor)
    except Exception as exc:  # an XGBoost model never fitted, an object its library cannot save
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UnsupportedModelError(f"cannot register a {_model_class(model)}: {flavor} cannot save it: "
                                    f"{type(exc).__name__}: {reason}") from None
    example = _example(features)
    key = uuid.uuid4().hex
    folder = run.settings.state_dir / "models"
    record = {
        "t": "model",
        "run": run.key,
        "key": key,
        "name": name,
        "flavor": flavor,
        "serialization": serialization,
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


def _serialized(model: Any, flavor: str) -> tuple[bytes, list[str], str]:
    """``model`` as bytes, the types to trust to load them back (skops only) and the serialization.

    XGBoost models, LightGBM Boosters and CatBoost models are saved in their library's own format (XGBoost JSON,
    LightGBM's text model, CatBoost's ``cbm``), which holds no code; scikit-learn estimators, pipelines and
    LightGBM's scikit-learn wrappers with skops;
    statsmodels results (which have no format but pickle) with pickle and a ``pyfunc.PythonModel`` with
    cloudpickle, as MLflow saves them: a file this process wrote, loaded back only by the delivery when its
    SHA-256 is the one recorded.
    """
    if flavor == "xgboost":
        with tempfile.TemporaryDirectory(prefix="nbmlops-xgb-") as tmp:
            path = os.path.join(tmp, "model.json")
            model.save_model(path)
            return Path(path).read_bytes(), [], "json"
    if flavor == "catboost":
        with tempfile.TemporaryDirectory(prefix="nbmlops-cb-") as tmp:
            path = os.path.join(tmp, "model.cbm")
            model.save_model(path, format="cbm")
            return Path(path).read_bytes(), [], "cbm"
    if flavor == "lightgbm" and type(model).__name__ == "Booster":
        return model.model_to_string().encode(), [], "text"
    if flavor == "statsmodels":
        import pickle

        return pickle.dumps(model), [], "pickle"
    if flavor == "pyfunc":
        import cloudpickle

        return cloudpickle.dumps(model), [], "cloudpickle"
    import skops.io

    data = skops.io.dumps(model)
    return data, skops.io.get_untrusted_types(data=data), "skops"  # our own model's types, to load it back


def _example(features: Any) -> Any:
    if features is None:
        return None
    head = features.iloc[:_EXAMPLE_ROWS] if hasattr(features, "iloc") else features[:_EXAMPLE_ROWS]
    return head.copy()


def _write_staged(session: Any, folder: Path, key: str, data: bytes, example: Any, features: Any,
                  record: dict[str, Any]) -> None:
    from nbmlops.data import fingerprint, mlflow_schema

    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{key}.{record['serialization']}"
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
