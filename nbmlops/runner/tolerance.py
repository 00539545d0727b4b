"""Whether two values are the same within a tolerance, and where they first differ.

Numbers are close when ``numpy.isclose(old, new, rtol, atol, equal_nan=True)`` holds (so NaN
matches NaN, and an infinity only itself); everything else (strings, booleans, dates, objects)
must be equal. Data (DataFrames, Series, numpy arrays) must have the same shape, columns and
index; the first value that differs is named by its column and row, or its position.

numpy and pandas are imported where used, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["close", "first_difference", "show"]

_SHOWN = 60


def close(old: Any, new: Any, rtol: float, atol: float) -> Any:
    """Element-wise: is ``new`` the same as ``old`` (numbers within ``rtol``/``atol``, the rest equal)?

    ``old`` and ``new`` are 1-D numpy arrays of one length; returns a boolean array.
    """
    import numpy as np
    import pandas as pd

    if old.dtype.kind in "iuf" and new.dtype.kind in "iuf":
        if old.dtype.kind in "iu" and new.dtype.kind in "iu":
            return np.asarray(old == new)
        return np.isclose(old.astype(float), new.astype(float), rtol=rtol, atol=atol, equal_nan=True)
    before, after = pd.Series(old, dtype=object), pd.Series(new, dtype=object)
    try:
        same = np.asarray(before == after, dtype=bool)
    except (TypeError, ValueError):  # cells holding arrays: compare them one by one
        same = np.array([_equal(x, y) for x, y in zip(old, new)], dtype=bool)
    return same | np.asarray(before.isna() & after.isna(), dtype=bool)


def first_difference(
    old: Any, new: Any, rtol: float, atol: float, skip: Callable[[str], bool]
) -> tuple[str | None, tuple[str, ...]]:
    """Where ``new`` first differs from ``old`` (a DataFrame, Series or numpy array), or None when it
    does not; and the columns left out because ``skip(column)`` holds (a DataFrame's only).

    Anything else is compared with ``==``.
    """
    import numpy as np
    import pandas as pd

    if type(old) is not type(new):
        return f"was a {type(old).__name__}, now a {type(new).__name__}", ()
    if isinstance(old, pd.DataFrame):
        return _frame_difference(old, new, rtol, atol, skip)
    if isinstance(old, pd.Series):
        if len(old) != len(new):
            return f"length {len(old)} -> {len(new)}", ()
        index = _first(old.index.to_numpy(), new.index.to_numpy(), range(len(old)), "index at row ", rtol, atol)
        return index or _first(old.to_numpy(), new.to_numpy(), old.index, "row ", rtol, atol), ()
    if isinstance(old, np.ndarray):
        if old.shape != new.shape:
            return f"shape {old.shape} -> {new.shape}", ()
        at = _first_false(close(old.ravel(), new.ravel(), rtol, atol))
        if at is None:
            return None, ()
        position = tuple(int(i) for i in np.unravel_index(at, old.shape))
        where = position[0] if len(position) == 1 else position
        return f"position {where}: {show(old.ravel()[at])} -> {show(new.ravel()[at])}", ()
    return (None if _equal(old, new) else "the content differs"), ()


def show(value: Any) -> str:
    """A short text for one value: numpy scalars as plain Python ones, long texts cut."""
    text = repr(value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _frame_difference(
    old: Any, new: Any, rtol: float, atol: float, skip: Callable[[str], bool]
) -> tuple[str | None, tuple[str, ...]]:
    if old.shape != new.shape:
        return f"shape {old.shape} -> {new.shape}", ()
    if list(old.columns) != list(new.columns):
        return f"columns {show(list(old.columns))} -> {show(list(new.columns))}", ()
    excluded = tuple(str(c) for c in old.columns if skip(str(c)))
    found = _first(old.index.to_numpy(), new.index.to_numpy(), range(len(old)), "index at row ", rtol, atol)
    for position, column in enumerate(old.columns):
        if found is not None:
            break
        if str(column) not in excluded:
            before, after = old.iloc[:, position].to_numpy(), new.iloc[:, position].to_numpy()
            found = _first(before, after, old.index, f"column {column!r}, row ", rtol, atol)
    return found, excluded


def _first(old: Any, new: Any, labels: Any, what: str, rtol: float, atol: float) -> str | None:
    """``<what><label>: <old> -> <new>`` at the first position where 1-D ``old`` and ``new`` differ."""
    at = _first_false(close(old, new, rtol, atol))
    return None if at is None else f"{what}{show(labels[at])}: {show(old[at])} -> {show(new[at])}"


def _first_false(same: Any) -> int | None:
    import numpy as np

    found = np.flatnonzero(~same)
    return int(found[0]) if found.size else None


def _equal(x: Any, y: Any) -> bool:
    try:
        return bool(x == y)
    except (TypeError, ValueError):  # arrays: element-wise ==
        import numpy as np

        return bool(np.array_equal(x, y))
