"""A sweep's grid: ``-p``-style ``NAME=VALUE[,VALUE...]`` specs parsed into values per parameter, and the
parameter sets (combinations) drawn from it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from random import Random
from typing import Any

from nbmlops.exceptions import SweepError
from nbmlops.runner.parameters import parse_value

__all__ = ["combinations", "parse_grid"]


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["alpha=0.1,1,10", "depth=3,5"]`` -> ``{"alpha": [0.1, 1, 10], "depth": [3, 5]}``.

    Values are typed like ``-p`` values (int, float, True/False/None, else the string).
    """

    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, text = (part.strip() for part in spec.partition("="))
        items = [item.strip() for item in text.split(",")]
        if not sep or not name.isidentifier() or not all(items):
            raise SweepError(f'grid "{spec}": expected NAME=VALUE[,VALUE...], such as alpha=0.1,1,10')
        if name in grid:
            raise SweepError(f'grid "{spec}": {name} is already swept by an earlier --grid')
        values = [parse_value(item) for item in items]
        if len({repr(value) for value in values}) < len(values):
            raise SweepError(f'grid "{spec}": a value is repeated')
        grid[name] = values
    return grid


def combinations(
    grid: Mapping[str, Sequence[Any]], random: int | None = None, seed: int | None = None
) -> list[dict[str, Any]]:
    """Every combination of ``grid`` (the last name varies fastest), or ``random`` distinct ones drawn
    with ``seed`` (all of them when ``random`` is at least the grid's size), kept in grid order."""
    size = math.prod(len(values) for values in grid.values())
    if random is not None and random < 1:
        raise SweepError(f"--random must be at least 1, got {random}")
    if random is None or random >= size:
        indices: Iterable[int] = range(size)
    else:  # drawn by index, so a huge grid is never listed in full
        indices = sorted(Random(seed).sample(range(size), random))
    return [_combination(grid, index) for index in indices]


def _combination(grid: Mapping[str, Sequence[Any]], index: int) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for name, values in reversed(list(grid.items())):
        index, position = divmod(index, len(values))
        picked[name] = values[position]
    return {name: picked[name] for name in grid}
