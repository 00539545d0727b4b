"""Metric gates: conditions on a run's metrics such as ``accuracy >= 0.9 and rmse < 1.2``.

The grammar is parsed by hand and never evaluated as Python::

    gate      := condition ("and" condition)*
    condition := metric OP number | number OP metric
    OP        := ">=" | "<=" | ">" | "<" | "==" | "!="
    metric    := [A-Za-z_][A-Za-z0-9_./-]*     e.g. accuracy, val/accuracy, f1.macro
               | "`" text "`"                   any name; a backtick inside is written twice
    number    := [+-]? (digits ["." digits] | "." digits) [(e|E) [+-]? digits]

``and`` is case-insensitive and reserved (a metric called ``and`` needs backticks). Whitespace is free
between tokens. Thresholds must be finite: ``inf`` and ``nan`` are not numbers here, since every finite
metric beats ``inf`` and non-finite metrics fail every gate anyway. ``0.9 <= accuracy`` is stored as
``accuracy >= 0.9``. Gates fail closed: a metric that is missing, not a number, NaN or infinite fails.
MLflow stores an infinite metric as the largest float (``1.7976931348623157e308``, negated for ``-inf``), so
a value read back from a store at that magnitude counts as infinite too.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nbmlops.exceptions import GateError, GateSyntaxError
from nbmlops.shorten import clip
from nbmlops.tracking.values import lower_is_better

__all__ = [
    "OPERATORS", "Condition", "Gate", "GateError", "GateResult", "GateSyntaxError",
    "evaluate_gate", "evaluate_gates", "gate_tags", "infer_maximize", "non_finite", "parse_gate",
]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
_FLIPPED = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "==": "==", "!=": "!="}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_QUOTED = re.compile(r"`((?:[^`]|``)*)`(?!`)")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]")
_OP_CHARS = re.compile(r"[<>=!]+")
_TAG_LIMIT = 8000  # MLflow's limit on a tag value


def non_finite(value: float) -> str | None:
    """``"NaN"``, ``"inf"`` or ``"-inf"`` when ``value`` cannot be compared, else None. The largest float
    counts as infinite: it is how MLflow stores ``inf`` (and its negative, ``-inf``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value) or abs(value) == sys.float_info.max:
        return "inf" if value > 0 else "-inf"
    return None


def _number_text(value: float) -> str:
    text = repr(float(value))
    return text.removesuffix(".0")


def _metric_text(name: str) -> str:
    if _NAME.fullmatch(name) and name.lower() != "and":
        return name
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Condition:
    """``metric OP threshold``; ``op`` is one of :data:`OPERATORS` and ``threshold`` is finite."""

    metric: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if not self.metric or self.op not in OPERATORS or not math.isfinite(self.threshold):
            raise GateError(f"invalid condition {self.metric!r} {self.op!r} {self.threshold!r}")

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the condition; a NaN or infinite value never does."""
        return non_finite(value) is None and OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{_metric_text(self.metric)} {self.op} {_number_text(self.threshold)}"


@dataclass(frozen=True)
class Gate:
    """All of ``conditions`` must hold. ``text`` is the gate as written (canonical when empty); it is
    not compared, so gates with the same conditions are equal. ``str(gate)`` is the canonical text."""

    text: str = field(compare=False)
    conditions: tuple[Condition, ...]

    def __post_init__(self) -> None:
        if not self.conditions:
            raise GateError("a gate needs at least one condition")
        if not self.text:
            object.__setattr__(self, "text", str(self))

    def __str__(self) -> str:
        return " and ".join(map(str, self.conditions))


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: ``values`` holds each metric's value (``None`` when missing)."""

    gate: Gate
    passed: bool
    values: dict[str, float | None]
    message: str


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, expected: str, position: int | None = None) -> GateSyntaxError:
        return GateSyntaxError(self.text, self.pos if position is None else position, expected)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def metric(self) -> str | None:
        if self.text.startswith("`", self.pos):
            match = _QUOTED.match(self.text, self.pos)
            if not match:
                raise self.fail("a closing backtick", len(self.text))
            if not match.group(1):
                raise self.fail("a metric name")
            self.pos = match.end()
            return match.group(1).replace("``", "`")
        match = _NAME.match(self.text, self.pos)
        if not match or match.group().lower() == "and":
            return None
        self.pos = match.end()
        return match.group()

    def number(self) -> float | None:
        match = _NUMBER.match(self.text, self.pos)
        if not match:
            return None
        if _NUMBER_TAIL.match(self.text, match.end()):
            raise self.fail("a number")
        value = float(match.group())
        if not math.isfinite(value):
            raise self.fail("a finite number")
        self.pos = match.end()
        return value

    def op(self) -> str:
        self.skip_space()
        match = _OP_CHARS.match(self.text, self.pos)
        if not match or match.group() not in OPERATORS:
            raise self.fail("one of " + ", ".join(OPERATORS))
        self.pos = match.end()
        self.skip_space()
        return match.group()

    def condition(self) -> Condition:
        self.skip_space()
        name = self.metric()
        if name is not None:
            op = self.op()
            threshold = self.number()
            if threshold is None:
                raise self.fail("a number")
            return Condition(name, op, threshold)
        threshold = self.number()
        if threshold is None:
            raise self.fail("a metric name or a number")
        op = self.op()
        name = self.metric()
        if name is None:
            raise self.fail("a metric name")
        return Condition(name, _FLIPPED[op], threshold)

    def gate(self) -> Gate:
        conditions = [self.condition()]
        while True:
            self.skip_space()
            if self.pos == len(self.text):
                return Gate(self.text, tuple(conditions))
            word = _NAME.match(self.text, self.pos)
            if not word or word.group().lower() != "and":
                raise self.fail('"and" or the end of the gate')
            self.pos = word.end()
            conditions.append(self.condition())


def parse_gate(text: str) -> Gate:
    """Parse ``text`` (see the module docstring for the grammar); raises :class:`GateSyntaxError`."""
    return _Parser(text).gate()


def _available(metrics: Mapping[str, object], name: str) -> str:
    if not metrics:
        return "no metrics were logged"
    names = [_metric_text(key) for key in metrics]
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    close = difflib.get_close_matches(name, list(metrics), n=1)
    return f"available: {shown}" + (f"; did you mean {_metric_text(close[0])}?" if close else "")


def evaluate_gate(gate: Gate, metrics: Mapping[str, float]) -> GateResult:
    """Check ``gate`` against ``metrics`` (values are read with ``float()``), failing closed."""
    values: dict[str, float | None] = {}
    problems: list[str] = []
    for condition in gate.conditions:
        name, shown = condition.metric, _metric_text(condition.metric)
        values[name] = None
        if name not in metrics:
            problems.append(f"metric {shown} is missing ({_available(metrics, name)})")
            continue
        try:
            value = values[name] = float(metrics[name])
        except (TypeError, ValueError):
            problems.append(f"metric {shown} is not a number ({metrics[name]!r:.80})")
            continue
        if (why := non_finite(value)) is not None:
            problems.append(f"metric {shown} is {why}" + _stored_infinity(value))
        elif not condition.holds(value):
            problems.append(f"{shown} = {_number_text(value)}, not {condition.op} {_number_text(condition.threshold)}")
    if problems:
        return GateResult(gate, False, values, f'gate "{gate.text}" failed: ' + "; ".join(dict.fromkeys(problems)))
    shown_values = ", ".join(f"{_metric_text(k)} = {_number_text(v)}" for k, v in values.items() if v is not None)
    return GateResult(gate, True, values, f'gate "{gate.text}" passed: {shown_values}')


def _stored_infinity(value: float) -> str:
    return f" (stored as {value!r})" if math.isfinite(value) else ""


def evaluate_gates(gates: Iterable[Gate], metrics: Mapping[str, float]) -> list[GateResult]:
    """Evaluate each gate against the same metrics, in order."""
    return [evaluate_gate(gate, metrics) for gate in gates]


def gate_tags(results: Sequence[GateResult]) -> dict[str, str]:
    """MLflow tags recording ``results``: ``nbmlops.gate.N`` (canonical text), ``.result``, ``.values``
    and the overall ``nbmlops.gates`` (``passed``/``failed``); empty when there are no results."""
    tags: dict[str, str] = {}
    for index, result in enumerate(results):
        key = f"nbmlops.gate.{index}"
        values = (f"{k}={'missing' if v is None else _number_text(v)}" for k, v in result.values.items())
        tags[key] = clip(str(result.gate), _TAG_LIMIT, "...")
        tags[f"{key}.result"] = "passed" if result.passed else "failed"
        tags[f"{key}.values"] = clip(", ".join(values), _TAG_LIMIT, "...")
    if results:
        tags["nbmlops.gates"] = "passed" if all(r.passed for r in results) else "failed"
    return tags


def infer_maximize(metric: str) -> bool:
    """Whether higher is better for ``metric``: False when a word of its name means a loss, an error or a
    duration (:func:`nbmlops.tracking.values.lower_is_better`), else True."""
    return not lower_is_better(metric)
