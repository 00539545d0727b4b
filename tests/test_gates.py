"""Metric gates: the grammar, fail-closed evaluation and the MLflow tags that record them."""

from __future__ import annotations

import math
import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbmlops.exceptions import NbmlopsError
from nbmlops.runner.gates import (
    OPERATORS,
    Condition,
    Gate,
    GateError,
    GateSyntaxError,
    evaluate_gate,
    evaluate_gates,
    gate_tags,
    parse_gate,
)

VALID = [
    ("accuracy >= 0.9", [("accuracy", ">=", 0.9)]),
    ("rmse<1.2", [("rmse", "<", 1.2)]),
    ("0.9 <= accuracy", [("accuracy", ">=", 0.9)]),
    ("1 > loss", [("loss", "<", 1.0)]),
    ("-3 != delta", [("delta", "!=", -3.0)]),
    ("val/accuracy > .5", [("val/accuracy", ">", 0.5)]),
    ("f1.macro != -0.5", [("f1.macro", "!=", -0.5)]),
    ("_private-metric/2 == 0", [("_private-metric/2", "==", 0.0)]),
    ("lr <= 1e-3", [("lr", "<=", 0.001)]),
    ("x > +2.5E+2", [("x", ">", 250.0)]),
    ("x >= 5.", [("x", ">=", 5.0)]),
    ("loss<=-1", [("loss", "<=", -1.0)]),
    ("`my metric` < 3", [("my metric", "<", 3.0)]),
    ("`a``b` == 0", [("a`b", "==", 0.0)]),
    ("`and` > 1", [("and", ">", 1.0)]),
    ("2 < `top-1 (%)`", [("top-1 (%)", ">", 2.0)]),
    ("  a>1\t", [("a", ">", 1.0)]),
    ("acc >= 0.9 AND rmse < 1.2 and\n0 <= loss", [("acc", ">=", 0.9), ("rmse", "<", 1.2), ("loss", ">=", 0.0)]),
]


@pytest.mark.parametrize(("text", "conditions"), VALID)
def test_valid_gates_parse_to_their_conditions(text, conditions):
    gate = parse_gate(text)
    assert gate.conditions == tuple(Condition(*c) for c in conditions)
    assert gate.text == text
    assert parse_gate(str(gate)) == gate


INVALID = [
    ("accuracy >> 0.9", 9, "one of >=, <=, >, <, ==, !="),
    ("accuracy = 0.9", 9, "one of >=, <=, >, <, ==, !="),
    ("accuracy 0.9", 9, "one of >=, <=, >, <, ==, !="),
    ("", 0, "a metric name or a number"),
    ("   ", 3, "a metric name or a number"),
    ("accuracy >= ", 12, "a number"),
    ("accuracy >= loss", 12, "a number"),
    ("1 < 2", 4, "a metric name"),
    ("accuracy >= 0.9 or loss < 1", 16, '"and" or the end of the gate'),
    ("0.8 < acc < 0.9", 10, '"and" or the end of the gate'),
    ("accuracy >= 0.9 and", 19, "a metric name or a number"),
    ("accuracy >= 0.9 andloss < 1", 16, '"and" or the end of the gate'),
    ("and > 1", 0, "a metric name or a number"),
    ("acc > 0.9x", 6, "a number"),
    ("acc > 1.2.3", 6, "a number"),
    ("acc > 1e", 6, "a number"),
    ("acc > inf", 6, "a number"),
    ("acc > nan", 6, "a number"),
    ("acc > 1e999", 6, "a finite number"),
    ("9acc > 1", 0, "a number"),
    ("`acc > 1", 8, "a closing backtick"),
    ("`` > 1", 0, "a metric name"),
    ("acc > - 1", 6, "a number"),
]


@pytest.mark.parametrize(("text", "position", "expected"), INVALID)
def test_invalid_gates_report_where_and_what(text, position, expected):
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    assert (info.value.position, info.value.expected, info.value.text) == (position, expected, text)


def test_syntax_error_message_shows_the_gate_and_a_caret():
    with pytest.raises(GateSyntaxError) as info:
        parse_gate("accuracy >> 0.9")
    first, echo, caret = str(info.value).splitlines()
    assert first == 'gate "accuracy >> 0.9": expected one of >=, <=, >, <, ==, != at position 9'
    assert echo == "    accuracy >> 0.9" and caret == "    " + " " * 9 + "^"
    assert isinstance(info.value, NbmlopsError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x') > 1",
        "1 > __import__('os').system('x')",
        "open('f').read() > 0",
        "x > (lambda: 1)()",
        "x > 1 and exec('import os')",
        "x > 1; import os",
    ],
)
def test_gates_never_evaluate_code(text, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    with pytest.raises(GateSyntaxError):
        parse_gate(text)
    assert calls == []


conditions = st.builds(
    Condition,
    metric=st.text(min_size=1, max_size=20) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,10}", fullmatch=True),
    op=st.sampled_from(list(OPERATORS)),
    threshold=st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.lists(conditions, min_size=1, max_size=4))
def test_canonical_text_round_trips(conds):
    gate = Gate("", tuple(conds))
    parsed = parse_gate(str(gate))
    assert parsed == gate and str(parsed) == str(gate) == gate.text


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_a_positioned_syntax_error(text):
    try:
        gate = parse_gate(text)
    except GateSyntaxError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse_gate(str(gate)) == gate


def test_gate_equality_ignores_the_written_text():
    a, b = parse_gate("0.9<=accuracy"), parse_gate("accuracy >= 0.9")
    assert a == b and hash(a) == hash(b)
    assert (a.text, str(a)) == ("0.9<=accuracy", "accuracy >= 0.9")
    assert str(parse_gate("`my metric` > 1E2 and `AND` == 3")) == "`my metric` > 100 and `AND` == 3"


@pytest.mark.parametrize("args", [("acc", "=>", 1.0), ("", ">", 1.0), ("acc", ">", math.nan), ("acc", "<", math.inf)])
def test_invalid_conditions_are_rejected(args):
    with pytest.raises(GateError):
        Condition(*args)


def test_a_gate_needs_a_condition():
    with pytest.raises(GateError, match="at least one"):
        Gate("", ())


BELOW, AT, ABOVE = math.nextafter(0.9, 0), 0.9, math.nextafter(0.9, 1)
BOUNDARIES = {
    ">=": (False, True, True),
    ">": (False, False, True),
    "<=": (True, True, False),
    "<": (True, False, False),
    "==": (False, True, False),
    "!=": (True, False, True),
}


@pytest.mark.parametrize("op", list(BOUNDARIES))
def test_every_operator_at_its_boundary(op):
    gate = parse_gate(f"m {op} 0.9")
    outcomes = tuple(evaluate_gate(gate, {"m": v}).passed for v in (BELOW, AT, ABOVE))
    assert outcomes == BOUNDARIES[op]
    assert tuple(Condition("m", op, 0.9).holds(v) for v in (BELOW, AT, ABOVE)) == BOUNDARIES[op]


def test_passing_gate_message_and_values():
    result = evaluate_gate(parse_gate("accuracy >= 0.9"), {"accuracy": 0.93, "loss": 0.2})
    assert result.passed and result.values == {"accuracy": 0.93}
    assert result.message == 'gate "accuracy >= 0.9" passed: accuracy = 0.93'


def test_and_needs_every_condition():
    gate = parse_gate("acc >= 0.9 and rmse < 1.2")
    assert evaluate_gate(gate, {"acc": 0.95, "rmse": 1.0}).passed
    result = evaluate_gate(gate, {"acc": 0.95, "rmse": 1.5})
    assert not result.passed and result.values == {"acc": 0.95, "rmse": 1.5}
    assert result.message == 'gate "acc >= 0.9 and rmse < 1.2" failed: rmse = 1.5, not < 1.2'


def test_missing_metric_fails_closed_naming_the_gate():
    result = evaluate_gate(parse_gate("accuracy >= 0.9"), {"loss": 0.1, "f1": 0.8})
    assert not result.passed and result.values == {"accuracy": None}
    assert result.message == 'gate "accuracy >= 0.9" failed: metric accuracy is missing (available: loss, f1)'
    hinted = evaluate_gate(parse_gate("accuracy >= 0.9"), {"val_accuracy": 0.95})
    assert hinted.message.endswith("(available: val_accuracy; did you mean val_accuracy?)")
    assert "no metrics were logged" in evaluate_gate(parse_gate("accuracy >= 0.9"), {}).message


@pytest.mark.parametrize("op", list(OPERATORS))
@pytest.mark.parametrize(("value", "why"), [
    (math.nan, "is NaN"), (math.inf, "is inf"), (-math.inf, "is -inf"),
    (sys.float_info.max, "is inf (stored as 1.7976931348623157e+308)"),
    (-sys.float_info.max, "is -inf (stored as -1.7976931348623157e+308)"),
])
def test_non_finite_or_stored_infinite_metric_fails_closed_for_every_operator(op, value, why):
    result = evaluate_gate(parse_gate(f"accuracy {op} 0.9"), {"accuracy": value})
    assert not result.passed
    assert result.message == f'gate "accuracy {op} 0.9" failed: metric accuracy {why}'
    assert not Condition("accuracy", op, 0.9).holds(value)


def test_non_numeric_metric_fails_closed():
    result = evaluate_gate(parse_gate("acc > 0"), {"acc": "high"})
    assert not result.passed and "metric acc is not a number ('high')" in result.message


def test_evaluate_gates_keeps_order_and_tags_record_each_result():
    gates = [parse_gate("accuracy>=0.9"), parse_gate("rmse < 1.2 and `my metric` > 0")]
    results = evaluate_gates(gates, {"accuracy": 0.93, "rmse": 2.0})
    assert [r.gate for r in results] == gates and [r.passed for r in results] == [True, False]
    assert gate_tags(results) == {
        "nbmlops.gate.0": "accuracy >= 0.9",
        "nbmlops.gate.0.result": "passed",
        "nbmlops.gate.0.values": "accuracy=0.93",
        "nbmlops.gate.1": "rmse < 1.2 and `my metric` > 0",
        "nbmlops.gate.1.result": "failed",
        "nbmlops.gate.1.values": "rmse=2, my metric=missing",
        "nbmlops.gates": "failed",
    }
    assert gate_tags(results[:1])["nbmlops.gates"] == "passed"
    assert gate_tags([]) == {}


def test_tag_values_fit_mlflow_limit():
    gate = Gate("", tuple(Condition(f"metric_{i}_" + "x" * 100, ">", 0.0) for i in range(100)))
    tags = gate_tags([evaluate_gate(gate, {})])
    assert len(str(gate)) > 8000 and max(map(len, tags.values())) == 8000
    assert tags["nbmlops.gate.0"].endswith("...")
