"""A metric's values in the order they were logged, kept small enough to draw: what the summary's curve shows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["MetricSeries", "thin"]

T = TypeVar("T")


class MetricSeries:
    """The values logged for one metric, bounded to about :attr:`LIMIT` points.

    Past the limit the points between the first and the last are thinned by keeping the lowest and the
    highest of every four, so the curve keeps its shape and its first, last, lowest and highest values stay
    exact, whatever the number of steps; :attr:`count` is the number of values logged.
    """

    LIMIT = 2048

    def __init__(self) -> None:
        self.values: list[float] = []
        self.count = 0

    def add(self, value: float) -> None:
        """Append one logged value."""
        self.values.append(value)
        self.count += 1
        if len(self.values) > self.LIMIT:
            self.values = thin(self.values, self.LIMIT // 2, float)


def thin(items: Sequence[T], width: int, value: Callable[[T], float]) -> list[T]:
    """At most about ``width`` of ``items``: the first, the last, and the lowest and highest (by ``value``) of each
    bucket between them, in their order, so that the extremes and the ends survive; NaN ones between the ends are
    left out."""
    if len(items) <= max(width, 2):
        return list(items)
    middle = items[1:-1]
    size = max(1, math.ceil(len(middle) / max(1, (width - 2) // 2)))
    kept = [items[0]]
    for start in range(0, len(middle), size):
        indexed = [(i, value(item)) for i, item in enumerate(middle[start : start + size], start)
                   if not math.isnan(value(item))]
        if not indexed:
            continue
        low = min(indexed, key=lambda pair: pair[1])
        high = max(indexed, key=lambda pair: pair[1])
        kept += [middle[i] for i, _ in sorted({low, high})]
    kept.append(items[-1])
    return kept
