"""Drift between the data a model was trained on ("reference") and new data ("current").

``compare(reference, current)`` measures, column by column, how far the current distribution
has moved from the reference one and returns a :class:`DriftReport`; the reference is the
training DataFrame itself (a snapshot) or only its stored profile (:func:`nbmlops.data.profile`).

- Numbers get the population stability index (PSI) over bins cut at the reference's
  quantiles (deciles by default), and the two-sample Kolmogorov-Smirnov statistic and
  p-value of ``scipy.stats.ks_2samp``. NaN and infinite values are left out of both (the note
  says when the share of missing values moved).
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

The statistics are in :mod:`nbmlops.data.drift_stats`, the reading of columns in
:mod:`nbmlops.data.drift_columns`, and the text, metrics and HTML of a report in
:mod:`nbmlops.data.drift_report`; this module compares and holds the report. pandas, numpy, scipy
and matplotlib are imported only when a function is called.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nbmlops.data.drift_columns import (
    Labels,
    LazyColumn,
    Numbers,
    Other,
    Side,
    column_side,
    compatible,
    prediction_series,
    reference_columns,
    type_name,
)
from nbmlops.data.drift_report import by_psi, report_html, report_metrics, report_table
from nbmlops.data.drift_stats import (
    LEVELS,
    DriftError,
    check_bins,
    edges_from_quantiles,
    edges_from_sorted,
    ks_against_profile,
    ks_sorted,
    order_index,
    psi,
    psi_categorical,
    psi_of_shares,
    shares_from_cdf,
    shares_sorted,
)
from nbmlops.exceptions import UnsupportedDataError
from nbmlops.shorten import clip

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "DriftError",
    "DriftReport",
    "FeatureDrift",
    "compare",
    "compare_predictions",
    "psi",
    "psi_categorical",
]

_MISSING_NOTE = 0.05  # a change of the missing share by this much gets a note
_PLOT_BINS = 30
_PLOT_CATEGORIES = 15


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
        return tuple(f for f in by_psi(self.features) if f.drifted)

    def to_metrics(self) -> dict[str, float]:
        """The report as MLflow metrics.

        ``psi.<column>``, ``ks.<column>`` and ``ks_pvalue.<column>`` per feature (statistics
        that are None are left out), ``psi.max``, ``drifted_features`` (a count) and, with a
        prediction, ``psi.prediction``, ``ks.prediction`` and ``ks_pvalue.prediction``.
        Column names keep letters, digits, ``_ - .`` and spaces; any other character becomes
        ``_``, an empty name ``_``, and a name that collides with another (or with ``max`` or
        ``prediction``) gets a suffix ``_2``, ``_3``, ...
        """
        return report_metrics(self)

    def format_table(self) -> str:
        """The features as an aligned text table, most drifted first; ``*`` marks drift and
        ``~`` an approximate statistic. The prediction, if any, comes first. Long names are
        cut at 40 characters."""
        return report_table(self)

    def to_html(self, title: str = "Data drift") -> str:
        """A self-contained HTML page: a summary, the table, a PSI bar chart with the threshold,
        and the reference and current distributions of the 30 most drifted features, as PNG
        images embedded in the page. Every user string is escaped."""
        return report_html(self, title)


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
    columns. ``bins`` is the number of PSI bins for numbers. A numeric reference column compared
    with current strings or objects is compared as numbers when every current value converts to
    a number.

    Raises:
        DriftError: the current data has no rows, the reference has none, a column's dtypes
            cannot be compared (numbers against text or booleans, datetimes against anything
            else), a profile holds no distributions (made by an older nbmlops), a requested
            column is not in the reference, or a bad ``threshold`` or ``bins``.
        UnsupportedDataError: ``reference`` or ``current`` is not a DataFrame (or a profile).
    """
    import pandas as pd

    _check_threshold(threshold)
    check_bins(bins)
    if not isinstance(current, pd.DataFrame):
        raise UnsupportedDataError(type_name(current), "compare() needs the current data as a DataFrame")
    if len(current) == 0:
        raise DriftError("the current data has no rows")
    source, ref_rows, ref_columns = reference_columns(reference)
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
        result = _compare_sides(name, ref_columns[name], column_side(name, cur_columns[name]), threshold, bins)
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
    check_bins(bins)
    if isinstance(reference_predictions, Mapping):
        _, _, columns = reference_columns(reference_predictions)
        if len(columns) != 1:
            raise DriftError(f"the reference profile has {len(columns)} columns, predictions have one")
        ref = next(iter(columns.values()))
    else:
        ref_series = prediction_series(reference_predictions, "reference")
        if not len(ref_series):
            raise DriftError("there are no reference predictions")
        ref = column_side("prediction", ref_series)
    cur = prediction_series(current_predictions, "current")
    if not len(cur):
        raise DriftError("there are no current predictions")
    result = _compare_sides("prediction", ref, column_side("prediction", cur), threshold, bins)
    if isinstance(result, str):
        raise DriftError(result, "prediction")
    return result


# --- one column from each side ---


def _compare_sides(name: str, ref: Any, cur: Side, threshold: float, bins: int) -> FeatureDrift | str:
    """The drift of one column, or the reason it was skipped."""
    if isinstance(ref, DriftError):
        raise ref
    if isinstance(ref, LazyColumn):
        ref = ref.side()
    ref, cur = compatible(name, ref, cur)
    if isinstance(ref, Other) or isinstance(cur, Other):
        if any(isinstance(s, Other) and s.kind == "datetime" for s in (ref, cur)):
            return "datetimes and timedeltas are not compared"
        other = ref if isinstance(ref, Other) else cur
        assert isinstance(other, Other)
        return other.reason or f"dtype {other.dtype} is not compared"
    if isinstance(ref, Numbers) and isinstance(cur, Numbers):
        return _numeric_drift(name, ref, cur, threshold, bins)
    assert isinstance(ref, Labels) and isinstance(cur, Labels)
    return _categorical_drift(name, ref, cur, threshold)


def _numeric_drift(name: str, ref: Numbers, cur: Numbers, threshold: float, bins: int) -> FeatureDrift:
    if not ref.count or not cur.count:
        return _empty_drift(name, "numeric", ref, cur)
    assert cur.values is not None
    if ref.values is not None:
        edges = edges_from_sorted(ref.values, bins)
        ref_shares = shares_sorted(ref.values, edges)
        ks, pvalue = ks_sorted(ref.values, cur.values)
    else:
        assert ref.cdf is not None
        edges = edges_from_quantiles(ref.cdf.quantiles, bins)
        ref_shares = shares_from_cdf(ref.cdf(edges))
        ks, pvalue = ks_against_profile(ref.cdf, ref.count, cur.values)
    value = psi_of_shares(ref_shares, shares_sorted(cur.values, edges))
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


def _categorical_drift(name: str, ref: Labels, cur: Labels, threshold: float) -> FeatureDrift:
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
    value = psi_of_shares(ref_a / ref_a.sum(), cur_a / cur_a.sum())
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
    ref: Numbers | Labels,
    cur: Numbers | Labels,
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


def _share(side: Numbers | Labels) -> float:
    """The share of missing values."""
    total = side.missing + side.count
    return side.missing / total if total else 0.0


def _missing_note(ref: Numbers | Labels, cur: Numbers | Labels) -> str:
    before, after = _share(ref), _share(cur)
    return f"missing values {before:.1%} -> {after:.1%}" if abs(after - before) >= _MISSING_NOTE else ""


def _listing(adjective: str, categories: list[str], shown: int = 5) -> str:
    """Text such as "2 new categories: a, b"."""
    n = len(categories)
    names = ", ".join(clip(k, 40) for k in categories[:shown])
    more = f" and {n - shown} more" if n > shown else ""
    return f"{n} {adjective} {'category' if n == 1 else 'categories'}: {names}{more}"


def _numeric_histogram(ref: Numbers, cur: Numbers) -> _Histogram:
    import numpy as np

    assert cur.values is not None
    tails = np.array([0.01, 0.99])
    cur_tails = cur.values[order_index(cur.count, tails)]
    if ref.values is not None:
        ref_tails = ref.values[order_index(ref.count, tails)]
    else:
        assert ref.cdf is not None
        ref_tails = ref.cdf.quantiles[[1, LEVELS - 1]]
    lo, hi = float(min(ref_tails[0], cur_tails[0])), float(max(ref_tails[1], cur_tails[1]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _PLOT_BINS + 1)
    inner = edges[1:-1]
    if ref.values is not None:
        ref_shares = shares_sorted(ref.values, inner)
    else:
        assert ref.cdf is not None
        ref_shares = shares_from_cdf(ref.cdf(inner))
    return _Histogram(
        reference=tuple(ref_shares.tolist()),
        current=tuple(shares_sorted(cur.values, inner).tolist()),
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


# --- checks ---


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise DriftError(f"threshold must be a positive number, not {threshold!r}")
