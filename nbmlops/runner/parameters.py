"""A notebook's declared parameters (papermill's ``parameters`` cell), and checking values against them.

Typed checking (``check_parameters(..., typed=True)``) reads each parameter's type as papermill infers it:
the annotation or ``# type:`` comment when it names one this module knows (``float``, ``Optional[int]``,
``list[str]``, ``dict | None``, ...), else the type of the default's literal. Values are judged as JSON
values: an ``int`` parameter takes an integer; a ``float`` one any number (papermill does not coerce, and an
integer is a fine float); a ``bool`` one only true or false; a ``str`` one a string; a list or tuple default a
list; a dict default an object. A ``None`` default, an expression, or an annotation it does not know
(``Any``, ``pd.DataFrame``, ``Union[...]`` of unknown types) takes anything.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbmlops.exceptions import NotebookReadError, ParameterError, ParameterTypeError

__all__ = [
    "NotebookReadError",
    "ParameterError",
    "ParameterTypeError",
    "check_grid",
    "check_parameters",
    "declared_parameters",
    "parse_value",
]

#: kind -> how an error message names it: "expected a number (float)"
_EXPECTED = {"int": "an integer (int)", "float": "a number (float)", "bool": "true or false (bool)",
             "str": "a string (str)", "list": "a list (list)", "dict": "an object (dict)", "null": "null"}
_GOT = {"int": "an integer", "float": "a number", "bool": "a boolean", "str": "a string", "list": "a list",
        "dict": "an object", "null": "null"}
_ANNOTATION_KINDS = {
    "int": "int", "float": "float", "bool": "bool", "str": "str", "None": "null", "NoneType": "null",
    "list": "list", "List": "list", "tuple": "list", "Tuple": "list", "Sequence": "list",
    "dict": "dict", "Dict": "dict", "Mapping": "dict",
}


def declared_parameters(notebook: str | Path) -> dict[str, dict[str, str]]:
    """``{name: {"default": source text, "type": inferred type, "help": comment}}`` of the parameters cell.

    Raises:
        NotebookReadError: the file cannot be read as a notebook.
    """
    import papermill

    logger = logging.getLogger("papermill")
    level = logger.level
    logger.setLevel(logging.ERROR)  # papermill narrates every line it cannot parse
    try:
        found = papermill.inspect_notebook(str(notebook))
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise NotebookReadError(Path(notebook).name, reason[:300]) from None
    finally:
        logger.setLevel(level)
    return {
        name: {"default": info.get("default", ""), "type": info.get("inferred_type_name", ""), "help": info.get("help", "")}
        for name, info in found.items()
    }


def check_parameters(notebook: str | Path, values: Mapping[str, Any], *, typed: bool = False) -> dict[str, Any]:
    """Refuse unknown or malformed names, and with ``typed`` values of the wrong type (see the module's
    docstring); return the effective parameters (defaults, then ``values``).

    Defaults are read from the notebook's source: literals become values, anything else stays text.

    Raises:
        ParameterError: names the notebook does not declare, or that are not identifiers.
        ParameterTypeError: with ``typed``, values whose type does not fit their parameter's.
        NotebookReadError: the file cannot be read as a notebook.
    """
    declared = _declared_names(notebook, values)
    if typed:
        _refuse_types(notebook, declared, {name: [value] for name, value in values.items()})
    effective: dict[str, Any] = {name: _default(info["default"]) for name, info in declared.items()}
    effective.update(values)
    return effective


def check_grid(notebook: str | Path, grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None) -> None:
    """Refuse a sweep before any of its runs: names the notebook does not declare, and fixed or swept values
    of the wrong type (as ``check_parameters(..., typed=True)`` judges one value).

    Raises:
        ParameterError: names the notebook does not declare, or that are not identifiers.
        ParameterTypeError: values whose type does not fit their parameter's (each swept value is named).
    """
    fixed = dict(fixed or {})
    declared = _declared_names(notebook, {**fixed, **grid})
    _refuse_types(notebook, declared, {**{name: [value] for name, value in fixed.items()}, **grid}, swept=set(grid))


def _declared_names(notebook: str | Path, values: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The declared parameters, once every name in ``values`` is known to be one of them."""
    declared = declared_parameters(notebook)
    bad = sorted(name for name in values if not str(name).isidentifier() or name not in declared)
    if bad:
        raise ParameterError(Path(notebook).name, bad, sorted(declared))
    return declared


def _refuse_types(notebook: str | Path, declared: Mapping[str, Mapping[str, str]],
                  values: Mapping[str, Sequence[Any]], swept: set[str] | frozenset[str] = frozenset()) -> None:
    problems: dict[str, str] = {}
    for name, candidates in values.items():
        found = [(value, problem) for value in candidates
                 if (problem := _type_problem(declared[name], value)) is not None]
        if found and name in swept:
            problems[name] = "; ".join(f"value {value!r:.80}: {problem}" for value, problem in found)
        elif found:
            problems[name] = found[0][1]
    if problems:
        raise ParameterTypeError(problems, Path(notebook).name, sorted(declared))


def _type_problem(info: Mapping[str, str], value: Any) -> str | None:
    """Why ``value`` does not fit the declared parameter ``info``, or None when it does."""
    annotated = info["type"] not in ("", "None")  # papermill's "no annotation"
    kinds = _annotation_kinds(info["type"]) if annotated else _default_kinds(info["default"])
    got = _kind_of(value)
    if kinds is None or got in kinds or (got == "int" and "float" in kinds):
        return None
    expected = " or ".join(_EXPECTED[kind] for kind in sorted(kinds, key=list(_EXPECTED).index))
    return f"expected {expected}, got {_GOT.get(got, got)}"


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                        ("dict", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _annotation_kinds(text: str) -> frozenset[str] | None:
    """The kinds an annotation such as ``Optional[float]`` or ``list[int] | None`` allows; None (anything)
    when it names a type without a JSON kind."""
    try:
        return _kinds_of_node(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return None


def _kinds_of_node(node: ast.expr) -> frozenset[str] | None:
    if isinstance(node, ast.Constant) and node.value is None:
        return frozenset({"null"})
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(node.left, node.right)
    name_node = node.value if isinstance(node, ast.Subscript) else node
    name = name_node.attr if isinstance(name_node, ast.Attribute) else getattr(name_node, "id", "")
    if isinstance(node, ast.Subscript) and name in ("Optional", "Union"):
        members = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        found = _union(*members)
        return found | {"null"} if found is not None and name == "Optional" else found
    kind = _ANNOTATION_KINDS.get(name)
    return frozenset({kind}) if kind else None


def _union(*nodes: ast.expr) -> frozenset[str] | None:
    kinds: set[str] = set()
    for node in nodes:
        found = _kinds_of_node(node)
        if found is None:
            return None
        kinds |= found
    return frozenset(kinds)


def _default_kinds(text: str) -> frozenset[str] | None:
    """The kind of the default's literal; None (anything) for None, an expression or a literal JSON lacks."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    kind = _kind_of(value)
    return frozenset({kind}) if kind in _EXPECTED and kind != "null" else None


def _default(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_value(text: str) -> Any:
    """A value typed on a command line, read as papermill's CLI reads ``-p``: int, float, bool or None
    when it looks like one, else the string itself."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (int, float, bool, type(None))) else text
