"""What a cell's code says about its params, metrics and data, read from its syntax tree.

* params: top-level assignments of literals (``alpha = 0.5``, ``layers = [64, 32]``);
* metric candidates: other top-level assignments (``acc = accuracy_score(...)``), kept as metrics
  when their value after the cell is a real number;
* data candidates: names the cell reads that already exist in the namespace.

"Top level" includes the bodies of ``if``/``for``/``while``/``with``/``try`` at module level, but
not functions, classes, lambdas or comprehensions, and never loop or ``with ... as`` targets.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = [
    "CellAnalysis",
    "analyse_cell",
    "estimator_params",
    "is_data",
    "is_metric_value",
]

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class CellAnalysis:
    """The names a cell binds and reads."""

    literals: dict[str, Any] = field(default_factory=dict)
    assigned: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)


def analyse_cell(tree: ast.Module) -> CellAnalysis:
    """Read params, assigned names and read names off a parsed cell."""
    result = CellAnalysis()
    for node in _top_level_statements(tree.body):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for name, sub_value in _bind(target, value):
                if name.startswith("_"):
                    continue
                literal = _literal(sub_value)
                if literal is not _NOT_LITERAL and not isinstance(node, ast.AugAssign):
                    result.literals[name] = literal
                    if name in result.assigned:
                        result.assigned.remove(name)
                else:
                    result.literals.pop(name, None)
                    if name not in result.assigned:
                        result.assigned.append(name)
    seen: set[str] = set()
    for name in _loaded_names(tree):
        if name not in seen:
            seen.add(name)
            result.read.append(name)
    return result


def _top_level_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While)):
            yield from _top_level_statements(node.body)
            yield from _top_level_statements(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield from _top_level_statements(node.body)
        elif isinstance(node, ast.Try) or (sys.version_info >= (3, 11) and isinstance(node, ast.TryStar)):
            yield from _top_level_statements(node.body)
            for handler in node.handlers:
                yield from _top_level_statements(handler.body)
            yield from _top_level_statements(node.orelse)
            yield from _top_level_statements(node.finalbody)


def _bind(target: ast.expr, value: ast.expr | None) -> Iterator[tuple[str, ast.expr | None]]:
    """Pair each plain name bound by ``target`` with the part of ``value`` it receives (if known)."""
    if isinstance(target, ast.Name):
        yield target.id, value
    elif isinstance(target, (ast.Tuple, ast.List)):
        values: list[ast.expr | None]
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
            values = list(value.elts)
        else:
            values = [None] * len(target.elts)
        for sub_target, sub_value in zip(target.elts, values):
            if isinstance(sub_target, ast.Starred):
                continue
            yield from _bind(sub_target, sub_value)


_NOT_LITERAL = object()


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return _NOT_LITERAL
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _loaded_names(tree: ast.AST) -> Iterator[str]:
    """Every name read anywhere in the cell, in order of appearance."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            yield node.id


def is_metric_value(value: Any) -> bool:
    """True for a real, finite-or-NaN numeric scalar (Python or numpy), not a bool."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if isinstance(value, (int, float)):
        return not isinstance(value, float) or not math.isinf(value)
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        return value.dtype.kind in "iuf" and not (value.dtype.kind == "f" and math.isinf(float(value)))
    return False


def is_data(value: Any) -> bool:
    """True for the objects tracked as datasets: pandas DataFrame/Series and non-scalar numpy arrays."""
    kind = type(value)
    module = kind.__module__
    if module.startswith("pandas") and kind.__name__ in ("DataFrame", "Series"):
        return True
    return module == "numpy" and kind.__name__ == "ndarray" and value.ndim > 0


_EVALUATION_WORDS = frozenset({"test", "val", "valid", "validation", "eval", "evaluation", "holdout", "dev"})
_TRAINING_WORDS = frozenset({"train", "training", "fit"})


def dataset_context(name: str) -> str:
    """MLflow's dataset context for a variable, from the words of its name: ``X_test``, ``val_df`` ->
    ``evaluation``; ``X_train``, ``train_df`` -> ``training``; anything else -> ``input``."""
    words = {word.lower() for word in re.findall(r"[A-Za-z][a-z]*|[A-Z]+(?![a-z])", name)}
    if words & _EVALUATION_WORDS:
        return "evaluation"
    if words & _TRAINING_WORDS:
        return "training"
    return "input"


def estimator_params(name: str, value: Any) -> dict[str, Any]:
    """``get_params()`` of a scikit-learn estimator, prefixed ``name.``; ``{}`` for anything else."""
    if "sklearn" not in sys.modules or not type(value).__module__.startswith("sklearn"):
        return {}
    from sklearn.base import BaseEstimator

    if not isinstance(value, BaseEstimator):
        return {}
    params = {}
    for key, param in value.get_params(deep=True).items():
        if isinstance(param, BaseEstimator):
            continue  # a nested estimator: its own params come next, under their own keys
        params[f"{name}.{key}"] = getattr(param, "__name__", None) or param if callable(param) else param
    return params

