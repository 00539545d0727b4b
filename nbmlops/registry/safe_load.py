"""Loading a registered model without running code that came from the registry.

Every loader of a registered model goes through :func:`check_model` and then :meth:`CheckedModel.load`:

1. the downloaded model directory is digested (SHA-256 over every file's path and bytes) and compared with
   the digest recorded when nbmlops logged it (the version tag ``nbmlops.model_sha256``); a difference is
   refused, trusted or not, and a version without a recorded digest (registered before nbmlops recorded
   them, or outside nbmlops) is refused unless trusted;
2. every path the MLmodel file names must stay inside the model directory (no absolute paths, no ``..``,
   no symbolic links);
3. a scikit-learn model serialized with skops is loaded through skops with a trust list that is nbmlops' own
   (skops' defaults plus :data:`SKLEARN_TYPES`), never the one the MLmodel file carries; a type outside it is
   refused unless trusted. Pickle-based flavors (pickle, cloudpickle, custom pyfunc models) are refused unless
   trusted.

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
    SHA256_TAG,
    ModelFileError,
    load_with_mlflow,
    model_digest,
    read_mlmodel,
    signature_checked,
)
from nbmlops.exceptions import UnsafeModelError
from nbmlops.registry.models import ModelVersionInfo, RegistryError

__all__ = ["SHA256_TAG", "SKLEARN_TYPES", "CheckedModel", "UnsafeModelError", "check_model", "model_digest"]

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


@dataclass(frozen=True)
class CheckedModel:
    """A downloaded model that passed every check: what :meth:`load` will deserialize, and how.

    Attributes:
        how: ``skops`` (scikit-learn through skops, with ``types`` trusted) or ``mlflow`` (a trusted
            pickle-based model, through MLflow's own loader).
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
        if self.how == "mlflow":
            return load_with_mlflow(self.folder)
        import skops.io

        try:
            model = skops.io.load(self.file, trusted=list(self.types))
        except Exception as exc:
            raise RegistryError(f"cannot load {self.version}: {type(exc).__name__}: {_one_line(exc)}") from None
        return signature_checked(model, self.folder)


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
    sklearn = meta.flavors.get("sklearn") or {}
    if sklearn.get("serialization_format") == "skops" and sklearn.get("pickled_model"):
        file = root / str(sklearn["pickled_model"])
        types = _skops_types(file, version, trusted)
        return CheckedModel(version, root, "skops", file, types, tuple(notes))
    flavor = (f"scikit-learn serialized with {sklearn.get('serialization_format') or 'pickle'}" if sklearn
              else f"flavor(s) {', '.join(sorted(meta.flavors)) or 'none'}")
    if not trusted:
        raise UnsafeModelError(name, f"it is a {flavor}: loading it would run code from the registry; trust it "
                                     f"explicitly with --trust-pickle or trusted_models = [{version.name!r}]")
    return CheckedModel(version, root, "mlflow", notes=(*notes, f"loaded {name} ({flavor}) as trusted"))


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
    foreign = [t for t in wanted if t not in SKLEARN_TYPES]
    if foreign and not trusted:
        raise UnsafeModelError(name, f"it holds types nbmlops does not trust: {', '.join(foreign[:5])}"
                                     f"{' ...' if len(foreign) > 5 else ''}; trust it explicitly with "
                                     f"--trust-pickle or trusted_models = [{version.name!r}]")
    return tuple(wanted)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
