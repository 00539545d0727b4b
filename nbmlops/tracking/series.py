"""A metric's values in the order they were logged, kept small enough to draw: what the summary's curve shows."""

from __future__ import annotations

import math

__all__ = ["MetricSeries"]


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
            self.values = thin(self.values, self.LIMIT // 2)


def thin(values: list[float], width: int) -> list[float]:
    """At most about ``width`` of ``values``: the first, the last, and the lowest and highest of each bucket
    between them (in their order), so that the extremes and the ends survive."""
    if len(values) <= max(width, 2):
        return list(values)
    middle = values[1:-1]
    size = max(1, math.ceil(len(middle) / max(1, (width - 2) // 2)))
    kept = [values[0]]
    for start in range(0, len(middle), size):
        bucket = middle[start : start + size]
        indexed = [(i, v) for i, v in enumerate(bucket) if not math.isnan(v)]
        if not indexed:
            continue
        low = min(indexed, key=lambda item: item[1])
        high = max(indexed, key=lambda item: item[1])
        kept += [v for _, v in sorted({low, high})]
    kept.append(values[-1])
    return kept
