"""A notebook's declared parameters (papermill's ``parameters`` cell), and checking values against them."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any, Mapping

from nbmlops.exceptions import NbmlopsError

__all__ = ["ParameterError", "check_parameters", "declared_parameters", "parse_value"]


class ParameterError(NbmlopsError, ValueError):
    """Parameters the notebook does not declare, or names that are not identifiers.

    Attributes:
        bad: the refused names.
        declared: the names the notebook declares.
    """

    def __init__(self, notebook: str, bad: list[str], declared: list[str]) -> None:
        self.bad = bad
        self.declared = declared
        known = ", ".join(declared) if declared else "none (no cell tagged 'parameters')"
        super().__init__(f"{notebook} does not declare parameter(s) {', '.join(map(repr, bad))}; it declares: {known}")


def declared_parameters(notebook: str | Path) -> dict[str, dict[str, str]]:
    """``{name: {"default": source text, "type": inferred type, "help": comment}}`` of the parameters cell."""
    import papermill

    logger = logging.getLogger("papermill")
    level = logger.level
    logger.setLevel(logging.ERROR)  # papermill narrates every line it cannot parse
    try:
        found = papermill.inspect_notebook(str(notebook))
    finally:
        logger.setLevel(level)
    return {
        name: {"default": info.get("default", ""), "type": info.get("inferred_type_name", ""), "help": info.get("help", "")}
        for name, info in found.items()
    }


def check_parameters(notebook: str | Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse unknown or malformed names; return the effective parameters (defaults, then ``values``).

    Defaults are read from the notebook's source: literals become values, anything else stays text.
    """
    declared = declared_parameters(notebook)
    bad = sorted(name for name in values if not str(name).isidentifier() or name not in declared)
    if bad:
        raise ParameterError(Path(notebook).name, bad, sorted(declared))
    effective: dict[str, Any] = {name: _default(info["default"]) for name, info in declared.items()}
    effective.update(values)
    return effective


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
