"""MLflow's run search grammar (``filter_string`` and ``order_by``), read by us so that a database store can be
searched with one SQL query of our own (see :mod:`nbmlops.tracking.search_sql`).

Only what can be translated exactly is read: comparisons of metrics, params, tags and run attributes joined by
``AND``. Anything else (dataset filters, a value of the wrong type, a clause MLflow itself would refuse) reads as
``None``, and the search is then left to MLflow's public ``search_runs``, which applies its own rules and errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Clause", "OrderKey", "parse_filter", "parse_order_by"]

_KINDS = {
    "metric": "metric", "metrics": "metric",
    "param": "param", "params": "param", "parameter": "param", "parameters": "param",
    "tag": "tag", "tags": "tag",
    "attribute": "attribute", "attributes": "attribute", "attr": "attribute", "run": "attribute",
}
_ALIASES = {"created": "start_time", "Created": "start_time", "run name": "run_name", "Run name": "run_name",
            "Run Name": "run_name"}
STRING_ATTRIBUTES = frozenset({"artifact_uri", "run_id", "run_name", "status", "user_id"})
NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time"})
_NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
_OPS_FOR = {
    "metric": _NUMERIC_OPS,
    "param": frozenset({"=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"}),
    "tag": frozenset({"=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"}),
    "string": frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"}),
    "numeric": _NUMERIC_OPS,
}

# one token at a time: a quoted string or key, a number, a comparison operator, a word, a parenthesis or comma
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<single>'[^']*')
      | (?P<double>"[^"]*")
      | (?P<back>`[^`]*`)
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
      | (?P<op>!=|>=|<=|=|<|>)
      | (?P<word>[A-Za-z_][\w.]*(?:\.(?=[`"]))?)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Clause:
    """One comparison: ``kind`` is metric, param, tag or attribute; ``value`` a float, an int, a string, a tuple
    of strings (``IN``) or None (``IS NULL``)."""

    kind: str
    key: str
    op: str
    value: float | int | str | tuple[str, ...] | None


@dataclass(frozen=True)
class OrderKey:
    """One ``order_by`` entry."""

    kind: str
    key: str
    ascending: bool


def _tokens(text: str) -> list[tuple[str, str]] | None:
    found: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return None
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        pos = match.end()
    return found


def _identifier(tokens: list[tuple[str, str]], at: int) -> tuple[str, str, int] | None:
    """``(kind, key, next position)`` of the identifier at ``tokens[at]``."""
    if at >= len(tokens) or tokens[at][0] != "word":
        return None
    word = tokens[at][1]
    if word.endswith("."):  # a prefix before a quoted key: metrics.`my metric`
        kind = _KINDS.get(word[:-1].lower())
        if kind is None or at + 1 >= len(tokens) or tokens[at + 1][0] not in ("back", "double"):
            return None
        return kind, tokens[at + 1][1][1:-1], at + 2
    prefix, dot, rest = word.partition(".")
    if dot:
        kind = _KINDS.get(prefix.lower())
        return (kind, rest, at + 1) if kind is not None and rest else None
    return "attribute", word, at + 1


def _attribute_type(key: str) -> str | None:
    if key in STRING_ATTRIBUTES:
        return "string"
    if key in NUMERIC_ATTRIBUTES:
        return "numeric"
    return None


def parse_filter(text: str) -> list[Clause] | None:
    """The clauses of ``text``; None when it holds anything but plain comparisons this module translates."""
    tokens = _tokens(text or "")
    if tokens is None:
        return None
    clauses: list[Clause] = []
    at = 0
    while at < len(tokens):
        if clauses:
            if tokens[at] != ("word", tokens[at][1]) or tokens[at][1].upper() != "AND":
                return None
            at += 1
        parsed = _clause(tokens, at)
        if parsed is None:
            return None
        clause, at = parsed
        clauses.append(clause)
    return clauses


def _clause(tokens: list[tuple[str, str]], at: int) -> tuple[Clause, int] | None:
    ident = _identifier(tokens, at)
    if ident is None:
        return None
    kind, key, at = ident
    if kind == "attribute":
        key = _ALIASES.get(key, key)
    family = _attribute_type(key) if kind == "attribute" else kind
    if family is None or at >= len(tokens):
        return None
    op, at = _operator(tokens, at)
    if op is None or op not in _OPS_FOR[family]:
        return None
    if op in ("IS NULL", "IS NOT NULL"):
        return Clause(kind, key, op, None), at
    if op in ("IN", "NOT IN"):
        if key != "run_id":  # MLflow compares only run ids with a list
            return None
        values, at = _string_list(tokens, at)
        return (Clause(kind, key, op, values), at) if values is not None else None
    if at >= len(tokens):
        return None
    token_kind, raw = tokens[at]
    if family in ("metric", "numeric"):
        if token_kind != "number":
            return None
        if family == "numeric":
            if not re.fullmatch(r"[-+]?\d+", raw):
                return None
            return Clause(kind, key, op, int(raw)), at + 1
        return Clause(kind, key, op, float(raw)), at + 1
    if token_kind not in ("single", "double"):
        return None
    return Clause(kind, key, op, raw[1:-1]), at + 1


def _operator(tokens: list[tuple[str, str]], at: int) -> tuple[str | None, int]:
    kind, raw = tokens[at]
    if kind == "op":
        return raw, at + 1
    if kind != "word":
        return None, at
    words = [raw.upper()]
    for extra in tokens[at + 1 : at + 3]:
        if extra[0] != "word":
            break
        words.append(extra[1].upper())
    for size, op in ((3, "IS NOT NULL"), (2, "IS NULL"), (2, "NOT IN"), (1, "IN"), (1, "LIKE"), (1, "ILIKE")):
        if " ".join(words[:size]) == op:
            return op, at + size
    return None, at


def _string_list(tokens: list[tuple[str, str]], at: int) -> tuple[tuple[str, ...] | None, int]:
    if at >= len(tokens) or tokens[at] != ("punct", "("):
        return None, at
    values: list[str] = []
    at += 1
    while at < len(tokens):
        kind, raw = tokens[at]
        if kind not in ("single", "double"):
            return None, at
        values.append(raw[1:-1])
        at += 1
        if at < len(tokens) and tokens[at] == ("punct", ","):
            at += 1
            continue
        if at < len(tokens) and tokens[at] == ("punct", ")"):
            return tuple(values), at + 1
        return None, at
    return None, at


def parse_order_by(text: str) -> OrderKey | None:
    """One ``order_by`` entry (``metrics.`acc` DESC``, ``start_time``); None when this module does not read it."""
    tokens = _tokens(text)
    if not tokens:
        return None
    ident = _identifier(tokens, 0)
    if ident is None:
        return None
    kind, key, at = ident
    if kind == "attribute":
        key = _ALIASES.get(key, key)
        if _attribute_type(key) is None:
            return None
    ascending = True
    if at < len(tokens):
        if tokens[at][0] != "word" or tokens[at][1].upper() not in ("ASC", "DESC") or at + 1 != len(tokens):
            return None
        ascending = tokens[at][1].upper() == "ASC"
    return OrderKey(kind, key, ascending)
