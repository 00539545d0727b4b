"""A column as drift compares it: sorted numbers, counts of labels, or a reason to skip it.

A side is read from a DataFrame's column (:func:`column_side`) or from a column of its profile
(:func:`reference_columns`); :func:`compatible` brings two sides to the same kind (text that
holds numbers counts as numbers) or raises a :class:`~nbmlops.data.drift_stats.DriftError`
naming both dtypes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nbmlops.data.drift_stats import LEVELS, DriftError, ProfileCDF, finite_sorted
from nbmlops.exceptions import UnsupportedDataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "Labels",
    "LazyColumn",
    "Numbers",
    "Other",
    "Side",
    "column_side",
    "compatible",
    "prediction_series",
    "reference_columns",
    "type_name",
]


@dataclass(frozen=True)
class Numbers:
    """A numeric column: its sorted finite values, or the CDF its profile records."""

    dtype: str
    count: int  # finite values
    missing: int  # NaN, None, infinite
    values: np.ndarray | None = None
    cdf: ProfileCDF | None = None


@dataclass(frozen=True)
class Labels:
    """A label column: counts by text; ``other`` counts the values a profile did not name."""

    dtype: str
    counts: Mapping[str, int]
    missing: int
    other: int = 0
    boolean: bool = False

    @property
    def count(self) -> int:
        """The values counted, named or pooled in ``other``."""
        return sum(self.counts.values()) + self.other


@dataclass(frozen=True)
class Other:
    """A column that is not compared: datetimes, timedeltas, complex numbers and the like."""

    dtype: str
    kind: Literal["datetime", "other"]
    reason: str = ""


Side = Numbers | Labels | Other


class LazyColumn:
    """A reference column turned into a side only when compared (sorting costs)."""

    def __init__(self, name: Any, s: pd.Series) -> None:
        self.name, self.series = str(name), s

    def side(self) -> Side:
        """The column as a side."""
        return column_side(self.name, self.series)


def reference_columns(
    reference: object,
) -> tuple[Literal["snapshot", "profile"], int, dict[str, LazyColumn | Side | DriftError]]:
    """The source, row count and columns of a reference DataFrame or profile (name -> side, a
    column still to read, or a DriftError to raise when the column is compared)."""
    import pandas as pd

    if isinstance(reference, pd.DataFrame):
        if len(reference) == 0:
            raise DriftError("the reference data has no rows")
        return "snapshot", len(reference), {str(n): LazyColumn(n, s) for n, s in reference.items()}
    if isinstance(reference, Mapping):
        if not isinstance(reference.get("columns"), list) or "num_rows" not in reference:
            raise DriftError("the reference is a dict but not a profile (no 'columns' or 'num_rows')")
        rows = int(reference["num_rows"])
        if rows == 0:
            raise DriftError("the reference data has no rows")
        return "profile", rows, {str(c["name"]): _profile_side(c, rows) for c in reference["columns"]}
    raise UnsupportedDataError(type_name(reference), "compare() needs the reference as a DataFrame or a profile dict")


def column_side(name: str, s: pd.Series) -> Side:
    """A DataFrame's column as a side: labels for categoricals, text, objects and booleans,
    numbers for integers and floats, anything else not compared."""
    import numpy as np
    import pandas as pd

    from nbmlops.data.profile import text_counts

    dtype = s.dtype
    kind = getattr(dtype, "kind", "O")
    if isinstance(dtype, pd.CategoricalDtype) or kind in "OSUTb":
        counted = text_counts(s)
        if counted is None:
            return Other(str(dtype), "other", "values cannot be counted (unhashable)")
        counts = counted[0]
        total = int(counts.sum())
        return Labels(str(dtype), dict(zip(counts.index, counts.to_numpy().tolist())), len(s) - total, 0, kind == "b")
    if kind in "iuf":
        values = finite_sorted(s.to_numpy(dtype=np.float64, na_value=np.nan, copy=True), owned=True)
        return Numbers(str(dtype), values.size, len(s) - values.size, values=values)
    return Other(str(dtype), "datetime" if kind in "mM" else "other")


def _profile_side(col: Mapping[str, Any], rows: int) -> Side | DriftError:
    name, dtype, nulls = str(col["name"]), str(col.get("dtype", "?")), int(col.get("nulls") or 0)
    if "true_count" in col or "distinct" in col:
        if "top" not in col:
            return _no_distribution(name)
        if col["top"] is None:
            reason = "its profile has no category counts (over a million rows or unhashable values)"
            return Other(dtype, "other", reason)
        counts = {str(k): int(v) for k, v in col["top"].items()}
        return Labels(dtype, counts, nulls, int(col.get("other") or 0), "true_count" in col)
    if "mean" in col:
        if any(key not in col for key in ("quantiles", "cdf", "cdf_left")):
            return _no_distribution(name)
        q, at, below = col["quantiles"], col["cdf"], col["cdf_left"]
        if q is None or at is None or below is None:
            return Numbers(dtype, 0, rows)
        if not len(q) == len(at) == len(below) == LEVELS + 1:
            return DriftError(f"the profile has {len(q)} quantiles, not {LEVELS + 1}", name)
        return Numbers(dtype, rows - nulls, nulls, cdf=ProfileCDF.from_profile(q, at, below))
    is_time = isinstance(col.get("min"), str) or any(t in dtype for t in ("datetime", "timedelta"))
    return Other(dtype, "datetime" if is_time else "other")


def _no_distribution(name: str) -> DriftError:
    return DriftError(
        "the training data has no distribution recorded (its profile was made by an older "
        "nbmlops); profile or snapshot the training data again",
        name,
    )


def compatible(name: str, ref: Side, cur: Side) -> tuple[Side, Side]:
    """Both sides as the same kind, or a DriftError naming both dtypes."""
    ref_time, cur_time = (isinstance(s, Other) and s.kind == "datetime" for s in (ref, cur))
    if ref_time != cur_time and not isinstance(cur if ref_time else ref, Other):
        raise _mismatch(name, ref, cur)
    if isinstance(ref, Numbers) and isinstance(cur, Labels):
        converted = None if cur.boolean else _labels_as_numbers(cur)
        if converted is None:
            raise _mismatch(name, ref, cur)
        return ref, converted
    if isinstance(ref, Labels) and isinstance(cur, Numbers):
        raise _mismatch(name, ref, cur)
    return ref, cur


def _mismatch(name: str, ref: Side, cur: Side) -> DriftError:
    return DriftError(
        f"the reference has {_describe(ref)} (dtype {ref.dtype}) but the current data has "
        f"{_describe(cur)} (dtype {cur.dtype}); convert one of them to compare",
        name,
    )


def _describe(side: Side) -> str:
    if isinstance(side, Numbers):
        return "numbers"
    if isinstance(side, Labels):
        return "booleans" if side.boolean else "text or categories"
    return "datetimes" if side.kind == "datetime" else "values"


def _labels_as_numbers(side: Labels) -> Numbers | None:
    """Current labels as numbers when every one of them is a number (text read from a CSV)."""
    import numpy as np
    import pandas as pd

    text = list(side.counts)
    numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(numbers).any():
        return None
    values = np.repeat(numbers, [side.counts[t] for t in text])
    finite = finite_sorted(values, owned=True)
    return Numbers(side.dtype, finite.size, side.missing + values.size - finite.size, values=finite)


def prediction_series(predictions: Any, side: str) -> pd.Series:
    """A model's outputs (1-D array, list, Series or one-column DataFrame) as a Series."""
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        if predictions.shape[1] != 1:
            raise DriftError(f"the {side} predictions have {predictions.shape[1]} columns; pass one")
        return predictions.iloc[:, 0]
    if isinstance(predictions, pd.Series):
        return predictions
    array = np.asarray(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DriftError(f"the {side} predictions have shape {array.shape}; pass one column (e.g. proba[:, 1])")
    return pd.Series(array, copy=False)


def type_name(obj: object) -> str:
    """``module.QualifiedName`` of ``obj``'s type, for error messages."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
