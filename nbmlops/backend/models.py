"""Models in MLflow: the delivery of a staged registration (logged in the MLflow flavor of its library, then a
registry version), and the reads of a downloaded model (its MLmodel file, its signature, MLflow's loader).

A registration is delivered once: a replay finds the version by its registration key, and a logged model an
interrupted delivery left behind by the same key. The staged file is loaded only when its SHA-256 is the one
recorded; the logged model directory's SHA-256 (:func:`model_digest`) is a tag of the logged model and of the
version (:data:`SHA256_TAG`), which every later load checks (:mod:`nbmlops.registry.safe_load`).
mlflow, skops and the model libraries are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbmlops.exceptions import ModelFileError, ModelInputError, ModelReferenceError, RecordRejected
from nbmlops.shorten import clip

__all__ = [
    "CATBOOST_CLASSES", "EVALUATION_TAG", "FEATURES_TAG", "LOCK_PREFIX", "PARAMS_TAG", "REGISTRATION_KEY_TAG",
    "SHA256_TAG", "TRAINING_TAG", "XGBOOST_CLASSES", "ModelFileError", "ModelInputError", "check_model_name", "deliver_model", "download_model", "input_columns", "load_with_mlflow",
    "model_digest", "read_mlmodel", "signature_checked",
]

REGISTRATION_KEY_TAG = "nbmlops.registration_key"
TRAINING_TAG = "nbmlops.data.training"
EVALUATION_TAG = "nbmlops.data.evaluation"
FEATURES_TAG = "nbmlops.data.features"
PARAMS_TAG = "nbmlops.params"
SHA256_TAG = "nbmlops.model_sha256"
#: registered models of this name prefix are the promotion locks (:mod:`nbmlops.registry.promote`)
LOCK_PREFIX = "nbmlops-lock."
_TAG_LIMIT = 5000  # MLflow's limit on a model version's tag value


def check_model_name(name: str) -> str:
    """``name`` when MLflow accepts it as a registered model name; else a :class:`ModelReferenceError`."""
    if not isinstance(name, str) or not name.strip():
        raise ModelReferenceError("a registered model name must be a non-empty string")
    if any(c in name for c in "/:") or any(ord(c) < 32 for c in name) or name.startswith(LOCK_PREFIX):
        raise ModelReferenceError(
            f"model name {name!r}: may not contain '/', ':' or control characters, nor start with {LOCK_PREFIX!r}"
        )
    return name


#: what MLflow's loader of a ``models:/`` URI writes into the model folder it loads (on a local artifact store,
#: the stored folder itself): the registered name and version, no part of the model
_REGISTERED_MODEL_META = "registered_model_meta"


def model_digest(folder: str | os.PathLike[str]) -> str:
    """The SHA-256 of a model directory: of every file's relative path and content, in path order (but the
    ``registered_model_meta`` MLflow writes into its top folder when it loads the version).

    Raises:
        ModelFileError: the directory holds a symbolic link.
    """
    root = Path(folder)
    total = hashlib.sha256()
    for path in sorted(_files(root), key=lambda p: p.relative_to(root).as_posix()):
        if path.parent == root and path.name == _REGISTERED_MODEL_META:
            continue
        total.update(path.relative_to(root).as_posix().encode() + b"\0")
        total.update(_file_digest(path).encode() + b"\n")
    return total.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                raise ModelFileError(f"{path.relative_to(root)} is a symbolic link")
            if name in files:
                yield path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- reading a downloaded model ---------------------------------------------------------------------


def read_mlmodel(folder: Path) -> Any:
    """The model's MLmodel file as MLflow reads it (``flavors``, ``signature``, ``saved_input_example_info``).

    Raises:
        ModelFileError: there is none, or it cannot be read.
    """
    from mlflow.models import Model

    if not (folder / "MLmodel").is_file():
        raise ModelFileError("its artifact has no MLmodel file")
    try:
        return Model.load(str(folder))
    except Exception as exc:
        raise ModelFileError(f"its MLmodel file cannot be read: {_one_line(exc)}") from None


def input_columns(folder: Path) -> list[str]:
    """The named inputs of the model's signature ([] when it has none)."""
    signature = read_mlmodel(folder).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return []
    return list(signature.inputs.input_names())


def load_with_mlflow(folder: Path) -> Any:
    """A trusted model loaded by MLflow's own loader; its ``predict`` raises :class:`ModelInputError` for data
    that does not fit its signature."""
    import mlflow.pyfunc

    return _InputChecked(mlflow.pyfunc.load_model(str(folder)), None)


def signature_checked(model: Any, folder: Path) -> Any:
    """``model`` with a ``predict`` that first checks its input against the signature in ``folder``'s MLmodel
    (a :class:`ModelInputError` when it does not fit)."""
    return _InputChecked(model, read_mlmodel(folder).signature)


class _InputChecked:
    """A model whose ``predict`` checks its input against a signature; MLflow's refusal becomes
    :class:`ModelInputError`."""

    def __init__(self, model: Any, signature: Any) -> None:
        self.model = model
        self.signature = signature

    def predict(self, data: Any) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.models import validate_schema

        try:
            if self.signature is not None and self.signature.inputs is not None:
                validate_schema(data, self.signature.inputs)
            return self.model.predict(data)
        except MlflowException as exc:
            raise ModelInputError(_one_line(exc.message)) from None


def download_model(client: Any, name: str, version: int, into: Path, tracking_uri: str) -> Path:
    """Download a registered version's model directory into ``into``; returns its local path."""
    from mlflow.artifacts import download_artifacts

    from nbmlops.backend.downloads import quiet_downloads

    uri = client.get_model_version_download_uri(name, str(version))
    with quiet_downloads():
        return Path(download_artifacts(artifact_uri=uri, dst_path=str(into), tracking_uri=tracking_uri))


# -- delivering a registration ----------------------------------------------------------------------


def deliver_model(client: Any, run_id: str, record: dict[str, Any]) -> None:
    """Create the registry version a ``model`` record describes (once: a replay finds the first one).

    Raises :class:`RecordRejected` when the staged model is gone or cannot be loaded: retrying cannot help.
    """
    if _registered(client, record["name"], record["key"]):
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
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        local = os.path.join(tmp, "model")
        _save_model(model, local, record, signature, example)
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
    if not _registered(client, record["name"], record["key"]):
        client.create_model_version(
            # the logged model's own location: a models:/ source would be resolved by MLflow's sqlite registry
            # against the process-global tracking URI, not this client's
            record["name"], source=logged.artifact_location, run_id=run_id, tags=tags,
            model_id=logged.model_id, await_creation_for=0,
        )
    _remove_staged(record)


def _registered(client: Any, name: str, key: str) -> bool:
    """True when registration ``key`` of model ``name`` has its version already."""
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    return bool(client.search_model_versions(f"name = '{quoted}' and tags.`{REGISTRATION_KEY_TAG}` = '{key}'"))


def _logged_model(client: Any, experiment_id: str, key: str) -> Any:
    """The logged model an earlier, interrupted delivery of this registration created, if any."""
    found = client.search_logged_models(
        [experiment_id], filter_string=f"tags.`{REGISTRATION_KEY_TAG}` = '{key}'", max_results=1
    )
    return found[0] if found else None


#: the classes whose native XGBoost file nbmlops loads (the MLmodel file names one; no other is instantiated)
XGBOOST_CLASSES = frozenset({
    "xgboost.core.Booster",
    *(f"xgboost.sklearn.{name}" for name in ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier",
                                            "XGBRFRegressor")),
})


#: the classes whose CatBoost model file (``cbm``) nbmlops loads; MLflow's loader knows no others either
CATBOOST_CLASSES = frozenset(
    f"catboost.core.{name}" for name in ("CatBoost", "CatBoostClassifier", "CatBoostRegressor", "CatBoostRanker")
)


def _load_staged(path: Path, record: dict[str, Any]) -> Any:
    """The staged model, read only when the file is the one staged (its SHA-256 is the record's): then the types
    the record lists are trusted (skops), or its pickle is the user's own model (statsmodels, pyfunc)."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ValueError(f"{path.name} is not the file that was staged (its SHA-256 differs from the record's)")
    serialization = record.get("serialization", "skops")
    if serialization == "json":
        return _native_model(record.get("class", ""), XGBOOST_CLASSES, path)
    if serialization == "cbm":
        return _native_model(record.get("class", ""), CATBOOST_CLASSES, path, format="cbm")
    if serialization == "text":
        import lightgbm

        return lightgbm.Booster(model_str=data.decode())
    if serialization in ("pickle", "cloudpickle"):
        import cloudpickle

        return cloudpickle.loads(data)
    import skops.io

    return skops.io.loads(data, trusted=record["trusted"] or None)


def _native_model(model_class: str, classes: frozenset[str], path: Path, **options: str) -> Any:
    """A model of one of ``classes`` (:data:`XGBOOST_CLASSES`, :data:`CATBOOST_CLASSES`) read from its library's own
    file (XGBoost JSON or UBJSON, CatBoost ``cbm``) by the library's ``load_model``."""
    import importlib

    if model_class not in classes:
        raise ValueError(f"{model_class!r} is not one of the model classes {', '.join(sorted(classes))}")
    module, _, name = model_class.rpartition(".")
    model = getattr(importlib.import_module(module), name)()
    model.load_model(str(path), **options)
    return model


def _save_model(model: Any, local: str, record: dict[str, Any], signature: Any, example: Any) -> None:
    """Save ``model`` in its library's MLflow flavor: XGBoost as JSON, CatBoost as ``cbm``, a LightGBM Booster as
    its text model, LightGBM's scikit-learn wrappers and scikit-learn models with skops; statsmodels and pyfunc
    models as MLflow saves them (pickle, cloudpickle: loaded only when trusted, :mod:`nbmlops.registry.safe_load`)."""
    flavor = record.get("flavor", "sklearn")
    common = {"signature": signature, "input_example": example}
    if flavor == "xgboost":
        import mlflow.xgboost

        mlflow.xgboost.save_model(model, local, model_format="json", **common)
    elif flavor == "catboost":
        import mlflow.catboost

        mlflow.catboost.save_model(model, local, format="cbm", **common)
    elif flavor == "lightgbm":
        import mlflow.lightgbm

        skops = {} if record.get("serialization") == "text" else {
            "serialization_format": "skops", "skops_trusted_types": record["trusted"] or None}
        mlflow.lightgbm.save_model(model, local, **skops, **common)
    elif flavor == "statsmodels":
        import mlflow.statsmodels

        mlflow.statsmodels.save_model(model, local, **common)
    elif flavor == "pyfunc":
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(local, python_model=model, **common)
    else:
        import mlflow.sklearn

        mlflow.sklearn.save_model(model, local, serialization_format="skops",
                                  skops_trusted_types=record["trusted"] or None, **common)


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
    outputs = _outputs(model, example, record.get("flavor", "sklearn"))
    signature = infer_signature(example, outputs)
    schema = json.loads(record.get("schema") or "null") or {}
    if "mlflow_colspec" in schema:  # nulls seen anywhere in the training data make a column optional
        signature.inputs = Schema.from_json(json.dumps(schema["mlflow_colspec"]))
    return signature, example


def _outputs(model: Any, example: Any, flavor: str) -> Any:
    """The model's predictions on the input example, for the signature's outputs (None when it cannot say)."""
    if flavor == "pyfunc" or not hasattr(model, "predict"):
        return None  # a PythonModel's predict takes a context: MLflow infers its signature itself
    if flavor == "xgboost" and type(model).__name__ == "Booster":
        import xgboost

        return model.predict(xgboost.DMatrix(example))
    return model.predict(example)


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
    tags.update({str(k): str(v) for k, v in (record.get("tags") or {}).items()})  # e.g. nbmlops.reproduction_of
    return {k: v for k, v in tags.items() if v}


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except (MlflowException, RecordRejected):
        try:
            client.create_registered_model(name)
        except (MlflowException, RecordRejected) as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":  # another process created it first
                raise


def _remove_staged(record: dict[str, Any]) -> None:
    for key in ("file", "example"):
        if record.get(key):
            Path(record[key]).unlink(missing_ok=True)


def _one_line(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
