"""Loading a registered model without running code that came from the registry.

Every loader of a registered model goes through :func:`check_model` and then :meth:`CheckedModel.load`:

1. the downloaded model directory is digested (SHA-256 over every file's path and bytes) and compared with
   the digest recorded when nbmlops logged it (the version tag ``nbmlops.model_sha256``); a difference is
   refused, trusted or not, and a version without a recorded digest (registered before nbmlops recorded
   them, or outside nbmlops) is refused unless trusted;
2. every path the MLmodel file names must stay inside the model directory (no absolute paths, no ``..``,
   no symbolic links);
3. an XGBoost model in its JSON/UBJSON format (of a class in :data:`XGBOOST_CLASSES`), a CatBoost model in its
   ``cbm`` format (of a class in :data:`CATBOOST_CLASSES`) or a LightGBM Booster in its text format, whose MLmodel
   file names MLflow's own loader for it and no code, is loaded through ``mlflow.pyfunc`` (which reads those
   files with the library's own parser, without unpickling); a scikit-learn model or a LightGBM scikit-learn
   wrapper (also a pipeline with an XGBoost, LightGBM or CatBoost final step) serialized with skops is loaded
   through skops with a trust list that is nbmlops' own (skops' defaults plus :data:`SKLEARN_TYPES` and
   :data:`BOOSTING_TYPES`), never the one the MLmodel file carries; a type outside it is refused unless trusted.
   Pickle-based flavors (pickle, cloudpickle, statsmodels, custom pyfunc models) are refused unless trusted.

A model is trusted when the caller says so (``nbmlops monitor --trust-pickle``) or its registered name is in
the ``trusted_models`` setting. MLflow reads the model files (:mod:`nbmlops.backend.models`); skops is imported
inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.backend.models import (
    CATBOOST_CLASSES,
    SHA256_TAG,
    XGBOOST_CLASSES,
    ModelFileError,
    load_with_mlflow,
    model_digest,
    read_mlmodel,
    signature_checked,
)
from nbmlops.exceptions import UnsafeModelError
from nbmlops.registry.models import ModelVersionInfo, RegistryError

__all__ = ["BOOSTING_TYPES", "SHA256_TAG", "SKLEARN_TYPES", "CheckedModel", "UnsafeModelError", "check_model", "model_digest"]

_SPLITTERS = ("KFold", "StratifiedKFold", "GroupKFold", "StratifiedGroupKFold", "RepeatedKFold",
              "RepeatedStratifiedKFold", "ShuffleSplit", "StratifiedShuffleSplit", "GroupShuffleSplit",
              "TimeSeriesSplit", "PredefinedSplit", "LeaveOneOut")
#: scikit-learn's internal types that fitted estimators hold, trusted beyond skops' defaults (which already
#: trust every public scikit-learn estimator, numpy and scipy); skops leaves the tree types out because a
#: crafted file can crash ``predict``: nbmlops trusts them only in an artifact whose SHA-256 it recorded
SKLEARN_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    *(f"sklearn.metrics._dist_metrics.{m}Distance64" for m in ("Euclidean", "Manhattan", "Minkowski", "Chebyshev")),
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.utils._bunch.Bunch",
    "sklearn.metrics._scorer._PassthroughScorer",
    "sklearn.metrics._scorer._Scorer",
    *(f"sklearn.model_selection._split.{name}" for name in _SPLITTERS),
})
#: the XGBoost, LightGBM and CatBoost types a scikit-learn pipeline (or LightGBM's own scikit-learn wrapper) holds,
#: trusted in skops files like :data:`SKLEARN_TYPES`: skops restores their models from the library's own model
#: bytes (``__setstate__``: XGBoost's raw buffer, LightGBM's text model, CatBoost's ``cbm`` bytes beside its
#: params), which hold no code; any other object in their state (a CatBoost param that is a Python object, a
#: custom objective) is a type of its own that skops checks against this list too
BOOSTING_TYPES = frozenset({
    *XGBOOST_CLASSES,
    *CATBOOST_CLASSES,
    "lightgbm.basic.Booster",
    *(f"lightgbm.sklearn.{name}" for name in ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")),
    "collections.OrderedDict",
})


@dataclass(frozen=True)
class CheckedModel:
    """A downloaded model that passed every check: what :meth:`load` will deserialize, and how.

    Attributes:
        how: ``skops`` (through skops, with ``types`` trusted), ``pyfunc`` (XGBoost, LightGBM or CatBoost in
            the library's own format, through ``mlflow.pyfunc``) or ``mlflow`` (a trusted pickle-based model,
            through MLflow's own loader).
        notes: what the caller trusted explicitly, to tell the user.
    """

    version: ModelVersionInfo
    folder: Path
    how: str
    file: Path | None = None
    types: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def load(self) -> Any:
        """The model, with ``predict(data)`` checking ``data`` against its signature (a
        :class:`~nbmlops.backend.models.ModelInputError` when it does not fit)."""
        if self.how in ("mlflow", "pyfunc"):
            return load_with_mlflow(self.folder)
        import skops.io

        try:
            model = skops.io.load(self.file, trusted=list(self.types))
        except Exception as exc:
            raise RegistryError(f"cannot load {self.version}: {type(exc).__name__}: {_one_line(exc)}") from None
        return signature_checked(model, self.folder)

    def load_pyfunc(self) -> Any:
        """The model as MLflow's ``PyFuncModel`` (for MLflow's scoring server, whose schema enforcement applies):
        a skops model is the estimator :meth:`load` reads, wrapped with its MLmodel metadata; the others are
        loaded by MLflow's pyfunc loader, as :meth:`load` loads them."""
        from nbmlops.backend.scoring import pyfunc_model

        return pyfunc_model(self.folder, None if self.how in ("mlflow", "pyfunc") else self.load().model)


def check_model(folder: str | os.PathLike[str], version: ModelVersionInfo, *, trusted: bool) -> CheckedModel:
    """Check a downloaded model directory before anything in it is read as a model.

    Args:
        folder: the model directory (holding ``MLmodel``).
        version: the registered version it was downloaded for (its tags hold the recorded digest).
        trusted: the user trusts this model explicitly: it may use pickle, skops types outside nbmlops'
            list, or lack a recorded digest. A digest that differs, or a path leaving the directory, is
            refused all the same.

    Raises:
        UnsafeModelError: any check failed.
    """
    root = Path(folder)
    name = str(version)
    notes = _check_digest(root, version, trusted)
    meta = _read_mlmodel(root, name)
    for value in _strings(meta.flavors, meta.saved_input_example_info):
        if _leaves(root, value):
            raise UnsafeModelError(name, f"its MLmodel file names {value!r}, a path outside the model directory")
    native = _native_flavor(meta.flavors, root, name)
    if native is not None:
        _library_installed(next(f for f in meta.flavors if f != "python_function"), name)
        return CheckedModel(version, root, "pyfunc", root / native, (), tuple(notes))
    skops_file = _skops_file(meta.flavors)
    if skops_file is not None:
        file = root / skops_file
        types = _skops_types(file, version, trusted)
        for library in sorted({t.split(".")[0] for t in types} & {"xgboost", "lightgbm", "catboost"}):
            _library_installed(library, name)
        return CheckedModel(version, root, "skops", file, types, tuple(notes))
    if not trusted:
        raise UnsafeModelError(name, f"it is a {_described(meta.flavors)}: loading it would run code from the "
                                     f"registry; trust it explicitly with --trust-pickle or trusted_models = "
                                     f"[{version.name!r}]")
    return CheckedModel(version, root, "mlflow",
                        notes=(*notes, f"loaded {name} ({_described(meta.flavors)}) as trusted"))


def _described(flavors: dict[str, Any]) -> str:
    sklearn = flavors.get("sklearn") or flavors.get("lightgbm") or {}
    if "statsmodels" in flavors:
        return "statsmodels model, which MLflow pickles (statsmodels has no format without pickle)"
    if "sklearn" in flavors or sklearn.get("serialization_format"):
        library = "scikit-learn" if "sklearn" in flavors else "LightGBM scikit-learn"
        return f"{library} model serialized with {sklearn.get('serialization_format') or 'pickle'}"
    if (flavors.get("python_function") or {}).get("cloudpickle_version") or "python_model" in str(flavors):
        return "custom pyfunc model (cloudpickle)"
    return f"flavor(s) {', '.join(sorted(flavors)) or 'none'} in a form nbmlops does not load safely"


def _native_flavor(flavors: dict[str, Any], root: Path, name: str) -> str | None:
    """The data file of an XGBoost (JSON/UBJSON, of a class in :data:`XGBOOST_CLASSES`), CatBoost (``cbm``, of a
    class in :data:`CATBOOST_CLASSES`) or LightGBM Booster (text) model that MLflow's pyfunc loader reads without
    unpickling, or None when the model is not one."""
    for flavor, ok in (("xgboost", _xgboost_native), ("catboost", _catboost_native), ("lightgbm", _lightgbm_native)):
        conf = flavors.get(flavor)
        if not isinstance(conf, dict) or not ok(conf):
            continue
        pyfunc = flavors.get("python_function") or {}
        if set(flavors) - {flavor, "python_function"} or pyfunc.get("loader_module") != f"mlflow.{flavor}" \
                or pyfunc.get("code") or pyfunc.get("data") != conf.get("data"):
            raise UnsafeModelError(name, f"its {flavor} model is loaded through "
                                         f"{pyfunc.get('loader_module') or 'no loader'} with other flavors or code "
                                         f"({', '.join(sorted(flavors))}): not the way nbmlops logged it")
        if not (root / str(conf.get("data"))).is_file():
            raise UnsafeModelError(name, f"its model file {conf.get('data')} is missing")
        return str(conf["data"])
    return None


def _library_installed(library: str, name: str) -> None:
    """Import the model's library (only now that a model of it is loaded); its absence names the extra."""
    import importlib

    try:
        importlib.import_module(library)
    except ImportError:
        raise RegistryError(f"cannot load {name}: it is a {library} model and {library} is not installed "
                            f"(pip install 'nbmlops[{library}]')") from None


def _xgboost_native(conf: dict[str, Any]) -> bool:
    return conf.get("model_class") in XGBOOST_CLASSES and conf.get("model_format") in ("json", "ubj") \
        and str(conf.get("data", "")).endswith(f".{conf.get('model_format')}")


def _catboost_native(conf: dict[str, Any]) -> bool:
    """MLflow's CatBoost flavor names the class without its module: one of :data:`CATBOOST_CLASSES`, in ``cbm``."""
    return f"catboost.core.{conf.get('model_type')}" in CATBOOST_CLASSES and conf.get("save_format") == "cbm" \
        and bool(conf.get("data"))


def _lightgbm_native(conf: dict[str, Any]) -> bool:
    return conf.get("model_class") == "lightgbm.basic.Booster" and bool(conf.get("data"))


def _skops_file(flavors: dict[str, Any]) -> str | None:
    """The skops file of a scikit-learn model or a LightGBM scikit-learn wrapper, if the model is one."""
    sklearn = flavors.get("sklearn") or {}
    if sklearn.get("serialization_format") == "skops" and sklearn.get("pickled_model"):
        return str(sklearn["pickled_model"])
    lightgbm = flavors.get("lightgbm") or {}
    if lightgbm.get("serialization_format") == "skops" and lightgbm.get("data") and "sklearn" not in flavors \
            and (flavors.get("python_function") or {}).get("loader_module") == "mlflow.lightgbm":
        return str(lightgbm["data"])
    return None


def _check_digest(root: Path, version: ModelVersionInfo, trusted: bool) -> list[str]:
    recorded = version.tags.get(SHA256_TAG)
    if recorded is None:
        if not trusted:
            raise UnsafeModelError(
                str(version), "no SHA-256 of its artifact was recorded (registered before nbmlops recorded "
                f"them, or outside nbmlops); trust it explicitly with --trust-pickle or trusted_models = "
                f"[{version.name!r}]")
        return [f"{version} has no recorded SHA-256; loaded because it is trusted"]
    try:
        actual = model_digest(root)
    except ModelFileError as exc:
        raise UnsafeModelError(str(version), exc.reason) from None
    if actual != recorded:
        raise UnsafeModelError(str(version), f"its artifact's SHA-256 is {actual[:16]}..., not the "
                                             f"{recorded[:16]}... recorded when it was logged: it was changed")
    return []


def _read_mlmodel(root: Path, name: str) -> Any:
    try:
        return read_mlmodel(root)
    except ModelFileError as exc:
        raise UnsafeModelError(name, exc.reason) from None


def _strings(*values: Any) -> Iterator[str]:
    """Every string inside nested dicts and lists (the flavors' settings and paths)."""
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from _strings(*value.values())
        elif isinstance(value, (list, tuple)):
            yield from _strings(*value)


def _leaves(root: Path, value: str) -> bool:
    path = Path(value)
    if path.is_absolute() or ".." in path.parts or value.startswith("~"):
        return True
    return not (root / path).resolve().is_relative_to(root.resolve())


def _skops_types(file: Path, version: ModelVersionInfo, trusted: bool) -> tuple[str, ...]:
    """The types skops must be told to trust to load ``file``: only nbmlops' own, unless ``trusted``."""
    import skops.io

    name = str(version)
    if not file.is_file():
        raise UnsafeModelError(name, f"its model file {file.name} is missing")
    try:
        wanted = skops.io.get_untrusted_types(file=file)
    except Exception as exc:
        raise UnsafeModelError(name, f"{file.name} is not a readable skops file: {_one_line(exc)}") from None
    foreign = [t for t in wanted if t not in SKLEARN_TYPES | BOOSTING_TYPES]
    if foreign and not trusted:
        raise UnsafeModelError(name, f"it holds types nbmlops does not trust: {', '.join(foreign[:5])}"
                                     f"{' ...' if len(foreign) > 5 else ''}; trust it explicitly with "
                                     f"--trust-pickle or trusted_models = [{version.name!r}]")
    return tuple(wanted)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
