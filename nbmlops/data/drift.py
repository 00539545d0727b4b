"""Drift between the data a model was trained on ("reference") and new data ("current").

``compare(reference, current)`` measures, column by column, how far the current distribution
has moved from the reference one and returns a :class:`DriftReport`; the reference is the
training DataFrame itself (a snapshot) or only its stored profile (:func:`nbmlops.data.profile`).

- Numbers get the population stability index (PSI) over bins cut at the reference's
  quantiles (deciles by default), and the two-sample Kolmogorov-Smirnov statistic and
  p-value. NaN and infinite
  values are left out of both (the note says when the share of missing values moved).
- Booleans, strings, objects and categoricals get the PSI of their category frequencies, the
  categories being the values' text (``str(value)``, cut at 200 characters, as in profiles).
  Missing values are left out.
- Datetimes and timedeltas are skipped (their range moves with time, so they always "drift"),
  and so are complex numbers and other dtypes that are neither numbers nor labels.

A column drifts when its PSI exceeds the threshold (0.2 by default; 0.1 is the usual
"moderate" mark). The KS p-value is reported but not used: on large samples every small
difference is significant.

Against a profile the numbers are approximate, and such results have ``approximate=True``:
the reference CDF is known at the 101 stored quantiles (exactly, steps included, unless the
column had more than 500,000 values and was sampled) and interpolated linearly between them;
the KS p-value comes from the asymptotic distribution with the profile's row count; categories
outside the 100 most frequent ones are pooled.

pandas, numpy, scipy and matplotlib are imported only when a function is called.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nbmlops.exceptions import NbmlopsError, UnsupportedDataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "DriftError",
    "DriftReport",
    "FeatureDrift",
    "compare",
    "compare_predictions",
    "ks_2samp",
    "psi",
    "psi_categorical",
]

EPSILON = 1e-4  # the smallest share a bin or category counts with in the PSI
_EXACT_KS_MAX_N = 10_000  # scipy's method="auto": exact p-values up to this sample size
_MISSING_NOTE = 0.05  # a change of the missing share by this much gets a note
_MAX_PLOTS = 30
_MAX_BARS = 40
_PLOT_BINS = 30
_PLOT_CATEGORIES = 15
_LEVELS = 100  # a profile holds the quantiles at 0/100, 1/100, ..., 100/100


class DriftError(NbmlopsError, ValueError):
    """Drift cannot be measured: no current rows, incompatible dtypes, a profile without
    distributions, a bad option.

    Attributes:
        column: the column concerned, if any.
    """

    def __init__(self, message: str, column: str | None = None) -> None:
        self.column = column
        super().__init__(f"column {column!r}: {message}" if column is not None else message)


@dataclass(frozen=True)
class _Histogram:
    """What a feature's plot shows: shares of the reference and current values per bin
    (numbers: ``edges`` has one more entry than the shares) or per category (``labels``)."""

    reference: tuple[float, ...]
    current: tuple[float, ...]
    edges: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one column (or of a model's predictions).

    ``psi`` is None when one side has no values at all (then ``drifted`` is true unless both
    sides are empty); ``ks_statistic`` and ``ks_pvalue`` are None for categorical features.
    ``reference_rows`` and ``current_rows`` count the values compared (missing ones left
    out); ``reference_missing`` and ``current_missing`` are the shares of missing values.
    ``approximate`` is true when the reference was a profile and a statistic is estimated
    from its quantiles or its pooled categories. ``note`` tells what else a reader should
    know ("2 new categories: a, b", "all values missing in current data", ...).
    """

    name: str
    kind: Literal["numeric", "categorical"]
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    drifted: bool
    reference_rows: int
    current_rows: int
    approximate: bool = False
    note: str = ""
    reference_missing: float = 0.0
    current_missing: float = 0.0
    histogram: _Histogram | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DriftReport:
    """The drift of every compared column from the reference to the current data.

    ``features`` are in the reference's column order; ``missing_columns`` are reference
    columns absent from the current data, ``extra_columns`` current columns the reference
    lacks (only when all columns are compared); ``skipped`` pairs each column that was not
    compared with the reason. ``prediction`` is the drift of the model's outputs, set with
    ``dataclasses.replace(report, prediction=compare_predictions(...))``.
    """

    features: tuple[FeatureDrift, ...]
    threshold: float
    prediction: FeatureDrift | None = None
    missing_columns: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = ()
    reference_source: Literal["snapshot", "profile"] = "snapshot"
    skipped: tuple[tuple[str, str], ...] = ()
    reference_rows: int = 0
    current_rows: int = 0

    @property
    def drifted(self) -> bool:
        """Whether any feature or the prediction drifted."""
        return bool(self.drifted_features) or bool(self.prediction and self.prediction.drifted)

    @property
    def drifted_features(self) -> tuple[FeatureDrift, ...]:
        """The features that drifted, most drifted first."""
        return tuple(f for f in _by_psi(self.features) if f.drifted)

    def to_metrics(self) -> dict[str, float]:
        """The report as MLflow metrics.

        ``psi.<column>``, ``ks.<column>`` and ``ks_pvalue.<column>`` per feature (statistics
        that are None are left out), ``psi.max``, ``drifted_features`` (a count) and, with a
        prediction, ``psi.prediction``, ``ks.prediction`` and ``ks_pvalue.prediction``.
        Column names keep letters, digits, ``_ - .`` and spaces; any other character becomes
        ``_``, an empty name ``_``, and a name that collides with another (or with ``max`` or
        ``prediction``) gets a suffix ``_2``, ``_3``, ...
        """
        metrics: dict[str, float] = {}
        taken = {"max", "prediction"}
        for f in self.features:
            _add_metrics(metrics, _metric_name(f.name, taken), f)
        psis = [f.psi for f in self.features if f.psi is not None]
        if psis:
            metrics["psi.max"] = max(psis)
        metrics["drifted_features"] = float(len(self.drifted_features))
        if self.prediction is not None:
            _add_metrics(metrics, "prediction", self.prediction)
        return metrics

    def format_table(self) -> str:
        """The features as an aligned text table, most drifted first; ``*`` marks drift and
        ``~`` an approximate statistic. The prediction, if any, comes first. Long names are
        cut at 40 characters."""
        rows = [("", *_HEADER)] + [("*" if f.drifted else "", *_cells(f, _clip(label, 40))) for f, label in _rows(self)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for r in rows:
            cells = [c.rjust(w) if i - 1 in _NUMERIC else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells).rstrip())
        lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
        return "\n".join(lines + _summary_lines(self))

    def to_html(self, title: str = "Data drift") -> str:
        """A self-contained HTML page: a summary, the table, a PSI bar chart with the threshold,
        and the reference and current distributions of the 30 most drifted features, as PNG
        images embedded in the page. Every user string is escaped."""
        return _render_html(self, title)


# --- statistics on plain arrays ---


def psi(reference: Iterable[float], current: Iterable[float], bins: int = 10) -> float:
    """The population stability index of ``current`` against ``reference`` (numbers).

    The bins are cut at the reference's ``bins``-quantiles (``inverted_cdf``: values of the
    reference; duplicates merged, so data with ties has fewer bins) with open outer bins, each
    bin holding the values above its lower edge up to its upper edge. A bin's share below
    ``EPSILON`` (1e-4) counts as 1e-4. NaN and infinite values are left out.

    Raises:
        DriftError: when either side has no finite value, or ``bins`` is below 2.
    """
    _check_bins(bins)
    ref = _finite_sorted(_floats(reference))
    cur = _finite_sorted(_floats(current))
    if not ref.size or not cur.size:
        raise DriftError("psi() needs at least one finite value on each side")
    edges = _edges_from_sorted(ref, bins)
    return _psi(_shares_sorted(ref, edges), _shares_sorted(cur, edges))


def psi_categorical(reference_counts: Mapping[Any, int], current_counts: Mapping[Any, int]) -> float:
    """The population stability index of two value -> count mappings.

    Categories seen on one side only count with a share of ``EPSILON`` (1e-4) on the other
    (as does any share below it).

    Raises:
        DriftError: when either side has no count.
    """
    import numpy as np

    keys = list(dict.fromkeys([*reference_counts, *current_counts]))
    ref = np.array([reference_counts.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([current_counts.get(k, 0) for k in keys], dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise DriftError("psi_categorical() needs a positive count on each side")
    return _psi(ref / ref.sum(), cur / cur.sum())


def ks_2samp(reference: Iterable[float], current: Iterable[float]) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and two-sided p-value.

    The same numbers as ``scipy.stats.ks_2samp(reference, current)`` (``method="auto"``): an
    exact p-value when neither sample has more than 10,000 values, else the asymptotic one
    (the statistic is then rounded as scipy rounds it). NaN values are left out; infinite ones
    are kept. Sorting dominates the cost, so millions of values take about a second.

    Raises:
        DriftError: when either side has no value.
    """
    import numpy as np

    a = _floats(reference)
    b = _floats(current)
    a, b = np.sort(a[~np.isnan(a)]), np.sort(b[~np.isnan(b)])
    if not a.size or not b.size:
        raise DriftError("ks_2samp() needs at least one value on each side")
    return _ks_sorted(a, b)


# --- comparing data sets ---


def compare(
    reference: pd.DataFrame | Mapping[str, Any],
    current: pd.DataFrame,
    *,
    threshold: float = 0.2,
    bins: int = 10,
    columns: Iterable[Any] | None = None,
) -> DriftReport:
    """Compare ``current`` data with the ``reference`` (training) data, column by column.

    ``reference`` is a DataFrame or a profile of one (:func:`nbmlops.data.profile`); columns
    are matched by their names as text. ``columns`` limits the comparison to these reference
    columns. ``bins`` is the number of PSI bins for numbers. A numeric reference column compared with current strings or objects is compared
    as numbers when every current value converts to a number.

    Raises:
        DriftError: the current data has no rows, the reference has none, a column's dtypes
            cannot be compared (numbers against text or booleans, datetimes against anything
            else), a profile holds no distributions (made by an older nbmlops), a requested
            column is not in the reference, or a bad ``threshold`` or ``bins``.
        UnsupportedDataError: ``reference`` or ``current`` is not a DataFrame (or a profile).
    """
    import pandas as pd

    _check_threshold(threshold)
    _check_bins(bins)
    if not isinstance(current, pd.DataFrame):
        raise UnsupportedDataError(_type_name(current), "compare() needs the current data as a DataFrame")
    if len(current) == 0:
        raise DriftError("the current data has no rows")
    source, ref_rows, ref_columns = _reference(reference)
    cur_columns = {str(name): s for name, s in current.items()}
    if columns is None:
        names = list(ref_columns)
        extra = tuple(n for n in cur_columns if n not in ref_columns)
    else:
        names = list(dict.fromkeys(str(c) for c in ([columns] if isinstance(columns, str) else columns)))
        unknown = [n for n in names if n not in ref_columns]
        if unknown:
            raise DriftError(f"not in the reference data: {', '.join(map(repr, unknown))}")
        extra = ()
    features, skipped = [], []
    for name in (n for n in names if n in cur_columns):
        result = _compare_sides(name, ref_columns[name], _side(name, cur_columns[name]), threshold, bins)
        if isinstance(result, str):
            skipped.append((name, result))
        else:
            features.append(result)
    return DriftReport(
        features=tuple(features),
        threshold=threshold,
        missing_columns=tuple(n for n in names if n not in cur_columns),
        extra_columns=extra,
        reference_source=source,
        skipped=tuple(skipped),
        reference_rows=ref_rows,
        current_rows=len(current),
    )


def compare_predictions(
    reference_predictions: Any,
    current_predictions: Any,
    *,
    threshold: float = 0.2,
    bins: int = 10,
) -> FeatureDrift:
    """The drift of a model's outputs, as a feature named ``prediction``.

    Each side is a 1-D array, a list, a Series or a one-column DataFrame; the reference may
    also be the profile of one. Numbers get PSI and KS, labels the categorical PSI.

    Raises:
        DriftError: no current predictions, more than one column, labels against numbers.
    """
    _check_threshold(threshold)
    _check_bins(bins)
    if isinstance(reference_predictions, Mapping):
        _, _, columns = _reference(reference_predictions)
        if len(columns) != 1:
            raise DriftError(f"the reference profile has {len(columns)} columns, predictions have one")
        ref = next(iter(columns.values()))
    else:
        ref_series = _prediction_series(reference_predictions, "reference")
        if not len(ref_series):
            raise DriftError("there are no reference predictions")
        ref = _side("prediction", ref_series)
    cur = _prediction_series(current_predictions, "current")
    if not len(cur):
        raise DriftError("there are no current predictions")
    result = _compare_sides("prediction", ref, _side("prediction", cur), threshold, bins)
    if isinstance(result, str):
        raise DriftError(result, "prediction")
    return result


# --- one column from each side ---


@dataclass(frozen=True)
class _Numbers:
    """A numeric column: its sorted finite values, or the CDF its profile records."""

    dtype: str
    count: int  # finite values
    missing: int  # NaN, None, infinite
    values: np.ndarray | None = None
    cdf: _ProfileCDF | None = None


@dataclass(frozen=True)
class _ProfileCDF:
    """The CDF of a profiled column: known at its quantiles, linear between them.

    ``knots`` are the distinct quantiles; ``at`` and ``below`` the shares of values at most
    and below each (they differ where a value repeats).
    """

    quantiles: np.ndarray  # all 101, for the bin edges
    knots: np.ndarray
    at: np.ndarray
    below: np.ndarray

    @classmethod
    def from_profile(cls, quantiles: list[float], at: list[float], below: list[float]) -> _ProfileCDF:
        import numpy as np

        q = np.asarray(quantiles, dtype=np.float64)
        knots, first = np.unique(q, return_index=True)
        return cls(
            q,
            knots,
            np.asarray(at, dtype=np.float64)[first],
            np.asarray(below, dtype=np.float64)[first],
        )

    def __call__(self, x: np.ndarray, left: bool = False) -> np.ndarray:
        """F(x), or with ``left`` the limit from the left F(x-)."""
        import numpy as np

        k = self.knots
        j = np.searchsorted(k, x, side="right")  # knots at most x
        m = np.clip(j - 1, 0, k.size - 1)
        nxt = np.clip(j, 0, k.size - 1)
        on_knot = (j > 0) & (k[m] == x)
        span = k[nxt] - k[m]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(span > 0, (x - k[m]) / span, 0.0)
        start, end = self.at[m], np.maximum(self.below[nxt], self.at[m])
        between = start + t * (end - start)
        cdf = np.where(on_knot, self.below[m] if left else self.at[m], between)
        return np.where(j == 0, 0.0, np.where((j == k.size) & ~on_knot, 1.0, cdf))


@dataclass(frozen=True)
class _Labels:
    """A label column: counts by text; ``other`` counts the values a profile did not name."""

    dtype: str
    counts: Mapping[str, int]
    missing: int
    other: int = 0
    boolean: bool = False

    @property
    def count(self) -> int:
        return sum(self.counts.values()) + self.other


@dataclass(frozen=True)
class _Other:
    """A column that is not compared: datetimes, timedeltas, complex numbers and the like."""

    dtype: str
    kind: Literal["datetime", "other"]
    reason: str = ""


_Side = _Numbers | _Labels | _Other


def _reference(reference: object) -> tuple[Literal["snapshot", "profile"], int, dict[str, Any]]:
    """The source, row count and columns (name -> side, or a DriftError to raise on use)."""
    import pandas as pd

    if isinstance(reference, pd.DataFrame):
        if len(reference) == 0:
            raise DriftError("the reference data has no rows")
        return "snapshot", len(reference), {str(n): _LazySide(n, s) for n, s in reference.items()}
    if isinstance(reference, Mapping):
        if not isinstance(reference.get("columns"), list) or "num_rows" not in reference:
            raise DriftError("the reference is a dict but not a profile (no 'columns' or 'num_rows')")
        rows = int(reference["num_rows"])
        if rows == 0:
            raise DriftError("the reference data has no rows")
        return (
            "profile",
            rows,
            {str(c["name"]): _profile_side(c, rows) for c in reference["columns"]},
        )
    raise UnsupportedDataError(_type_name(reference), "compare() needs the reference as a DataFrame or a profile dict")


class _LazySide:
    """A reference column turned into a side only when compared (sorting costs)."""

    def __init__(self, name: Any, s: pd.Series) -> None:
        self.name, self.series = str(name), s

    def side(self) -> _Side:
        return _side(self.name, self.series)


def _side(name: str, s: pd.Series) -> _Side:
    import numpy as np
    import pandas as pd

    from nbmlops.data.profile import text_counts

    dtype = s.dtype
    kind = getattr(dtype, "kind", "O")
    if isinstance(dtype, pd.CategoricalDtype) or kind in "OSUTb":
        counted = text_counts(s)
        if counted is None:
            return _Other(str(dtype), "other", "values cannot be counted (unhashable)")
        counts = counted[0]
        total = int(counts.sum())
        return _Labels(
            str(dtype),
            dict(zip(counts.index, counts.to_numpy().tolist())),
            len(s) - total,
            0,
            kind == "b",
        )
    if kind in "iuf":
        values = _finite_sorted(s.to_numpy(dtype=np.float64, na_value=np.nan, copy=True), owned=True)
        return _Numbers(str(dtype), values.size, len(s) - values.size, values=values)
    return _Other(str(dtype), "datetime" if kind in "mM" else "other")


def _profile_side(col: Mapping[str, Any], rows: int) -> _Side | DriftError:
    name, dtype, nulls = str(col["name"]), str(col.get("dtype", "?")), int(col.get("nulls") or 0)
    if "true_count" in col or "distinct" in col:
        if "top" not in col:
            return _no_distribution(name)
        if col["top"] is None:
            reason = "its profile has no category counts (over a million rows or unhashable values)"
            return _Other(dtype, "other", reason)
        counts = {str(k): int(v) for k, v in col["top"].items()}
        return _Labels(dtype, counts, nulls, int(col.get("other") or 0), "true_count" in col)
    if "mean" in col:
        if any(key not in col for key in ("quantiles", "cdf", "cdf_left")):
            return _no_distribution(name)
        q, at, below = col["quantiles"], col["cdf"], col["cdf_left"]
        if q is None or at is None or below is None:
            return _Numbers(dtype, 0, rows)
        if not len(q) == len(at) == len(below) == _LEVELS + 1:
            return DriftError(f"the profile has {len(q)} quantiles, not {_LEVELS + 1}", name)
        return _Numbers(dtype, rows - nulls, nulls, cdf=_ProfileCDF.from_profile(q, at, below))
    is_time = isinstance(col.get("min"), str) or any(t in dtype for t in ("datetime", "timedelta"))
    return _Other(dtype, "datetime" if is_time else "other")


def _no_distribution(name: str) -> DriftError:
    return DriftError(
        "the training data has no distribution recorded (its profile was made by an older "
        "nbmlops); profile or snapshot the training data again",
        name,
    )


def _compare_sides(name: str, ref: Any, cur: _Side, threshold: float, bins: int) -> FeatureDrift | str:
    """The drift of one column, or the reason it was skipped."""
    if isinstance(ref, DriftError):
        raise ref
    if isinstance(ref, _LazySide):
        ref = ref.side()
    ref, cur = _compatible(name, ref, cur)
    if isinstance(ref, _Other) or isinstance(cur, _Other):
        if any(isinstance(s, _Other) and s.kind == "datetime" for s in (ref, cur)):
            return "datetimes and timedeltas are not compared"
        other = ref if isinstance(ref, _Other) else cur
        assert isinstance(other, _Other)
        return other.reason or f"dtype {other.dtype} is not compared"
    if isinstance(ref, _Numbers) and isinstance(cur, _Numbers):
        return _numeric_drift(name, ref, cur, threshold, bins)
    assert isinstance(ref, _Labels) and isinstance(cur, _Labels)
    return _categorical_drift(name, ref, cur, threshold)


def _compatible(name: str, ref: _Side, cur: _Side) -> tuple[_Side, _Side]:
    """Both sides as the same kind, or a DriftError naming both dtypes."""
    ref_time, cur_time = (isinstance(s, _Other) and s.kind == "datetime" for s in (ref, cur))
    if ref_time != cur_time and not isinstance(cur if ref_time else ref, _Other):
        raise _mismatch(name, ref, cur)
    if isinstance(ref, _Numbers) and isinstance(cur, _Labels):
        converted = None if cur.boolean else _labels_as_numbers(cur)
        if converted is None:
            raise _mismatch(name, ref, cur)
        return ref, converted
    if isinstance(ref, _Labels) and isinstance(cur, _Numbers):
        raise _mismatch(name, ref, cur)
    return ref, cur


def _mismatch(name: str, ref: _Side, cur: _Side) -> DriftError:
    return DriftError(
        f"the reference has {_describe(ref)} (dtype {ref.dtype}) but the current data has "
        f"{_describe(cur)} (dtype {cur.dtype}); convert one of them to compare",
        name,
    )


def _describe(side: _Side) -> str:
    if isinstance(side, _Numbers):
        return "numbers"
    if isinstance(side, _Labels):
        return "booleans" if side.boolean else "text or categories"
    return "datetimes" if side.kind == "datetime" else "values"


def _labels_as_numbers(side: _Labels) -> _Numbers | None:
    """Current labels as numbers when every one of them is a number (text read from a CSV)."""
    import numpy as np
    import pandas as pd

    text = list(side.counts)
    numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(numbers).any():
        return None
    values = np.repeat(numbers, [side.counts[t] for t in text])
    finite = _finite_sorted(values, owned=True)
    return _Numbers(side.dtype, finite.size, side.missing + values.size - finite.size, values=finite)


def _numeric_drift(name: str, ref: _Numbers, cur: _Numbers, threshold: float, bins: int) -> FeatureDrift:
    if not ref.count or not cur.count:
        return _empty_drift(name, "numeric", ref, cur)
    assert cur.values is not None
    if ref.values is not None:
        edges = _edges_from_sorted(ref.values, bins)
        ref_shares = _shares_sorted(ref.values, edges)
        ks, pvalue = _ks_sorted(ref.values, cur.values)
    else:
        assert ref.cdf is not None
        edges = _edges_from_quantiles(ref.cdf.quantiles, bins)
        ref_shares = _shares_from_cdf(ref.cdf(edges))
        ks, pvalue = _ks_against_profile(ref.cdf, ref.count, cur.values)
    value = _psi(ref_shares, _shares_sorted(cur.values, edges))
    return FeatureDrift(
        name=name,
        kind="numeric",
        psi=value,
        ks_statistic=ks,
        ks_pvalue=pvalue,
        drifted=value > threshold,
        reference_rows=ref.count,
        current_rows=cur.count,
        approximate=ref.values is None,
        note=_missing_note(ref, cur),
        reference_missing=_share(ref),
        current_missing=_share(cur),
        histogram=_numeric_histogram(ref, cur),
    )


def _categorical_drift(name: str, ref: _Labels, cur: _Labels, threshold: float) -> FeatureDrift:
    import numpy as np

    if not ref.count or not cur.count:
        return _empty_drift(name, "categorical", ref, cur)
    notes = []
    keys = list(ref.counts)
    unnamed = [k for k in cur.counts if k not in ref.counts]
    ref_n = [ref.counts[k] for k in keys]
    cur_n = [cur.counts.get(k, 0) for k in keys]
    if ref.other:  # the profile pooled its rare values: pool the current ones it did not name
        ref_n.append(ref.other)
        cur_n.append(sum(cur.counts[k] for k in unnamed))
    else:
        keys += unnamed
        ref_n += [0] * len(unnamed)
        cur_n += [cur.counts[k] for k in unnamed]
        if unnamed:
            notes.append(_listing("new", sorted(unnamed, key=lambda k: -cur.counts[k])))
    gone = [k for k in ref.counts if k not in cur.counts]
    if gone:
        notes.append(_listing("absent", gone))
    notes.append(_missing_note(ref, cur))
    ref_a, cur_a = np.asarray(ref_n, dtype=np.float64), np.asarray(cur_n, dtype=np.float64)
    value = _psi(ref_a / ref_a.sum(), cur_a / cur_a.sum())
    return FeatureDrift(
        name=name,
        kind="categorical",
        psi=value,
        ks_statistic=None,
        ks_pvalue=None,
        drifted=value > threshold,
        reference_rows=ref.count,
        current_rows=cur.count,
        approximate=bool(ref.other),
        note="; ".join(n for n in notes if n),
        reference_missing=_share(ref),
        current_missing=_share(cur),
        histogram=_categorical_histogram(keys, ref_a, cur_a, bool(ref.other)),
    )


def _empty_drift(
    name: str,
    kind: Literal["numeric", "categorical"],
    ref: _Numbers | _Labels,
    cur: _Numbers | _Labels,
) -> FeatureDrift:
    """The drift of a column with no values on one side (drifted) or both (not)."""
    empty = [side for side, s in (("reference", ref), ("current", cur)) if not s.count]
    return FeatureDrift(
        name=name,
        kind=kind,
        psi=None,
        ks_statistic=None,
        ks_pvalue=None,
        drifted=len(empty) == 1,
        reference_rows=ref.count,
        current_rows=cur.count,
        note=f"all values missing in {' and '.join(empty)} data",
        reference_missing=_share(ref),
        current_missing=_share(cur),
    )


def _share(side: _Numbers | _Labels) -> float:
    """The share of missing values."""
    total = side.missing + side.count
    return side.missing / total if total else 0.0


def _missing_note(ref: _Numbers | _Labels, cur: _Numbers | _Labels) -> str:
    before, after = _share(ref), _share(cur)
    return f"missing values {before:.1%} -> {after:.1%}" if abs(after - before) >= _MISSING_NOTE else ""


def _listing(adjective: str, categories: list[str], shown: int = 5) -> str:
    """Text such as "2 new categories: a, b"."""
    n = len(categories)
    names = ", ".join(_clip(k, 40) for k in categories[:shown])
    more = f" and {n - shown} more" if n > shown else ""
    return f"{n} {adjective} {'category' if n == 1 else 'categories'}: {names}{more}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _prediction_series(predictions: Any, side: str) -> pd.Series:
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


# --- the numbers ---


def _floats(values: Iterable[float]) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        return pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return np.asarray(values if hasattr(values, "__len__") else list(values), dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DriftError(f"expected numbers ({e}); use psi_categorical() for labels") from None


def _finite_sorted(values: np.ndarray, owned: bool = False) -> np.ndarray:
    """The finite values, sorted; ``owned`` arrays may be sorted in place."""
    import numpy as np

    finite = np.isfinite(values)
    if not finite.all():
        values, owned = values[finite], True
    if owned:
        values.sort()
        return values
    return np.sort(values)


def _order_index(n: int, levels: np.ndarray) -> np.ndarray:
    """Positions of the ``inverted_cdf`` quantiles at ``levels`` in a sorted array of ``n``
    values, computed as numpy's ``np.quantile(..., method="inverted_cdf")`` computes them."""
    import numpy as np

    virtual = n * levels - 1
    below = np.floor(virtual)
    index = np.where(virtual - below == 0, below, below + 1).astype(np.intp)
    return np.clip(index, 0, n - 1)


def _edges_from_sorted(values: np.ndarray, bins: int) -> np.ndarray:
    import numpy as np

    levels = np.arange(1, bins) / bins
    return np.unique(values[_order_index(values.size, levels)])


def _edges_from_quantiles(quantiles: np.ndarray, bins: int) -> np.ndarray:
    """Edges at the profile's percentiles nearest to the ``bins``-quantiles (exact when
    ``bins`` divides 100)."""
    import numpy as np

    index = np.rint(np.arange(1, bins) * _LEVELS / bins).astype(np.intp)
    return np.unique(quantiles[index])


def _shares_sorted(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of sorted values in the bins (-inf, e0], (e0, e1], ..., (e_last, +inf)."""
    import numpy as np

    cumulative = np.searchsorted(values, edges, side="right") / values.size
    return _shares_from_cdf(cumulative)


def _shares_from_cdf(cumulative: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.diff(np.concatenate(([0.0], cumulative, [1.0])))


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    import numpy as np

    ref, cur = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _ks_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """KS statistic and p-value of two sorted NaN-free samples, as scipy computes them."""
    import numpy as np

    n1, n2 = a.size, b.size
    d = 0.0
    for points in (a, b):  # the ECDFs differ most at a data point
        diff = np.searchsorted(a, points, side="right") / n1 - np.searchsorted(b, points, side="right") / n2
        d = max(d, float(np.max(np.abs(diff))))
    return _ks_pvalue(d, n1, n2)


def _ks_pvalue(d: float, n1: int, n2: int) -> tuple[float, float]:
    """The statistic (rounded to the lattice in the exact case) and two-sided p-value."""
    import numpy as np

    if max(n1, n2) <= _EXACT_KS_MAX_N:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(np.round(d * lcm))
        d = h / lcm
        if h == 0:
            return d, 1.0
        if n1 == n2:
            p = _ks_exact_equal(n1, h)
        else:
            p = _ks_exact(n1, n2, g, h)
        if 0.0 <= p <= 1.0:
            return d, p
    return d, _ks_asymptotic(d, n1, n2)


def _ks_asymptotic(d: float, n1: int, n2: int) -> float:
    import numpy as np
    from scipy.stats import kstwo

    en = n1 * n2 / (n1 + n2)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _ks_exact_equal(n: int, h: int) -> float:
    """P(D >= h/n) for two samples of ``n``: 2 * sum_k (-1)^(k+1) C(2n, n-kh) / C(2n, n)."""
    import numpy as np

    j = np.arange(n, dtype=np.float64)
    ratios = np.cumprod((n - j) / (n + j + 1))  # C(2n, n-i-1) / C(2n, n) at position i
    terms = ratios[h - 1 :: h]
    signs = np.where(np.arange(terms.size) % 2 == 0, 1.0, -1.0)
    return float(2.0 * np.sum(signs * terms))


def _ks_exact(n1: int, n2: int, g: int, h: int) -> float:
    """P(D >= h/lcm) for samples of ``n1`` and ``n2`` values (Hodges' lattice paths).

    Walks the grid from (0, 0) to (m, n) one anti-diagonal at a time, keeping for each point
    the probability that a random monotone path to it has already left the band
    ``|i/m - j/n| < h/lcm``: 1 outside, and inside the average of its two predecessors weighted
    by their path counts (i and j). The probability at (m, n) is the p-value.
    """
    import numpy as np

    m, n = max(n1, n2), min(n1, n2)
    mg, ng = m // g, n // g
    width = mg + ng
    prev = np.ones(m + 2)  # prev[i + 1]: the point (i, s - 1 - i) of the previous diagonal
    prev[1] = 0.0  # (0, 0) is inside the band
    band = (0, 0)
    for s in range(1, m + n + 1):
        lo = max(max(0, s - n), (s * mg - h) // width + 1)
        hi = min(min(m, s), -((-(s * mg + h)) // width) - 1)
        if lo > hi:
            return 1.0  # every path leaves the band
        i = np.arange(lo, hi + 1, dtype=np.float64)
        inside = (i * prev[lo : hi + 1] + (s - i) * prev[lo + 1 : hi + 2]) / s
        old_lo, old_hi = band
        prev[old_lo + 1 : old_hi + 2] = 1.0  # points of the last diagonal's band are now behind
        prev[lo + 1 : hi + 2] = inside
        band = (lo, hi)
    return float(prev[m + 1])


def _ks_against_profile(cdf: _ProfileCDF, ref_count: int, cur: np.ndarray) -> tuple[float, float]:
    """Approximate KS: the largest gap between a profile's CDF and the current ECDF (checked on
    both sides of every current value), p-value from the asymptotic two-sample distribution
    with the reference's row count."""
    import numpy as np

    n = cur.size
    upper = np.searchsorted(cur, cur, side="right") / n
    lower = np.searchsorted(cur, cur, side="left") / n
    gap_at = np.abs(cdf(cur) - upper)
    gap_before = np.abs(cdf(cur, left=True) - lower)
    d = float(max(gap_at.max(), gap_before.max()))
    return d, _ks_asymptotic(d, ref_count, n)


# --- plots ---


def _numeric_histogram(ref: _Numbers, cur: _Numbers) -> _Histogram:
    import numpy as np

    assert cur.values is not None
    tails = np.array([0.01, 0.99])
    cur_tails = cur.values[_order_index(cur.count, tails)]
    if ref.values is not None:
        ref_tails = ref.values[_order_index(ref.count, tails)]
    else:
        assert ref.cdf is not None
        ref_tails = ref.cdf.quantiles[[1, _LEVELS - 1]]
    lo, hi = float(min(ref_tails[0], cur_tails[0])), float(max(ref_tails[1], cur_tails[1]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _PLOT_BINS + 1)
    inner = edges[1:-1]
    if ref.values is not None:
        ref_shares = _shares_sorted(ref.values, inner)
    else:
        assert ref.cdf is not None
        ref_shares = _shares_from_cdf(ref.cdf(inner))
    return _Histogram(
        reference=tuple(ref_shares.tolist()),
        current=tuple(_shares_sorted(cur.values, inner).tolist()),
        edges=tuple(edges.tolist()),
    )


def _categorical_histogram(keys: list[str], ref: np.ndarray, cur: np.ndarray, pooled: bool) -> _Histogram:
    import numpy as np

    ref, cur = ref / ref.sum(), cur / cur.sum()
    labels = keys + (["(other values)"] if pooled else [])
    order = np.argsort(-np.maximum(ref, cur), kind="stable")
    shown, rest = order[:_PLOT_CATEGORIES], order[_PLOT_CATEGORIES:]
    labels = [labels[i] for i in shown]
    ref_shown, cur_shown = ref[shown].tolist(), cur[shown].tolist()
    if rest.size:
        labels.append(f"({rest.size} more)")
        ref_shown.append(float(ref[rest].sum()))
        cur_shown.append(float(cur[rest].sum()))
    return _Histogram(reference=tuple(ref_shown), current=tuple(cur_shown), labels=tuple(labels))


# --- rendering ---


_HEADER = ("feature", "kind", "psi", "ks", "ks p-value", "ref rows", "cur rows", "note")
_NUMERIC = {2, 3, 4, 5, 6}  # right-aligned columns of _HEADER


def _rows(report: DriftReport) -> list[tuple[FeatureDrift, str]]:
    """The table's features and their labels: the prediction, then the most drifted first."""
    first = [(report.prediction, "[prediction]")] if report.prediction else []
    return first + [(f, f.name) for f in _by_psi(report.features)]


def _cells(f: FeatureDrift, label: str) -> tuple[str, ...]:
    """A feature's row in the table, as text; "~" marks an approximate statistic."""
    approx = "~" if f.approximate else ""
    return (
        label,
        f.kind,
        "-" if f.psi is None else f"{approx}{f.psi:.4f}",
        "-" if f.ks_statistic is None else f"{approx}{f.ks_statistic:.4f}",
        "-" if f.ks_pvalue is None else f"{approx}{f.ks_pvalue:.3g}",
        str(f.reference_rows),
        str(f.current_rows),
        f.note,
    )


def _by_psi(features: Iterable[FeatureDrift]) -> list[FeatureDrift]:
    """Most drifted first: by PSI, an empty side that drifted before everything."""

    def key(f: FeatureDrift) -> float:
        if f.psi is None:
            return math.inf if f.drifted else -1.0
        return f.psi

    return sorted(features, key=key, reverse=True)


def _summary_lines(report: DriftReport) -> list[str]:
    lines = [
        (
            f"{len(report.drifted_features)} of {len(report.features)} features drifted "
            f"(PSI > {report.threshold:g}); reference: {report.reference_source}, "
            f"{report.reference_rows} rows; current: {report.current_rows} rows"
        )
    ]
    if report.prediction is not None:
        state = "drifted" if report.prediction.drifted else "did not drift"
        lines.append(f"prediction {state}")
    if report.missing_columns:
        lines.append("missing in current data: " + ", ".join(report.missing_columns))
    if report.extra_columns:
        lines.append("not in the reference: " + ", ".join(report.extra_columns))
    lines += [f"skipped {name}: {why}" for name, why in report.skipped]
    return lines


_METRIC_UNSAFE = re.compile(r"[^\w\-. ]")
_METRIC_PREFIX = len("ks_pvalue.")
_MAX_METRIC_KEY = 250  # MLflow's limit


def _metric_name(name: str, taken: set[str]) -> str:
    """``name`` made safe as part of an MLflow metric key, distinct from the ``taken`` ones
    (which it joins). Slashes and colons are replaced too: MLflow reads slashes as paths and
    refuses colons on Windows."""
    base = _METRIC_UNSAFE.sub("_", name) or "_"
    base = base[: _MAX_METRIC_KEY - _METRIC_PREFIX - 8]
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _add_metrics(metrics: dict[str, float], key: str, f: FeatureDrift) -> None:
    for prefix, value in (("psi", f.psi), ("ks", f.ks_statistic), ("ks_pvalue", f.ks_pvalue)):
        if value is not None:
            metrics[f"{prefix}.{key}"] = float(value)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.75em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.drifted td { background: #fde8e8; }
.badge { font-weight: bold; color: #b91c1c; }
.ok { color: #15803d; }
section { margin: 1.5em 0; }
img { max-width: 100%; }
"""


def _render_html(report: DriftReport, title: str) -> str:
    import html

    esc = html.escape
    drift = '<span class="badge">drift detected</span>' if report.drifted else '<span class="ok">no drift</span>'
    summary = "".join(f"<li>{esc(line)}</li>" for line in _summary_lines(report))
    head = "".join(f"<th>{esc(h)}</th>" for h in ("", *_HEADER))
    rows = []
    for f, label in _rows(report):
        mark = '<td><span class="badge">drift</span></td>' if f.drifted else "<td></td>"
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i in _NUMERIC else f"<td>{esc(c)}</td>"
            for i, c in enumerate(_cells(f, label))
        )
        tr = '<tr class="drifted">' if f.drifted else "<tr>"
        rows.append(f"{tr}{mark}{cells}</tr>")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{drift}</p><ul>{summary}</ul>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
        '<p>"~" marks statistics estimated from the reference profile.</p>',
    ]
    charted = [(f, label) for f, label in _rows(report) if f.psi is not None]
    if charted:
        parts.append("<h2>PSI by feature</h2>")
        parts.append(_img(_psi_chart(charted, report.threshold), "PSI by feature"))
    plottable = [(f, label) for f, label in _rows(report) if f.histogram is not None]
    if plottable:
        parts.append("<h2>Distributions</h2>")
        if len(plottable) > _MAX_PLOTS:
            parts.append(f"<p>The {_MAX_PLOTS} most drifted features.</p>")
    for f, label in plottable[:_MAX_PLOTS]:
        note = f"<p>{esc(f.note)}</p>" if f.note else ""
        parts.append(f"<section><h3>{esc(label)}</h3>{note}{_img(_distribution_chart(f, label), label)}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(png: bytes, alt: str) -> str:
    import base64
    import html

    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    fig.clear()
    return buffer.getvalue()


def _psi_chart(features: list[tuple[FeatureDrift, str]], threshold: float) -> bytes:
    """Horizontal PSI bars, the most drifted on top (at most 40), and the threshold line."""
    from matplotlib.figure import Figure

    shown = features[:_MAX_BARS]
    fig = Figure(figsize=(7, 0.3 * len(shown) + 1.2))
    ax = fig.subplots()
    positions = list(range(len(shown)))[::-1]
    colors = ["#dc2626" if f.drifted else "#60a5fa" for f, _ in shown]
    ax.barh(positions, [f.psi or 0.0 for f, _ in shown], color=colors)
    ax.set_yticks(positions, [_clip(label, 40) for _, label in shown], parse_math=False)
    ax.axvline(threshold, color="#111", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("PSI" if len(features) <= _MAX_BARS else f"PSI (the {_MAX_BARS} highest)")
    ax.legend(loc="lower right")
    return _png(fig)


def _distribution_chart(f: FeatureDrift, name: str) -> bytes:
    import numpy as np
    from matplotlib.figure import Figure

    assert f.histogram is not None
    hist = f.histogram
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    if hist.edges:
        edges = np.asarray(hist.edges)
        widths = np.diff(edges)
        for shares, label, color in ((hist.reference, "reference", "#2563eb"), (hist.current, "current", "#f97316")):
            ax.bar(edges[:-1], shares, width=widths, align="edge", alpha=0.5, label=label, color=color)
        ax.set_ylabel("share of values")
        ax.set_xlabel("the outer bins hold the tails")
    else:
        x = np.arange(len(hist.labels))
        ax.bar(x - 0.2, hist.reference, width=0.4, label="reference", color="#2563eb")
        ax.bar(x + 0.2, hist.current, width=0.4, label="current", color="#f97316")
        labels = [_clip(label, 20) for label in hist.labels]
        ax.set_xticks(x, labels, rotation=45, ha="right", parse_math=False)
        ax.set_ylabel("share of values")
    psi_text = "no PSI" if f.psi is None else f"PSI {f.psi:.3f}"
    ax.set_title(f"{_clip(name, 60)}: {psi_text}", parse_math=False)
    ax.legend()
    return _png(fig)


# --- checks ---


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise DriftError(f"threshold must be a positive number, not {threshold!r}")


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        raise DriftError(f"bins must be an integer of at least 2, not {bins!r}")


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
