"""Openers that a lower room calls and the package fills in at import: an arrow pointing up, as a callback.

:func:`nbmlops.data.load` opens the project's snapshot store, whose remote (with ``data_store = "mlflow"``, the
MLflow artifact store) only the rooms above data know how to reach; ``nbmlops/__init__.py`` sets
:data:`snapshot_store` to :func:`nbmlops.tracking.artifact_snapshots.open_snapshot_store` (imported on first
use), before any room can be imported; and :data:`model_predictions` to
:func:`nbmlops.registry.predictions.compare_version_predictions`, with which ``nbmlops reproduce`` compares the
predictions of the versions it registers with the original's; and :data:`traffic_reader` to
:func:`nbmlops.serving.traffic.read_traffic`, with which the registry reads a served model's live traffic
(``monitor --traffic``, ``models compare --traffic``, ``promote --beat ALIAS:online_*``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["model_predictions", "snapshot_store", "traffic_reader"]

#: ``snapshot_store(settings)``: the project's snapshot store as the settings say (None: its folder only)
snapshot_store: Callable[[Any], Any] | None = None
#: ``model_predictions(original, new, rtol=, atol=, settings=)``: two registered versions' predictions compared
model_predictions: Callable[..., Any] | None = None
#: ``traffic_reader(name, since=, settings=)``: the live traffic a served model logged (a ``Traffic``)
traffic_reader: Callable[..., Any] | None = None
