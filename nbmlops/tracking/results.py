"""What a cell left behind, read off its namespace once it ends: params, metrics, series and output data.

The syntax tree says which names the cell binds (:mod:`nbmlops.tracking.capture`); their values after
the cell say what each one is (:mod:`nbmlops.tracking.values`, :mod:`nbmlops.tracking.estimators`):

* a number bound outside any loop: a metric (a name bound only inside a loop is a loop artefact);
* scores (a scoring helper's result, or a small float array or list under a score-like name):
  ``<name>.mean`` and ``<name>.std``; a ``cross_validate`` dict per key;
* a list of numbers the cell appends to in a loop: a metric series, one step per value;
* a dict of numbers the cell computes (not a literal): one metric per key, ``<name>.<key>``;
* a fitted search: ``<name>.best_score`` and ``<name>.best_params.<key>``; an estimator (scikit-learn,
  XGBoost's and LightGBM's scikit-learn models, CatBoost models): its parameters that differ from the defaults;
* the evaluation history a boosting or Keras model the cell fits keeps, or a dict the cell hands
  ``xgboost.train``/``lightgbm.record_evaluation`` to fill: metric series, one step per round, and
  the best iteration (:mod:`nbmlops.tracking.eval_history`);
* a small numeric array built from literals (``np.logspace(-3, 2, 30)``): a param;
* the values a ``for`` loop that fits estimators sweeps over: one param, a list;
* DataFrames, Series and arrays that are none of the above: output datasets.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbmlops.tracking.capture import CellAnalysis
from nbmlops.tracking.estimators import changed_params, is_estimator, search_results
from nbmlops.tracking.eval_history import TrainingCurves, history_names, read_curves
from nbmlops.tracking.values import (
    MAX_PARAM_ARRAY,
    is_data,
    is_metric_value,
    number_list,
    says_scores,
    score_metrics,
    settings_array,
)

__all__ = ["MAX_METRIC_KEYS", "CellResults", "is_score_like", "read_results"]

#: the most keys a computed dict of numbers may have to become one metric per key
MAX_METRIC_KEYS = 100


@dataclass
class CellResults:
    """What a cell recorded: params the user set (``params``), changed estimator params
    (``estimator_params``), single metric values, metric series, output dataset names, and names
    whose values are not data (scores, settings arrays) however a later cell reads them."""

    params: dict[str, Any] = field(default_factory=dict)
    estimator_params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    not_data: list[str] = field(default_factory=list)


def read_results(
    analysis: CellAnalysis, namespace: Mapping[str, Any], kinds: set[str], scores: frozenset[str] = frozenset()
) -> CellResults:
    """Read the cell's results from ``namespace`` by the rules above (``kinds``: the capture kinds on;
    ``scores``: names that held scores or settings before the cell, so what is computed from them
    alone is no data either)."""
    found = CellResults()
    curves = _training_curves(analysis, namespace)
    found.series.update(curves.series)
    found.metrics.update(curves.metrics)
    for name in analysis.assigned:
        if name not in namespace or name.startswith("_") or name in curves.histories:
            continue
        _classify(name, namespace[name], analysis, namespace, found)
        if name in found.outputs and _from_scores(analysis.sources.get(name, set()), scores, found, namespace):
            found.outputs.remove(name)
            found.not_data.append(name)
    user = {key: repr(value) for key, value in found.params.items()}
    user.update({key: repr(value) for key, value in analysis.literals.items()})
    found.estimator_params = {  # not `grid.param_grid` again when the cell has `param_grid`
        key: value
        for key, value in found.estimator_params.items()
        if not isinstance(value, (dict, list, tuple))
        or user.get(key.rsplit(".", 1)[-1].rsplit("__", 1)[-1]) != repr(value)
    }
    if "params" in kinds:
        _sweeps(analysis, namespace, found)
    else:
        found.params.clear()
        found.estimator_params.clear()
    if "metrics" not in kinds:
        found.metrics.clear()
        found.series.clear()
    if "data" not in kinds:
        found.outputs.clear()
    return found


def _training_curves(analysis: CellAnalysis, namespace: Mapping[str, Any]) -> TrainingCurves:
    """The curves of what the cell fits or hands a library to fill; a model only a loop binds is one of
    many (its curve is not the cell's)."""

    def cells(names: list[str]) -> list[str]:
        return [
            n for n in names
            if not n.startswith("_") and not (n in analysis.loop_bound and n not in analysis.bound_outside)
        ]

    models = cells(list(dict.fromkeys([*analysis.assigned, *analysis.fitted])))
    try:
        return read_curves(models, cells(history_names(analysis.calls)), namespace)
    except Exception as exc:  # an odd history object must not cost the cell's other results
        sys.stderr.write(f"nbmlops: training curves not read: {type(exc).__name__}: {exc}\n")
        return TrainingCurves()


def _classify(name: str, value: Any, analysis: CellAnalysis, namespace: Mapping[str, Any], found: CellResults) -> None:
    loop_only = name in analysis.loop_bound and name not in analysis.bound_outside
    if is_estimator(value):
        changed = changed_params(name, value)
        if loop_only:  # built in a loop: its swept setting is the loop's last value, not the cell's
            swept = {repr(namespace[t]) for t in analysis.loop_targets if t in namespace}
            changed = {k: v for k, v in changed.items() if repr(v) not in swept}
        found.estimator_params.update(changed)
        metrics, params = search_results(name, value)
        found.metrics.update(metrics)
        found.estimator_params.update(params)
        return
    if is_metric_value(value):
        if not loop_only:
            found.metrics[name] = float(value)
        return
    numbers = number_list(value)
    if numbers is not None and name in analysis.appended:
        found.series[name] = numbers
    scores = score_metrics(name, value, from_scorer=name in analysis.scored)
    if scores is not None:
        for key, values in scores.items():
            if len(values) == 1:
                found.metrics[key] = values[0]
            else:
                found.series[key] = values
        found.not_data.append(name)
        return
    if name in analysis.arrays or name in analysis.scored:  # a scoring helper's sizes or parameter range
        settings = settings_array(value)
        if settings is not None:
            found.params[name] = settings
            found.not_data.append(name)
            return
    if isinstance(value, dict) and name not in analysis.literals and 0 < len(value) <= MAX_METRIC_KEYS:
        if all(is_metric_value(v) for v in value.values()) and all(isinstance(k, (str, int)) for k in value):
            for key, number in value.items():
                found.metrics[f"{name}.{key}"] = float(number)
            return
    if is_data(value):
        found.outputs.append(name)


def _from_scores(sources: set[str], before: frozenset[str], found: CellResults, namespace: Mapping[str, Any]) -> bool:
    """True when a value is computed from scores or settings only (``test_mean = test_scores.mean(1)``)."""
    derived = {n for n in sources if n in before or n in found.not_data}
    data = {n for n in sources - derived if is_data(namespace.get(n))}
    return bool(derived) and not data


def _sweeps(analysis: CellAnalysis, namespace: Mapping[str, Any], found: CellResults) -> None:
    """The values each fitting loop swept over, as one list param named by the loop variable."""
    for sweep in analysis.sweeps:
        if sweep.target in analysis.literals or sweep.target in found.params:
            continue
        values: Any = list(sweep.values) if sweep.values is not None else None
        if values is None and sweep.source is not None:
            source = namespace.get(sweep.source)
            values = settings_array(source)
            if values is None and isinstance(source, (list, tuple)) and 0 < len(source) <= MAX_PARAM_ARRAY:
                if all(isinstance(v, (int, float, str, bool)) or v is None for v in source):
                    values = list(source)
        if values is not None:
            found.params[sweep.target] = values


def is_score_like(name: str, value: Any) -> bool:
    """True for a value a later cell reads that is scores rather than data (a score-like name on a
    small float array), so it is not logged as an input dataset."""
    return says_scores(name) and score_metrics(name, value, from_scorer=False) is not None
