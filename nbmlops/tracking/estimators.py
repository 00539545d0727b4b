"""What a scikit-learn estimator says about the run: the params a user set, and a search's best result.

XGBoost's and LightGBM's scikit-learn models are estimators too: their defaults are read from their
bases' constructors when theirs passes parameters on as ``**kwargs`` (``XGBClassifier``). So are CatBoost's
models, which derive from no scikit-learn class: their ``get_params`` holds only the params they were given
(the real defaults live in CatBoost's C++ code; the constructors' are all None), which are their changed ones.

Only the parameters that differ from the estimator's defaults are params, as scikit-learn's own repr
shows them, keyed like ``set_params`` (``model.logisticregression__C``): a pipeline's, a column
transformer's or a search's nested estimators contribute their own changed params under their step
names, never the ``steps``/``transformers`` lists or the estimator objects themselves. A fitted
search (``GridSearchCV``, ``RandomizedSearchCV``, halving searches) adds ``<name>.best_score`` as a
metric and ``<name>.best_params.<key>`` as params.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["changed_params", "is_estimator", "readable", "search_results"]


def is_estimator(value: Any) -> bool:
    """True for a scikit-learn estimator or a CatBoost model (only when scikit-learn, or CatBoost, is already
    imported)."""
    for module, base in (("sklearn.base", "BaseEstimator"), ("catboost.core", "CatBoost")):
        kind = getattr(sys.modules.get(module), base, None)
        if isinstance(kind, type) and isinstance(value, kind):
            return True
    return False


def changed_params(name: str, estimator: Any) -> dict[str, Any]:
    """The params of ``estimator`` that differ from its defaults, prefixed ``name.``; ``{}`` for a
    non-estimator."""
    if not is_estimator(estimator):
        return {}
    return {f"{name}.{key}": value for key, value in _changed(estimator, "")}


def _changed(estimator: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in _non_defaults(estimator):
        if is_estimator(value):
            yield from _changed(value, f"{prefix}{key}__")
        elif _is_step_list(value):
            for step in value:
                if is_estimator(step[1]):
                    yield from _changed(step[1], f"{prefix}{step[0]}__")
        else:
            yield f"{prefix}{key}", readable(value)


def _non_defaults(estimator: Any) -> Iterator[tuple[str, Any]]:
    defaults = _defaults(type(estimator))
    for key, value in estimator.get_params(deep=False).items():
        if key in defaults and (_same(value, defaults[key])):
            continue
        yield key, value


def _defaults(kind: type) -> dict[str, Any]:
    """Each constructor parameter's default, from the class's ``__init__`` and, for the parameters it
    passes on as ``**kwargs`` (XGBoost's ``XGBClassifier``), its bases' (the nearest declaration
    wins; one without a default has none)."""
    found: dict[str, Any] = {}
    declared: set[str] = set()
    for klass in kind.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            parameters = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            continue
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.name in declared:
                continue
            declared.add(parameter.name)
            if parameter.default is not inspect.Parameter.empty:
                found[parameter.name] = parameter.default
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break  # a constructor without **kwargs passes nothing on: its bases' defaults are not this class's
    return found


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, float) and isinstance(default, float) and math.isnan(value) and math.isnan(default):
        return True
    return repr(value) == repr(default)


def _is_step_list(value: Any) -> bool:
    """A pipeline's ``steps``, a column transformer's ``transformers``, a voting model's ``estimators``."""
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(step, (list, tuple)) and len(step) >= 2 and isinstance(step[0], str) for step in value)
    )


def search_results(name: str, value: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """``({"<name>.best_score": s}, {"<name>.best_params.<key>": v, ...})`` for a fitted search."""
    if not is_estimator(value):
        return {}, {}
    best_score = getattr(value, "best_score_", None)
    best_params = getattr(value, "best_params_", None)
    if not isinstance(best_params, dict):
        return {}, {}
    metrics = {}
    try:
        if best_score is not None and not math.isinf(float(best_score)):
            metrics[f"{name}.best_score"] = float(best_score)
    except (TypeError, ValueError):
        pass
    params = {f"{name}.best_params.{key}": readable(v) for key, v in best_params.items()}
    return metrics, params


def readable(value: Any) -> Any:
    """A parameter value as a person would write it: numpy scalars as Python numbers, functions and
    classes by name, a scipy distribution as ``loguniform(0.01, 100)``, any object without a
    meaningful repr by its type name (never a memory address); containers element by element."""
    if isinstance(value, dict):
        return {k: readable(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(readable(v) for v in value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    if " at 0x" in repr(value):
        dist = getattr(value, "dist", None)
        args = getattr(value, "args", None)
        if dist is not None and isinstance(args, tuple):
            return f"{getattr(dist, 'name', type(dist).__name__)}({', '.join(repr(readable(a)) for a in args)})"
        return type(value).__name__
    return value
