"""Registering a trained model: staged in the user's process, created in the registry by the delivery.

A registration goes through the journal like every other record, so it survives a store that is down
and a kernel that dies, and a headless kernel never imports mlflow:

1. on the user's thread, the model is serialized with skops (safe to load: no pickle) and a few rows of
   its training features are copied, so later changes to the objects do not change what is registered;
   the record carries the serialized model's SHA-256 and the types it holds, read from the live object;
2. in the background, both are written under ``.nbmlops/models/`` and a ``model`` record is journaled;
3. the delivery (this process's writer, ``nbmlops run`` for headless kernels, or ``nbmlops sync``) logs
   the model in MLflow's scikit-learn flavor with a signature and an input example, as a logged model
   of the run, and creates the registry version with its lineage as tags. A version is created once
   per registration: a replay finds it by its registration key. The staged file is loaded only when its
   SHA-256 is the one recorded; the logged model directory's SHA-256 is a tag of the logged model and of
   the version (``nbmlops.model_sha256``), which every later load checks (:mod:`nbmlops.registry.safe_load`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from nbmlops.config import resolve_settings
from nbmlops.registry.models import (
    EVALUATION_TAG,
    FEATURES_TAG,
    PARAMS_TAG,
    REGISTRATION_KEY_TAG,
    TRAINING_TAG,
    ModelVersionInfo,
    RegistryError,
    _quote,
    check_model_name,
    version_info,
)
from nbmlops.registry.safe_load import SHA256_TAG, model_digest
from nbmlops.shorten import clip

__all__ = ["UnsupportedModelError", "deliver_model", "find_registration", "register", "stage_model"]

_EXAMPLE_ROWS = 5
_TAG_LIMIT = 5000  # MLflow's limit on a model version's tag value


class UnsupportedModelError(RegistryError, TypeError):
    """The object is not a model nbmlops can register (today: scikit-learn estimators and pipelines)."""


def _model_class(model: Any) -> str:
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def _check_model(model: Any) -> None:
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
) -> str:
    """Stage ``model`` for registration as ``name`` from ``run`` (a started :class:`~nbmlops.tracking.run.Run`).

    ``features`` is the data the model was fitted on (for its signature and input example);
    ``training`` and ``evaluation`` map variable names to fingerprints. Returns the registration key.

    Raises:
        ModelReferenceError: a name MLflow would refuse.
        UnsupportedModelError: not a scikit-learn model.
    """
    import skops.io

    check_model_name(name)
    _check_model(model)
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


def register(
    model: Any,
    name: str,
    *,
    training_data: Any = None,
    evaluation_data: Any = None,
    wait: bool = True,
    timeout: float | None = None,
) -> ModelVersionInfo | None:
    """Register ``model`` as a new version of ``name``, with its lineage.

    The version belongs to the active run (``with nbmlops.track():`` or a ``%%track`` cell); with none
    active, a run named ``register <name>`` is recorded for it. The model is logged in MLflow's
    scikit-learn flavor with skops serialization; ``training_data`` (the features it was fitted on:
    a DataFrame or array) gives its signature and input example, and is fingerprinted and logged as
    the run's training dataset, as ``evaluation_data`` is as its evaluation dataset.

    Returns the new version once it is in the registry (waiting up to ``timeout`` seconds), or None
    with ``wait=False``, in a kernel run headlessly by ``nbmlops run`` (whose runner registers it), and
    inside a ``%%track`` cell (the version is created when the cell ends, with the run's git state).

    Raises:
        ModelReferenceError: a name MLflow would refuse.
        UnsupportedModelError: not a scikit-learn model.
        FlushTimeoutError: the registry did not answer within ``timeout``.
        RegistryError: the store refused the registration.
    """
    from nbmlops.exceptions import TrackingError
    from nbmlops.tracking.run import Run, active_run, end_for

    check_model_name(name)
    _check_model(model)
    try:
        run, own = active_run(), False
    except TrackingError:  # no run active: record one for the registration
        run, own = Run(f"register {name}", tags={"nbmlops.kind": "model"}), True
        run.start()
    error: BaseException | None = None
    try:
        training: dict[str, str] = {}
        evaluation: dict[str, str] = {}
        if training_data is not None:
            training["training_data"] = run.log_dataset(training_data, "training_data", context="training")
        if evaluation_data is not None:
            evaluation["evaluation_data"] = run.log_dataset(evaluation_data, "evaluation_data", context="evaluation")
        key = stage_model(model, name, run, features=training_data, training=training, evaluation=evaluation)
    except BaseException as exc:
        error = exc
        raise
    finally:
        if own:
            end_for(run, error)
    session = run.session
    if not wait or session.handoff or session.holding:
        return None
    session.flush(timeout)
    found = find_registration(name, key)
    if found is None:
        raise RegistryError(
            f"the registry refused model {name!r} (see the warning above and "
            f"{resolve_settings().journal_dir / 'refused.jsonl'})"
        )
    return found


def find_registration(name: str, key: str, client: Any = None) -> ModelVersionInfo | None:
    """The version created for registration ``key`` of model ``name``, if it exists yet."""
    from nbmlops.registry.models import registry_client

    client = client or registry_client()
    found = client.search_model_versions(f"name = '{_quote(name)}' and tags.`{REGISTRATION_KEY_TAG}` = '{key}'")
    return version_info(client, found[0]) if found else None


def deliver_model(client: Any, run_id: str, record: dict[str, Any]) -> None:
    """Create the registry version a ``model`` record describes (once: a replay finds the first one).

    Raises ``RecordRejected`` when the staged model is gone or cannot be loaded: retrying cannot help.
    """
    from nbmlops.backend.store import RecordRejected

    if find_registration(record["name"], record["key"], client) is not None:
        _remove_staged(record)
        return
    path = Path(record.get("file", ""))
    if not path.is_file():
        raise RecordRejected(f"model {record['name']!r}: the staged model {path} is gone")
    try:
        model = _load_staged(path, record)
        signature, example = _signature(model, record)
    except Exception as exc:
        raise RecordRejected(
            f"model {record['name']!r}: cannot load the staged model: {type(exc).__name__}: {exc}"
        ) from exc
    run = client.get_run(run_id)
    tags = _lineage_tags(run, record)
    with tempfile.TemporaryDirectory(prefix="nbmlops-model-") as tmp:
        import mlflow.sklearn
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        local = os.path.join(tmp, "model")
        mlflow.sklearn.save_model(
            model, local, serialization_format="skops", skops_trusted_types=record["trusted"] or None,
            signature=signature, input_example=example,
        )
        logged = _logged_model(client, run.info.experiment_id, record["key"])
        if logged is None:
            logged = client.create_logged_model(
                run.info.experiment_id, name="model", source_run_id=run_id,
                tags={REGISTRATION_KEY_TAG: record["key"], "nbmlops.registered_as": record["name"]},
            )
        if logged.status == LoggedModelStatus.READY:  # uploaded by an earlier, interrupted delivery
            digest = logged.tags.get(SHA256_TAG)
        else:
            digest = model_digest(local)
            client.set_logged_model_tags(logged.model_id, {SHA256_TAG: digest})
            client.log_model_artifacts(logged.model_id, local)
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])
    if digest:
        tags[SHA256_TAG] = digest
    _ensure_registered_model(client, record["name"])
    if find_registration(record["name"], record["key"], client) is None:
        client.create_model_version(
            # the logged model's own location: a models:/ source would be resolved by MLflow's sqlite registry
            # against the process-global tracking URI, not this client's
            record["name"], source=logged.artifact_location, run_id=run_id, tags=tags,
            model_id=logged.model_id, await_creation_for=0,
        )
    _remove_staged(record)


def _logged_model(client: Any, experiment_id: str, key: str) -> Any:
    """The logged model an earlier, interrupted delivery of this registration created, if any."""
    found = client.search_logged_models(
        [experiment_id], filter_string=f"tags.`{REGISTRATION_KEY_TAG}` = '{key}'", max_results=1
    )
    return found[0] if found else None


def _load_staged(path: Path, record: dict[str, Any]) -> Any:
    """The staged model, trusting the types the record lists only when the file is the one staged."""
    import skops.io

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ValueError(f"{path.name} is not the file that was staged (its SHA-256 differs from the record's)")
    return skops.io.loads(data, trusted=record["trusted"] or None)


def _signature(model: Any, record: dict[str, Any]) -> tuple[Any, Any]:
    """The model's signature (inputs from the full training features' schema) and input example."""
    example_path = record.get("example")
    if not example_path or not Path(example_path).is_file():
        return None, None
    from mlflow.models import infer_signature
    from mlflow.types import Schema

    if example_path.endswith(".parquet"):
        import pandas as pd

        example = pd.read_parquet(example_path)
    else:
        import numpy as np

        example = np.load(example_path, allow_pickle=False)
    outputs = model.predict(example) if hasattr(model, "predict") else None
    signature = infer_signature(example, outputs)
    schema = json.loads(record.get("schema") or "null") or {}
    if "mlflow_colspec" in schema:  # nulls seen anywhere in the training data make a column optional
        signature.inputs = Schema.from_json(json.dumps(schema["mlflow_colspec"]))
    return signature, example


def _lineage_tags(run: Any, record: dict[str, Any]) -> dict[str, str]:
    run_tags = run.data.tags
    tags = {
        REGISTRATION_KEY_TAG: record["key"],
        "nbmlops.flavor": record.get("flavor", "sklearn"),
        "nbmlops.model_class": record.get("class", ""),
        "nbmlops.run_id": run.info.run_id,
        "nbmlops.notebook": run_tags.get("nbmlops.notebook") or run_tags.get("mlflow.source.name", ""),
        "nbmlops.cell_id": run_tags.get("nbmlops.cell_id", ""),
        "nbmlops.git_commit": run_tags.get("mlflow.source.git.commit", ""),
        TRAINING_TAG: json.dumps(record.get("training") or {}),
        EVALUATION_TAG: json.dumps(record.get("evaluation") or {}),
        PARAMS_TAG: clip(json.dumps(dict(sorted(run.data.params.items()))), _TAG_LIMIT, "..."),
    }
    if record.get("features"):
        tags[FEATURES_TAG] = record["features"]
    parent = run_tags.get("mlflow.parentRunId")
    if parent:
        tags["nbmlops.parent_run_id"] = parent
    if run_tags.get("nbmlops.parent_key"):  # a headless kernel's cell: the key of the notebook's run
        tags["nbmlops.parent_key"] = run_tags["nbmlops.parent_key"]
    return {k: v for k, v in tags.items() if v}


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it first
                raise


def _remove_staged(record: dict[str, Any]) -> None:
    for key in ("file", "example"):
        if record.get(key):
            Path(record[key]).unlink(missing_ok=True)
