"""What a value a cell left behind is: a metric, scores, data, or a small array of settings.

* a **metric**: a real number (Python or numpy scalar, 0-d array), not a bool, not infinite;
* **scores**: what a scikit-learn scoring helper returned, or a 1-D/2-D float array or list of
  numbers of at most :data:`MAX_SCORES` values under a name that says so (``scores``, ``acc``,
  ``test_loss``...): recorded as ``<name>.mean`` and ``<name>.std`` (per row, as a series, for
  2-D learning/validation curves), per key for a ``cross_validate`` dict; never data;
* **data**: pandas DataFrame/Series and numpy arrays that are not scores;
* **a settings array**: a 1-D numeric array of at most :data:`MAX_PARAM_ARRAY` values built from
  literals (``np.logspace(-3, 2, 30)``): a param, never data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "MAX_PARAM_ARRAY",
    "MAX_SCORES",
    "MINIMIZED",
    "dataset_context",
    "is_data",
    "is_metric_value",
    "is_timing",
    "lower_is_better",
    "name_words",
    "number_list",
    "says_scores",
    "score_metrics",
    "settings_array",
]

#: the largest literal-built numeric array recorded as a param (larger ones are data)
MAX_PARAM_ARRAY = 100
#: the largest array or list a score-like name makes scores of (larger ones are data)
MAX_SCORES = 1000
_SCORE_WORDS = frozenset(
    {
        "score", "scores", "acc", "accuracy", "accuracies", "auc", "roc", "f1", "precision", "recall",
        "r2", "mse", "rmse", "mae", "loss", "losses", "error", "errors", "logloss",
    }
)  # fmt: skip
#: metric-name words that mean "lower is better" (matched as whole words: val_loss, trainRMSE, error-rate)
MINIMIZED = frozenset({
    "loss", "losses", "logloss", "nll", "error", "errors", "err", "rmse", "mse", "mae", "mape", "smape", "rmsle",
    "msle", "wer", "cer", "perplexity", "ppl", "cost", "regret", "latency", "brier", "time", "seconds", "duration",
    "entropy", "deviance", "distance", "miss", "fpr", "fnr", "bpd",
})  # fmt: skip
_METRIC_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_TIMING = re.compile(r"(^|_)(time|times|duration|seconds|elapsed)$")
_EVALUATION_WORDS = frozenset({"test", "te", "val", "valid", "validation", "eval", "evaluation", "holdout", "dev"})
_TRAINING_WORDS = frozenset({"train", "tr", "training", "fit"})


def name_words(name: str) -> set[str]:
    """The lower-case words of a variable name: ``X_testScaled`` -> ``{"x", "test", "scaled"}``."""
    return {word.lower() for word in re.findall(r"[A-Za-z][a-z0-9]*|[A-Z]+(?![a-z])|\d+", name)}


def is_metric_value(value: Any) -> bool:
    """True for a real, finite-or-NaN numeric scalar (Python or numpy, or a 0-d array), not a bool."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if isinstance(value, (int, float)):
        return not isinstance(value, float) or not math.isinf(value)
    if type(value).__module__ == "numpy" and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        return value.dtype.kind in "iuf" and not (value.dtype.kind == "f" and math.isinf(float(value)))
    return False


def is_timing(metric: str) -> bool:
    """True for a metric that measures time (``fit_time.mean``, ``score_time``, ``duration``)."""
    return any(_TIMING.search(part) for part in metric.lower().split("."))


def lower_is_better(metric: str) -> bool:
    """Whether a metric named ``metric`` improves downwards: a word of its name means a loss, an error or a
    duration (``val_loss``, ``trainRMSE``, ``fit_time``, ``logloss``; see :data:`MINIMIZED`), but not
    scikit-learn's negated scores (``neg_mean_squared_error``: higher is better)."""
    words = [word.lower() for word in _METRIC_WORDS.findall(metric)]
    if not words or words[0] == "neg":
        return False
    return any(word in MINIMIZED or word.endswith(("loss", "error")) for word in words)


def says_scores(name: str) -> bool:
    """True when a variable name says it holds scores (``scores``, ``test_acc``, ``val_loss``)."""
    return bool(name_words(name) & _SCORE_WORDS)


def _is_ndarray(value: Any) -> bool:
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ == "ndarray"


def number_list(value: Any) -> list[float] | None:
    """The numbers of a non-empty list or tuple of real numbers, else None."""
    if isinstance(value, (list, tuple)) and value and all(is_metric_value(v) for v in value):
        return [float(v) for v in value]
    return None


def _score_array(value: Any, limit: int | None) -> Any:
    """``value`` as a 1-D or 2-D float array of scores, or None."""
    import numpy as np

    if number_list(value) is not None:
        value = np.asarray(value, dtype=float)
    if not _is_ndarray(value) or value.ndim not in (1, 2) or value.dtype.kind not in "fiu" or value.size == 0:
        return None
    if limit is not None and value.size > limit:
        return None
    return value.astype(float)


def score_metrics(name: str, value: Any, from_scorer: bool) -> dict[str, list[float]] | None:
    """The metrics scores stand for: ``{"<name>.mean": [m], "<name>.std": [s]}`` for a 1-D array or
    list; one value per row (a series) for a 2-D curve; per key for a ``cross_validate`` dict.
    None when ``value`` is not scores (``from_scorer``: a scoring helper returned it)."""
    if isinstance(value, dict) and from_scorer:
        found: dict[str, list[float]] = {}
        for key, part in value.items():
            found.update(score_metrics(f"{name}.{key}", part, True) or {})
        return found or None
    if not from_scorer and not says_scores(name):
        return None
    array = _score_array(value, None if from_scorer else MAX_SCORES)
    floats = isinstance(value, (list, tuple)) or getattr(getattr(value, "dtype", None), "kind", "") == "f"
    if array is None or (from_scorer and not floats and not says_scores(name)):
        return None
    if array.ndim == 1:
        return {f"{name}.mean": [float(array.mean())], f"{name}.std": [float(array.std())]}
    return {f"{name}.mean": [float(v) for v in array.mean(axis=1)], f"{name}.std": [float(v) for v in array.std(axis=1)]}


def settings_array(value: Any) -> list[Any] | None:
    """A small 1-D numeric array as a list (the value of its param), else None."""
    if _is_ndarray(value) and value.ndim == 1 and 0 < value.size <= MAX_PARAM_ARRAY and value.dtype.kind in "iuf":
        return [round(v, 12) if isinstance(v, float) else v for v in value.tolist()]
    return None


def is_data(value: Any) -> bool:
    """True for the objects tracked as datasets: pandas DataFrame/Series and non-scalar numpy arrays."""
    kind = type(value)
    if kind.__module__.startswith("pandas") and kind.__name__ in ("DataFrame", "Series"):
        return True
    return _is_ndarray(value) and value.ndim > 0


def dataset_context(name: str) -> str:
    """MLflow's dataset context for a data variable, from the words of its name: ``X_test``, ``val_df``
    -> ``evaluation``; ``X_train``, ``train_df`` -> ``training``; anything else -> ``input``."""
    words = name_words(name)
    if words & _EVALUATION_WORDS:
        return "evaluation"
    if words & _TRAINING_WORDS:
        return "training"
    return "input"


def flatten(prefix: str, mapping: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``prefix.key`` for each key of ``mapping``."""
    for key, value in mapping.items():
        yield f"{prefix}.{key}", value
