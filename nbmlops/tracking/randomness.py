"""Why a cell may give other results when it runs again: unseeded estimators and global random draws.

A cell is flagged (tag ``nbmlops.nondeterministic``) when it

* builds or calls a scikit-learn estimator, splitter or function that takes a ``random_state`` and
  leaves it None where that randomness is used (``DecisionTreeClassifier()``, ``train_test_split(X, y)``,
  ``KFold(shuffle=True)``; not ``LogisticRegression()`` with its default deterministic solver, nor
  ``KFold()`` without shuffling), or fits such an estimator built earlier (XGBoost, LightGBM and CatBoost
  models are not: their ``random_state=None`` is a fixed seed of the library's own);
* draws from numpy's global generator (``np.random.normal``), an unseeded ``np.random.default_rng()``,
  or Python's ``random`` module.

A seed set in the session (``np.random.seed(...)``, ``random.seed(...)`` in this cell or an earlier
one) makes the global draws repeatable, and so scikit-learn's ``random_state=None`` too, which draws
from numpy's global generator.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from nbmlops.tracking.capture import CellAnalysis, call_name
from nbmlops.tracking.estimators import is_estimator

__all__ = ["NONDETERMINISTIC_TAG", "unseeded_randomness"]

#: tag naming what makes a cell run nondeterministic
NONDETERMINISTIC_TAG = "nbmlops.nondeterministic"
_NUMPY_SEED = re.compile(r"\b(?:np|numpy)\.random\.seed\s*\(|^\s*from\s+numpy\.random\s+import\s.*\bseed\b", re.M)
_PYTHON_SEED = re.compile(r"(?<![\w.])random\.seed\s*\(|^\s*from\s+random\s+import\s.*\bseed\b", re.M)
_NOT_DRAWS = frozenset({"seed", "get_state", "set_state", "getstate", "setstate", "default_rng", "RandomState",
                        "Generator", "SeedSequence", "Random", "SystemRandom"})  # fmt: skip


def _uses_randomness(kind: str, params: Mapping[str, Any]) -> bool:
    """False where scikit-learn documents ``random_state`` as unused for these settings."""
    rules: dict[str, Callable[[Mapping[str, Any]], bool]] = {
        "LogisticRegression": lambda p: p.get("solver", "lbfgs") in ("sag", "saga", "liblinear"),
        "LogisticRegressionCV": lambda p: p.get("solver", "lbfgs") in ("sag", "saga", "liblinear"),
        "Ridge": lambda p: p.get("solver", "auto") in ("sag", "saga"),
        "RidgeClassifier": lambda p: p.get("solver", "auto") in ("sag", "saga"),
        "SVC": lambda p: p.get("probability") is True,
        "NuSVC": lambda p: p.get("probability") is True,
        "learning_curve": lambda p: p.get("shuffle") is True,
        "DummyClassifier": lambda p: p.get("strategy", "prior") in ("stratified", "uniform"),
        "train_test_split": lambda p: p.get("shuffle", True) is not False,
        "shuffle": lambda p: True,
    }
    rule = rules.get(kind)
    if rule is not None:
        return rule(params)
    if kind.endswith("Fold") or kind.endswith("KFold"):
        return bool(params.get("shuffle", False))
    return True


def unseeded_randomness(analysis: CellAnalysis, namespace: Mapping[str, Any], sources: Iterable[str]) -> list[str]:
    """What in the cell draws randomness without a seed, one short phrase each (empty: nothing found).

    ``sources``: the session's cell sources up to and including this one (to find seeds set).
    """
    numpy_seeded, python_seeded = _seeds_set(list(sources))
    found: dict[str, None] = {}
    for call in analysis.calls:
        phrase = _call_phrase(call, namespace, numpy_seeded, python_seeded)
        if phrase:
            found[phrase] = None
    if not numpy_seeded:
        for name in analysis.fitted:
            value = namespace.get(name)
            for kind in _unseeded_estimators(value):
                found[f"{kind} in {name} has random_state=None"] = None
    return _without_repeats(found)


_scanned: list[Any] = [[], False, False]  # the sources read so far, and the seeds found in them


def _seeds_set(sources: list[str]) -> tuple[bool, bool]:
    """Whether the session set numpy's and Python's global seeds. The history (all but the last source,
    the cell itself) is read only where it grew since the last cell; a reset history is read again."""
    history, cell = sources[:-1], sources[-1:]
    seen, numpy_seeded, python_seeded = _scanned
    if history[: len(seen)] != seen:
        seen, numpy_seeded, python_seeded = [], False, False
    new = "\n".join(history[len(seen):])
    numpy_seeded = numpy_seeded or bool(_NUMPY_SEED.search(new))
    python_seeded = python_seeded or bool(_PYTHON_SEED.search(new))
    _scanned[:] = [history, numpy_seeded, python_seeded]
    text = "\n".join(cell)
    return numpy_seeded or bool(_NUMPY_SEED.search(text)), python_seeded or bool(_PYTHON_SEED.search(text))


def _without_repeats(found: Mapping[str, None]) -> list[str]:
    """One phrase per estimator class: the call and the fitted variable often name the same one."""
    seen: set[str] = set()
    phrases = []
    for phrase in found:
        kind = phrase.split("(", 1)[0].split(" ", 1)[0]
        if kind in seen:
            continue
        seen.add(kind)
        phrases.append(phrase)
    return phrases


def _call_phrase(call: ast.Call, namespace: Mapping[str, Any], numpy_seeded: bool, python_seeded: bool) -> str | None:
    target = _resolve(call.func, namespace)
    if target is None:
        return None
    name = call_name(call) or ""
    owner = getattr(target, "__self__", None)
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None and owner is not None and owner is _numpy_global():
        return None if numpy_seeded or name in _NOT_DRAWS else f"np.random.{name} without a seed"
    if numpy_random is not None and target in (getattr(numpy_random, "default_rng", None),
                                               getattr(numpy_random, "RandomState", None)):
        return None if call.args or call.keywords else f"np.random.{name}() without a seed"
    python_random = sys.modules.get("random")
    if python_random is not None and owner is getattr(python_random, "_inst", None) and owner is not None:
        return None if python_seeded or name in _NOT_DRAWS else f"random.{name} without a seed"
    if numpy_seeded or not _from_sklearn(target):
        return None
    parameters = _parameters(target)
    if parameters is None or "random_state" not in parameters or parameters["random_state"] is not None:
        return None
    keywords = {k.arg for k in call.keywords}
    if "random_state" in keywords or None in keywords:
        return None
    literal = {k.arg: _literal(k.value) for k in call.keywords if k.arg}
    if not _uses_randomness(getattr(target, "__name__", name), literal):
        return None
    return f"{getattr(target, '__name__', name)}() without random_state"


def _numpy_global() -> Any:
    mtrand = sys.modules.get("numpy.random.mtrand")
    return getattr(mtrand, "_rand", None) if mtrand is not None else None


_FIXED_DEFAULT_SEED = ("xgboost", "lightgbm", "catboost")


def _fixed_default_seed(kind: type) -> bool:
    """Whether ``random_state=None`` means the library's own fixed seed (XGBoost's 0, LightGBM's and CatBoost's
    defaults in their C++ code), not a draw from numpy's global generator as in scikit-learn."""
    return (getattr(kind, "__module__", None) or "").split(".")[0] in _FIXED_DEFAULT_SEED


def _from_sklearn(target: Any) -> bool:
    return (getattr(target, "__module__", None) or "").startswith("sklearn")


def _parameters(target: Any) -> dict[str, Any] | None:
    """Parameter name -> default (``inspect.Parameter.empty`` turned into a sentinel) of a class or function."""
    try:
        signature = inspect.signature(target if not isinstance(target, type) else target.__init__)  # type: ignore[misc]
    except (TypeError, ValueError):
        return None
    return {name: (p.default if p.default is not inspect.Parameter.empty else ...) for name, p in signature.parameters.items()}


def _resolve(node: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """The object a call's function names, following attributes of modules and classes only (no
    property of a user object is ever evaluated)."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace)
        if isinstance(base, (types.ModuleType, type)):
            return getattr(base, node.attr, None)
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _unseeded_estimators(value: Any) -> Iterator[str]:
    """Class names of the estimators in ``value`` (itself, pipeline steps, nested estimators) that use
    randomness with ``random_state=None``."""
    if not is_estimator(value):
        return
    try:
        params = value.get_params(deep=False)
    except Exception:
        return
    kind = type(value).__name__
    if ("random_state" in params and params["random_state"] is None and _uses_randomness(kind, params)
            and not _fixed_default_seed(type(value))):
        yield kind
    for part in params.values():
        if is_estimator(part):
            yield from _unseeded_estimators(part)
        elif isinstance(part, (list, tuple)):
            for step in part:
                if isinstance(step, (list, tuple)) and len(step) >= 2:
                    yield from _unseeded_estimators(step[1])
