"""What a cell's code says about its params, metrics and data, read from its syntax tree.

The statements of the cell are followed in execution order ("top level" includes the bodies of
``if``/``for``/``while``/``with``/``try``, not functions, classes, lambdas or comprehensions):

* **inputs** (``read``): names the cell reads before it binds them, so their value at cell start;
* **outputs** (``assigned``): names the cell binds by assignment, also when they existed before, and
  names whose items or attributes it assigns (``df["x"] = ...``);
* **params** (``literals``): names bound to a literal (``alpha = 0.5``), except empty containers,
  dicts whose values are all strings (colours, labels, styles) and containers the cell then mutates;
  ``arrays``: names bound to a small numeric array built from literals (``np.logspace(-3, 2, 30)``);
  ``sweeps``: the values a ``for`` loop that fits something iterates over (``for C in [0.1, 1]:``);
* loop targets (``loop_targets``) are neither params nor metrics; ``appended``: lists a loop appends
  to (a metric series when they hold numbers); ``scored``: names bound to what a scikit-learn
  scoring helper returns (``cross_val_score``, ``cross_validate``, ``learning_curve``...);
* ``fitted``: names whose ``fit``-like method the cell calls; ``calls``: every call, for the
  nondeterminism check.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ARRAY_BUILDERS", "SCORE_FUNCTIONS", "CellAnalysis", "Sweep", "analyse_cell", "call_name"]

#: scikit-learn helpers whose results are scores (arrays, or dicts of arrays), never data
SCORE_FUNCTIONS = frozenset(
    {"cross_val_score", "cross_validate", "learning_curve", "validation_curve", "permutation_test_score"}
)
#: numpy functions that, called with literal arguments, build a small array of settings (a param)
ARRAY_BUILDERS = frozenset({"logspace", "linspace", "geomspace", "arange", "array", "asarray"})
_FIT_METHODS = frozenset({"fit", "fit_transform", "fit_predict", "partial_fit", "fit_resample"})
_MUTATORS = frozenset({"append", "extend", "insert", "update", "setdefault", "pop", "add", "remove", "clear"})
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class Sweep:
    """A ``for`` loop that fits estimators: its target and what it iterates over.

    ``values`` is the literal sequence when the code spells it (``[0.1, 1]``, ``range(1, 8)``);
    ``source`` the name iterated over otherwise (its value is read after the cell).
    """

    target: str
    values: tuple[Any, ...] | None = None
    source: str | None = None


@dataclass
class CellAnalysis:
    """The names a cell reads and binds, and what its code says about them."""

    literals: dict[str, Any] = field(default_factory=dict)
    assigned: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    arrays: list[str] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    loop_targets: set[str] = field(default_factory=set)
    loop_bound: set[str] = field(default_factory=set)
    bound_outside: set[str] = field(default_factory=set)
    sources: dict[str, set[str]] = field(default_factory=dict)
    appended: list[str] = field(default_factory=list)
    scored: dict[str, str] = field(default_factory=dict)
    fitted: list[str] = field(default_factory=list)
    calls: list[ast.Call] = field(default_factory=list)


def analyse_cell(tree: ast.Module) -> CellAnalysis:
    """Read inputs, outputs, params and the rest off a parsed cell."""
    walker = _Walker()
    walker.block(tree.body, in_loop=False)
    result = walker.result
    mutated = set(walker.mutated)
    for name in list(result.literals):
        value = result.literals[name]
        if name in mutated or not _is_setting(value):
            del result.literals[name]
    result.assigned = [n for n in result.assigned if n not in result.loop_targets]
    for name in walker.mutated:
        if name not in result.assigned and name not in result.loop_targets:
            result.assigned.append(name)
    return result


def call_name(call: ast.Call) -> str | None:
    """The last name of what is called: ``cross_val_score`` for ``model_selection.cross_val_score(...)``."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_setting(value: Any) -> bool:
    """A literal worth a param: not an empty container, not a dict of strings only (styling, labels)."""
    if isinstance(value, (list, tuple, dict, set)) and not value:
        return False
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return False
    return True


if sys.version_info >= (3, 11):
    _TRY: tuple[type[ast.stmt], ...] = (ast.Try, ast.TryStar)
else:
    _TRY = (ast.Try,)


class _Walker:
    """Follows the top-level statements in execution order, keeping what has been bound so far."""

    def __init__(self) -> None:
        self.result = CellAnalysis()
        self.bound: set[str] = set()
        self.mutated: list[str] = []
        self.in_loop = False

    def block(self, body: Iterable[ast.stmt], in_loop: bool) -> None:
        for node in body:
            outer, self.in_loop = self.in_loop, in_loop
            self.statement(node)
            self.in_loop = outer

    def statement(self, node: ast.stmt) -> None:
        r = self.result
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if value is not None:
                self.reads(value)
            for target in targets:
                self.target_reads(target, augmented=isinstance(node, ast.AugAssign))
            if value is None:
                return
            self._note_call(value, list(targets))
            read_by_value = set(_loads(value))
            for target in targets:
                for name, sub_value in _bind(target, value):
                    r.sources.setdefault(name, set()).update(read_by_value)
                    self.assign(name, sub_value, literal_ok=not isinstance(node, ast.AugAssign) and not self.in_loop)
                    (r.loop_bound if self.in_loop else r.bound_outside).add(name)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.reads(node.iter)
            names = list(_store_names(node.target))
            r.loop_targets.update(names)
            self.bound.update(names)
            sweep = _sweep(node)
            if sweep is not None:
                r.sweeps.append(sweep)
            self.block(node.body, in_loop=True)
            self.block(node.orelse, self.in_loop)
        elif isinstance(node, ast.While):
            self.reads(node.test)
            self.block(node.body, in_loop=True)
            self.block(node.orelse, self.in_loop)
        elif isinstance(node, ast.If):
            self.reads(node.test)
            self.block(node.body, self.in_loop)
            self.block(node.orelse, self.in_loop)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.reads(item.context_expr)
                if item.optional_vars is not None:
                    names = list(_store_names(item.optional_vars))
                    r.loop_targets.update(names)  # a file or context object: no param, no metric
                    self.bound.update(names)
            self.block(node.body, self.in_loop)
        elif isinstance(node, _TRY):
            self.block(node.body, self.in_loop)
            for handler in node.handlers:
                if handler.type is not None:
                    self.reads(handler.type)
                if handler.name:
                    self.bound.add(handler.name)
                self.block(handler.body, self.in_loop)
            self.block(node.orelse, self.in_loop)
            self.block(node.finalbody, self.in_loop)
        elif isinstance(node, _SCOPES):
            for decorator in node.decorator_list:
                self.reads(decorator)
            self.reads(node, local=_locals_of(node))
            self.bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                self.bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.target_reads(target, augmented=False)
                for name in _store_names(target):
                    self.bound.discard(name)
        else:
            self.reads(node)
        if isinstance(node, ast.Expr):
            self._note_call(node.value, [])
            if self.in_loop:
                self._note_append(node.value)

    def assign(self, name: str, value: ast.expr | None, literal_ok: bool) -> None:
        r = self.result
        self.bound.add(name)
        if name.startswith("_"):
            return
        literal = _literal(value)
        if literal is not _NOT_LITERAL and literal_ok:
            r.literals[name] = literal
            if name in r.assigned:
                r.assigned.remove(name)
            if name in r.arrays:
                r.arrays.remove(name)
            return
        r.literals.pop(name, None)
        if isinstance(value, ast.Call) and literal_ok and _is_literal_array(value):
            if name not in r.arrays:
                r.arrays.append(name)
        elif name in r.arrays:
            r.arrays.remove(name)
        if name not in r.assigned:
            r.assigned.append(name)

    def reads(self, node: ast.AST, local: frozenset[str] = frozenset()) -> None:
        """Note the names ``node`` reads (before binding) and the calls it makes; bind its ``:=`` targets."""
        for name in _loads(node, local):
            if name not in self.bound and name not in self.result.read:
                self.result.read.append(name)
        for name in _walrus_names(node):
            if name not in local:
                self.assign(name, None, literal_ok=False)
                (self.result.loop_bound if self.in_loop else self.result.bound_outside).add(name)
        for call in _calls(node):
            self.result.calls.append(call)
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr in _FIT_METHODS:
                base = _base_name(func.value)
                if base and base not in self.result.fitted:
                    self.result.fitted.append(base)

    def target_reads(self, target: ast.expr, augmented: bool) -> None:
        """An assignment target reads what it indexes into, and (``+=``) the name it updates."""
        if isinstance(target, ast.Name):
            if augmented:
                self.reads(ast.Name(id=target.id, ctx=ast.Load()))
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            self.reads(target)
            base = _base_name(target)
            if base:
                self.reads(ast.Name(id=base, ctx=ast.Load()))
                if base not in self.mutated:
                    self.mutated.append(base)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.target_reads(element.value if isinstance(element, ast.Starred) else element, augmented)

    def _note_call(self, value: ast.expr, targets: list[ast.expr]) -> None:
        """Names bound to a scoring helper's result; names mutated in place by a method call."""
        if not isinstance(value, ast.Call):
            return
        name = call_name(value)
        if name in SCORE_FUNCTIONS:
            for target in targets:
                for bound in _store_names(target):
                    self.result.scored[bound] = name
        func = value.func
        if isinstance(func, ast.Attribute) and func.attr in _MUTATORS:
            base = _base_name(func.value)
            if base and base not in self.mutated:
                self.mutated.append(base)

    def _note_append(self, value: ast.expr) -> None:
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "append":
            if isinstance(value.func.value, ast.Name):
                name = value.func.value.id
                if name not in self.result.appended:
                    self.result.appended.append(name)


def _sweep(node: ast.For | ast.AsyncFor) -> Sweep | None:
    """The loop as a sweep, when its body fits or scores something and its target is one name
    (or the second of ``enumerate``'s pair)."""
    if not any(_fits(call) for stmt in node.body for call in _calls(stmt)):
        return None
    target, iterable = node.target, node.iter
    if (
        isinstance(target, ast.Tuple)
        and len(target.elts) == 2
        and isinstance(iterable, ast.Call)
        and call_name(iterable) == "enumerate"
        and iterable.args
    ):
        target, iterable = target.elts[1], iterable.args[0]
    if not isinstance(target, ast.Name) or not any(target.id in set(_loads(stmt)) for stmt in node.body):
        return None  # a loop that only repeats (``for repeat in range(5):``) sweeps nothing
    if _trains_in_steps(node, target.id):
        return None  # epochs of one model (``partial_fit``, or the target only numbers the steps): no sweep
    if isinstance(iterable, ast.Name):
        return Sweep(target.id, source=iterable.id)
    if isinstance(iterable, ast.Call) and call_name(iterable) == "range" and isinstance(iterable.func, ast.Name):
        bounds = [_literal(arg) for arg in iterable.args]
        if bounds and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds) and not iterable.keywords:
            values = range(*bounds)
            return Sweep(target.id, values=tuple(values)) if 0 < len(values) <= 1000 else None
        return None
    literal = _literal(iterable)
    if isinstance(literal, (list, tuple)) and literal:
        return Sweep(target.id, values=tuple(literal))
    return None


def _trains_in_steps(node: ast.For | ast.AsyncFor, target: str) -> bool:
    """Whether the loop trains one model step by step rather than trying values: it fits incrementally
    (``partial_fit``), or its target is read only as a ``step=`` argument (``log_metric(..., step=epoch)``)."""
    calls = [call for stmt in node.body for call in _calls(stmt)]
    if any(call_name(call) == "partial_fit" for call in calls):
        return True
    as_step = {id(kw.value) for call in calls for kw in call.keywords if kw.arg == "step"}
    reads = [n for stmt in node.body for n in ast.walk(stmt)
             if isinstance(n, ast.Name) and n.id == target and isinstance(n.ctx, ast.Load)]
    return bool(reads) and all(id(n) in as_step for n in reads)


def _fits(call: ast.Call) -> bool:
    name = call_name(call)
    return name in _FIT_METHODS or name in SCORE_FUNCTIONS


def _is_literal_array(call: ast.Call) -> bool:
    """``np.logspace(-3, 2, 30)`` and the like: a numpy array builder called with literals only."""
    if call_name(call) not in ARRAY_BUILDERS:
        return False
    if isinstance(call.func, ast.Attribute) and _base_name(call.func.value) not in ("np", "numpy"):
        return False
    arguments = [*call.args, *(k.value for k in call.keywords)]
    return bool(arguments) and all(_literal(arg) is not _NOT_LITERAL for arg in arguments)


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
                yield from _bind(sub_target.value, None)
            else:
                yield from _bind(sub_target, sub_value)


_NOT_LITERAL = object()


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return _NOT_LITERAL
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _store_names(target: ast.AST) -> Iterator[str]:
    """Plain names a target binds (not the bases of ``a[i]`` or ``a.b``)."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _store_names(element)
    elif isinstance(target, ast.Starred):
        yield from _store_names(target.value)


def _base_name(node: ast.expr) -> str | None:
    """``df`` for ``df``, ``df["a"]``, ``df.loc[0, "a"]`` or ``model.steps[0]``."""
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _locals_of(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> frozenset[str]:
    """Names a function or class body binds itself (its arguments too): reads of them are not inputs."""
    names: set[str] = set()
    if not isinstance(node, ast.ClassDef):
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            names.add(arg.arg)
        for extra in (arguments.vararg, arguments.kwarg):
            if extra is not None:
                names.add(extra.arg)
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            names.add(child.id)
        elif isinstance(child, (*_SCOPES,)) and child is not node:
            names.add(child.name)
    return frozenset(names)


def _loads(node: ast.AST, local: frozenset[str] = frozenset()) -> Iterator[str]:
    """Names read in ``node``, in order, minus those local to a comprehension or lambda inside it."""
    if isinstance(node, ast.Name):
        if isinstance(node.ctx, ast.Load) and node.id not in local:
            yield node.id
        return
    if isinstance(node, _COMPREHENSIONS):
        inner = local | {n for gen in node.generators for n in _store_names(gen.target)}
        for index, generator in enumerate(node.generators):
            yield from _loads(generator.iter, local if index == 0 else inner)
            for condition in generator.ifs:
                yield from _loads(condition, inner)
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for part in parts:
            yield from _loads(part, inner)
        return
    if isinstance(node, ast.Lambda):
        arguments = node.args
        inner = local | {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
        for default in [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]:
            yield from _loads(default, local)
        yield from _loads(node.body, inner)
        return
    for child in ast.iter_child_nodes(node):
        yield from _loads(child, local)


def _calls(node: ast.AST) -> Iterator[ast.Call]:
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            yield child


def _walrus_names(node: ast.AST) -> Iterator[str]:
    for child in ast.walk(node):
        if isinstance(child, ast.NamedExpr) and isinstance(child.target, ast.Name):
            yield child.target.id
