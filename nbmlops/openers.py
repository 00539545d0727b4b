"""Openers that a lower room calls and the package fills in at import: an arrow pointing up, as a callback.

:func:`nbmlops.data.load` opens the project's snapshot store, whose remote (with ``data_store = "mlflow"``, the
MLflow artifact store) only the rooms above data know how to reach; ``nbmlops/__init__.py`` sets
:data:`snapshot_store` to :func:`nbmlops.tracking.artifact_snapshots.open_snapshot_store` (imported on first
use), before any room can be imported; and :data:`model_predictions` to
:func:`nbmlops.registry.predictions.compare_version_predictions`, with which ``nbmlops reproduce`` compares the
predictions of the versions it registers with the original's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["model_predictions", "snapshot_store"]

#: ``snapshot_store(settings)``: the project's snapshot store as the settings say (None: its folder only)
snapshot_store: Callable[[Any], Any] | None = None
#: ``model_predictions(original, new, rtol=, atol=, settings=)``: two registered versions' predictions compared
model_predictions: Callable[..., Any] | None = None
