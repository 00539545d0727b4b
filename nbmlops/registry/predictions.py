"""Whether two registered versions predict the same: the original's and the one its reproduction registered.

Both are loaded through :mod:`nbmlops.registry.safe_load` (whatever their flavor: the same checks as
``monitor``, the ``trusted_models`` setting trusting pickle-based ones) and score the rows of the original's
training features (their snapshot); numbers match within the tolerance, labels exactly.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.backend.models import ModelInputError, download_model, input_columns
from nbmlops.config import Settings
from nbmlops.exceptions import NbmlopsError
from nbmlops.registry.models import FEATURES_TAG, ModelVersionInfo, get_version, registry_client
from nbmlops.registry.safe_load import check_model

__all__ = ["PredictionComparison", "compare_version_predictions"]


@dataclass(frozen=True)
class PredictionComparison:
    """The predictions of ``new`` against ``original`` on ``rows`` rows: ``difference`` says the first one
    (None when they match); ``compared`` is False when they could not be compared (``difference`` says why)."""

    original: str
    new: str
    compared: bool
    rows: int = 0
    difference: str | None = None


def compare_version_predictions(original: str, new: str, *, rtol: float, atol: float,
                                settings: Settings) -> PredictionComparison:
    """Compare the predictions of versions ``original`` and ``new`` (``NAME/VERSION``) on the original's training
    features."""
    client = registry_client(settings)
    try:
        old_version, new_version = get_version(original, client=client), get_version(new, client=client)
        if not old_version.tags.get(FEATURES_TAG):
            return PredictionComparison(original, new, False, difference=f"{original} records no training features")
        features = _training_features(old_version, settings)
        if features is None:
            return PredictionComparison(original, new, False,
                                        difference=f"the training features of {original} have no snapshot to score")
        with tempfile.TemporaryDirectory(prefix="nbmlops-predictions-") as tmp:
            before = _predict(client, old_version, features, Path(tmp, "original"), settings)
            after = _predict(client, new_version, features, Path(tmp, "new"), settings)
    except (NbmlopsError, ModelInputError, ValueError, TypeError) as exc:
        return PredictionComparison(original, new, False, difference=f"not compared: {exc}")
    return PredictionComparison(original, new, True, len(features), _difference(before, after, rtol, atol))


def _training_features(version: ModelVersionInfo, settings: Settings) -> Any:
    from nbmlops.tracking.artifact_snapshots import open_snapshot_store

    digest = version.tags[FEATURES_TAG]
    store = open_snapshot_store(settings)
    return store.load(digest) if digest in store else None


def _predict(client: Any, version: ModelVersionInfo, features: Any, into: Path, settings: Settings) -> Any:
    import numpy as np

    into.mkdir()
    local = download_model(client, version.name, version.version, into, settings.tracking_uri)
    model = check_model(local, version, trusted=version.name in settings.trusted_models).load()
    columns = input_columns(local)
    return np.asarray(model.predict(features[columns] if columns else features))


def _difference(before: Any, after: Any, rtol: float, atol: float) -> str | None:
    """The first difference between two prediction arrays, or None."""
    import numpy as np

    if before.shape != after.shape:
        return f"predictions of shape {after.shape}, not {before.shape}"
    if before.dtype.kind in "biuf" and after.dtype.kind in "biuf":
        same = np.isclose(after.astype(float), before.astype(float), rtol=rtol, atol=atol, equal_nan=True)
    else:
        same = before == after
    close = np.asarray(same).reshape(len(before), -1).all(axis=1) if before.ndim else np.asarray(same).reshape(1)
    if close.all():
        return None
    row = int(np.argmin(close))
    return (f"{int((~close).sum())} of {close.size} predictions differ (first at row {row}: "
            f"{np.asarray(after[row]).tolist()!r}, was {np.asarray(before[row]).tolist()!r})")
