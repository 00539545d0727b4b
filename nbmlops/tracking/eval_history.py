"""Training curves a library keeps anyway, read off what a cell left behind: no logging code, no callback.

Boosting libraries record each evaluation set's metrics round by round, and Keras records each epoch's
metrics, whether anyone asks or not. After a tracked cell these histories become metric series, one step
per round or epoch (steps 0, 1, ...), named after the variable that holds them:

* an XGBoost or LightGBM scikit-learn model fitted with ``eval_set`` (``evals_result_``), or a CatBoost
  model (``get_evals_result()``: CatBoost also keeps the training set's metrics, as ``learn``), also as
  the last step of a scikit-learn pipeline: ``<name>.<eval set>.<metric>``, e.g.
  ``model.validation_0.logloss``, ``model.valid_0.binary_logloss``, ``model.learn.Logloss``; a CatBoost
  model evaluated only every ``metric_period`` iterations (a param other than 1) keeps no value per
  iteration and gives no curve;
* the dict a cell passes as ``evals_result=`` (``xgboost.train``) or to ``lightgbm.record_evaluation``:
  the same, under the dict's name, e.g. ``history.val.logloss``;
* a Keras ``History`` (what ``fit`` returns, and a fitted model's ``history``): ``<name>.<metric>``,
  e.g. ``history.val_loss``.

Only objects the cell binds or fits count (a model fitted in an earlier cell and only used here has
no curve of this cell), and not one bound only inside a loop (the last of several models is not the
cell's); a history held under two names is logged once, under the name the cell binds first.

The best iteration of early stopping is the metric ``<name>.best_iteration``, as the library counts it
(XGBoost from 0, LightGBM from 1); without early stopping there is none. CatBoost (from 0) has one
whenever it was given an eval set, early stopping or not: the iteration its ``use_best_model`` (on by
default then) keeps the trees up to. Characters MLflow does not
allow in a metric name become ``_`` (``@`` becomes ``_at_``, as MLflow's own autologging writes it:
``ndcg@5`` -> ``ndcg_at_5``). Objects are recognised by the module of their type (``xgboost.``,
``lightgbm.``, ``catboost.``, ``keras.``), so none of these libraries is ever imported here.
"""

from __future__ import annotations

import ast
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbmlops.tracking.values import is_metric_value

__all__ = ["MAX_CURVES", "TrainingCurves", "history_names", "library_of", "read_curves"]

#: the most curves one history may give (more are not a training history)
MAX_CURVES = 100
_BOOSTING = frozenset({"xgboost", "lightgbm", "catboost"})
_LIBRARIES = _BOOSTING | {"keras", "tf_keras", "tensorflow"}
#: calls that fill a dict the cell passes them with evaluation history
_RECORDERS = frozenset({"record_evaluation"})
_HISTORY_KEYWORDS = frozenset({"evals_result", "eval_result"})
_NOT_IN_NAMES = re.compile(r"[^\w./ -]")


@dataclass
class TrainingCurves:
    """What histories the cell's objects held: metric series, single metrics (best iteration), and the
    names whose value was a history (nothing else to say about them)."""

    series: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    histories: list[str] = field(default_factory=list)


def library_of(value: Any) -> str | None:
    """``xgboost``, ``lightgbm``, ``catboost``, ``keras``... for an object of one of those libraries, else None."""
    root = type(value).__module__.split(".", 1)[0]
    return root if root in _LIBRARIES else None


def history_names(calls: Iterable[ast.Call]) -> list[str]:
    """Names the cell hands a library to fill with evaluation history: ``evals_result=history``
    (``xgboost.train``) and ``record_evaluation(history)`` (LightGBM)."""
    names: list[str] = []
    for call in calls:
        func = call.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        arguments = [kw.value for kw in call.keywords if kw.arg in _HISTORY_KEYWORDS]
        if called in _RECORDERS and call.args:
            arguments.append(call.args[0])
        for argument in arguments:
            if isinstance(argument, ast.Name) and argument.id not in names:
                names.append(argument.id)
    return names


def read_curves(models: Iterable[str], histories: Iterable[str], namespace: Mapping[str, Any]) -> TrainingCurves:
    """The curves of ``models`` (names of fitted library objects) and ``histories`` (names of dicts a
    library filled), by the rules above; a history seen under two names is read once."""
    found = TrainingCurves()
    seen: set[int] = set()
    for name in histories:
        value = namespace.get(name)
        if isinstance(value, Mapping) and id(value) not in seen:
            curves = _eval_sets(name, value)
            if curves:
                seen.add(id(value))
                found.series.update(curves)
                found.histories.append(name)
    for name in models:
        value = _final_step(namespace.get(name))
        library = library_of(value) if name in namespace else None
        if library is None:
            continue
        history = _history_of(value, library)
        if history is not None and id(history) not in seen:
            seen.add(id(history))
            curves = _eval_sets(name, history) if library in _BOOSTING else _epochs(name, history)
            found.series.update(curves)
            if curves and type(value).__name__ == "History":
                found.histories.append(name)
        best = _best_iteration(value, library)
        if best is not None:
            found.metrics[f"{name}.best_iteration"] = float(best)
    return found


def _final_step(value: Any) -> Any:
    """A scikit-learn pipeline's last estimator (its model), else ``value`` itself."""
    if library_of(value) is None and type(value).__name__ == "Pipeline":
        steps = getattr(value, "steps", None)
        if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) and len(steps[-1]) == 2:
            return steps[-1][1]
    return value


def _history_of(value: Any, library: str) -> Mapping[str, Any] | None:
    """The history a fitted object keeps: a boosting model's ``evals_result_`` (CatBoost's, a property, is
    ``get_evals_result()``), a Keras ``History``'s ``history`` (or a Keras model's ``history.history``)."""
    try:
        if library == "catboost" and _metric_period(value) != 1:
            return None  # one value every few iterations: its steps would not be the iterations
        if library in _BOOSTING:
            history = getattr(value, "evals_result_", None)  # a property that raises before fit (LightGBM)
        else:
            holder = value if type(value).__name__ == "History" else getattr(value, "history", None)
            history = getattr(holder, "history", None)
    except Exception:
        return None
    return history if isinstance(history, Mapping) and history else None


def _metric_period(value: Any) -> Any:
    """How often a CatBoost model computed its metrics: its ``metric_period`` param (``get_params`` holds only
    the params that were given), 1 by default."""
    params = value.get_params()
    return params.get("metric_period", 1) if isinstance(params, Mapping) else None


def _best_iteration(value: Any, library: str) -> int | None:
    """Early stopping's best iteration; None without early stopping (XGBoost raises, LightGBM says 0) or,
    for CatBoost, without an eval set (None)."""
    if library not in _BOOSTING:
        return None
    attribute = "best_iteration_" if library in ("lightgbm", "catboost") and hasattr(type(value), "best_iteration_") \
        else "best_iteration"
    try:
        best: Any = getattr(value, attribute, None)
    except Exception:  # an unfitted model's property
        return None
    if isinstance(best, bool) or not isinstance(best, numbers.Integral):
        return None
    return int(best) if library != "lightgbm" or int(best) > 0 else None


def _eval_sets(name: str, history: Mapping[Any, Any]) -> dict[str, list[float]]:
    """``{eval set: {metric: [values]}}`` as ``{"<name>.<eval set>.<metric>": values}``; ``{}`` when the
    mapping is not shaped so."""
    curves: dict[str, list[float]] = {}
    for eval_set, metrics in history.items():
        if not isinstance(eval_set, str) or not isinstance(metrics, Mapping):
            return {}
        for metric, values in metrics.items():
            numbers = _numbers(values)
            if not isinstance(metric, str) or numbers is None:
                return {}
            curves[f"{name}.{_clean(eval_set)}.{_clean(metric)}"] = numbers
    return curves if len(curves) <= MAX_CURVES else {}


def _epochs(name: str, history: Mapping[Any, Any]) -> dict[str, list[float]]:
    """Keras' ``{metric: [value per epoch]}`` as ``{"<name>.<metric>": values}``."""
    curves: dict[str, list[float]] = {}
    for metric, values in history.items():
        numbers = _numbers(values)
        if isinstance(metric, str) and numbers is not None:
            curves[f"{name}.{_clean(metric)}"] = numbers
    return curves if len(curves) <= MAX_CURVES else {}


def _numbers(values: Any) -> list[float] | None:
    if isinstance(values, Sequence) and not isinstance(values, str) and values:
        if all(is_metric_value(v) or isinstance(v, float) for v in values):  # an infinite loss is still a step
            return [float(v) for v in values]
    return None


def _clean(part: str) -> str:
    """A history's key as part of an MLflow metric name."""
    return _NOT_IN_NAMES.sub("_", part.replace("@", "_at_")).strip(" /.") or "_"
