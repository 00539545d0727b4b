"""Differences between two data sets, computed from their profiles.

``diff_frames(a, b)`` profiles both objects (DataFrame, Series or ndarray) and compares the
profiles; ``diff_profiles`` does the same when only the stored profiles exist (a snapshot's
sidecar, a run's logged profile). Columns are matched by name (with duplicate names, the last
one counts); ``format_diff`` renders the result as text for the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nbmlops.data.profile import profile

__all__ = ["DataDiff", "StatShift", "diff_frames", "diff_profiles", "format_diff"]

_STATS = ("nulls", "mean", "std", "min", "max", "distinct", "true_count")


@dataclass(frozen=True)
class StatShift:
    """One statistic of one column that differs.

    ``relative`` is ``(after - before) / |before|`` for numbers (None when ``before`` is 0 or
    either side is not a number); ``in_std`` is, for ``mean``, the shift in units of the old
    standard deviation (None when that is 0 or unknown).
    """

    column: str
    stat: str
    before: Any
    after: Any
    relative: float | None = None
    in_std: float | None = None


@dataclass(frozen=True)
class DataDiff:
    """What changed from data set A to data set B."""

    rows_before: int
    rows_after: int
    added: list[tuple[str, str]] = field(default_factory=list)  # (column, dtype)
    removed: list[tuple[str, str]] = field(default_factory=list)
    dtype_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (column, old, new)
    shifts: list[StatShift] = field(default_factory=list)

    @property
    def rows_change(self) -> int:
        """Rows in B minus rows in A."""
        return self.rows_after - self.rows_before

    @property
    def rows_relative(self) -> float | None:
        """The row change relative to A's row count (None when A has no rows)."""
        return self.rows_change / self.rows_before if self.rows_before else None

    @property
    def changed(self) -> bool:
        """Whether anything differs at all."""
        return bool(self.rows_change or self.added or self.removed or self.dtype_changes or self.shifts)


def diff_frames(a: object, b: object) -> DataDiff:
    """Compare two DataFrames (or Series, or ndarrays) through their profiles."""
    return diff_profiles(profile(a), profile(b))


def diff_profiles(a: dict[str, Any], b: dict[str, Any]) -> DataDiff:
    """Compare two results of :func:`nbmlops.data.profile`."""
    cols_a = {c["name"]: c for c in a["columns"]}
    cols_b = {c["name"]: c for c in b["columns"]}
    shifts: list[StatShift] = []
    dtype_changes = []
    for name in (n for n in cols_a if n in cols_b):
        old, new = cols_a[name], cols_b[name]
        if old["dtype"] != new["dtype"]:
            dtype_changes.append((name, old["dtype"], new["dtype"]))
        for stat in _STATS:
            if stat in old and stat in new and old[stat] != new[stat]:
                shifts.append(_shift(name, stat, old, new))
    return DataDiff(
        rows_before=a["num_rows"],
        rows_after=b["num_rows"],
        added=[(n, c["dtype"]) for n, c in cols_b.items() if n not in cols_a],
        removed=[(n, c["dtype"]) for n, c in cols_a.items() if n not in cols_b],
        dtype_changes=dtype_changes,
        shifts=shifts,
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shift(name: str, stat: str, old: dict[str, Any], new: dict[str, Any]) -> StatShift:
    before, after = old[stat], new[stat]
    relative = in_std = None
    if _is_number(before) and _is_number(after):
        if before:
            relative = (after - before) / abs(before)
        std = old.get("std")
        if stat == "mean" and _is_number(std) and std:
            in_std = (after - before) / std
    return StatShift(name, stat, before, after, relative, in_std)


def format_diff(diff: DataDiff) -> str:
    """Render a diff as lines of text, one change per line."""
    lines = []
    if diff.rows_change:
        rel = f", {diff.rows_relative:+.1%}" if diff.rows_relative is not None else ""
        lines.append(f"rows: {diff.rows_before} -> {diff.rows_after} ({diff.rows_change:+d}{rel})")
    lines += [f"column added: {name} ({dtype})" for name, dtype in diff.added]
    lines += [f"column removed: {name} ({dtype})" for name, dtype in diff.removed]
    lines += [f"dtype changed: {name}: {old} -> {new}" for name, old, new in diff.dtype_changes]
    for s in diff.shifts:
        notes = [f"{s.relative:+.1%}"] if s.relative is not None else []
        if s.in_std is not None:
            notes.append(f"{s.in_std:+.2f} std")
        extra = f" ({', '.join(notes)})" if notes else ""
        lines.append(f"{s.column}: {s.stat} {_show(s.before)} -> {_show(s.after)}{extra}")
    return "\n".join(lines) if lines else "no differences"


def _show(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)
