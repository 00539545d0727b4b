"""Profiles and MLflow schemas of data sets, computed column by column without copying a frame."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import UnsupportedDataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["mlflow_schema", "profile"]

_MAX_DISTINCT_ROWS = 1_000_000  # above this, counting distinct values costs too much memory
_MAX_ARRAY_COLUMNS = 1000  # a wider 2-D array is profiled as one column
_QUANTILE_SAMPLE = 500_000  # quantiles of a longer column come from a sample this size
_TOP_VALUES = 100  # categories counted by name; the rest are summed as "other"
_MAX_TEXT = 200  # characters of a category's text kept in a profile
_CHUNK = 1 << 20  # values of a column summarised at a time (bounds every temporary copy)


def profile(obj: object) -> dict[str, Any]:
    """Summarise a DataFrame, Series or ndarray as a JSON-serialisable dict.

    The result has ``kind``, ``shape``, ``num_rows``, ``num_elements`` and ``columns``, one
    entry per column with ``name``, ``dtype`` and ``nulls``, plus: ``min``, ``max``, ``mean``
    and ``std`` for numbers; ``true_count`` for booleans; ``min`` and ``max`` as ISO 8601 text
    for datetimes and timedeltas; ``distinct`` for strings, objects and categoricals (``None``
    above a million rows). A 1-D array, an array of more than two dimensions and a 2-D array
    of more than 1000 columns are one column named ``values``; a structured array has a column
    per field. Missing, NaN and infinite statistics are ``None``.

    The distribution of each column is kept too, so that drift can be measured against the
    profile alone (:mod:`nbmlops.data.drift`):

    - numbers have ``quantiles``: the 0%, 1%, ..., 100% quantiles of their finite values (101
      floats, ``inverted_cdf`` method: each is a value of the column); ``cdf`` and
      ``cdf_left``: the share of finite values at most, and below, each quantile (they differ
      where a value repeats, so data with ties keeps its steps). All three are ``None`` when
      there is no finite value. Above 500,000 values, they come from a fixed random sample of
      about 500,000 (share error about 0.2%), except the 0% and 100% quantiles: the exact
      minimum and maximum.
    - booleans, strings, objects and categoricals have ``top``: the 100 most frequent values,
      as text (``str(value)``, cut at 200 characters; values with the same text are counted
      together), mapped to their counts, most frequent first (ties in order of appearance);
      and ``other``: the count of all other non-missing values. Both are ``None`` for strings
      and objects above a million rows or with unhashable values; booleans and categoricals
      have them at any size.

    What is exact and what is sampled: counts (rows, nulls, true values), ``min``, ``max``,
    ``mean`` and ``std`` are exact (computed in one pass over chunks of a million values, without
    copying a column; ``mean`` and ``std`` up to floating-point rounding); ``top``, ``other`` and
    ``distinct`` are exact where given; only ``quantiles``, ``cdf`` and ``cdf_left`` of columns of
    more than 500,000 values are sampled (their first and last quantile stay exact).

    Raises:
        UnsupportedDataError: for any other object.
    """
    kind, shape, columns = _columns(obj)
    return {
        "kind": kind,
        "shape": list(shape),
        "num_rows": shape[0] if shape else 1,
        "num_elements": math.prod(shape),
        "columns": [_column_profile(name, s) for name, s in columns],
    }


def mlflow_schema(obj: object) -> str | None:
    """Return the schema MLflow shows for a dataset, as JSON, or None for other objects.

    A DataFrame or Series gives ``{"mlflow_colspec": [{"type", "name", "required"}, ...]}``:
    dtypes map to MLflow's boolean, integer, long, float, double, string, binary and datetime
    (object columns by their values, uint64 to double, anything else to string); names become
    text (an unnamed Series has none); a column with missing values is not required. An ndarray
    gives ``{"mlflow_tensorspec": {"features": ..., "targets": null}}`` with a variable first
    dimension. Both are what ``mlflow.data`` stores and its UI shows.
    """
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        items = obj.items() if isinstance(obj, pd.DataFrame) else [(obj.name, obj)]
        specs = []
        for name, s in items:
            spec: dict[str, Any] = {"type": _mlflow_type(s.dtype, s)}
            if name is not None:
                spec["name"] = str(name)
            spec["required"] = not bool(s.isna().any())
            specs.append(spec)
        return json.dumps({"mlflow_colspec": specs})
    if np is not None and isinstance(obj, np.ndarray):
        char = obj.dtype.char
        dtype = "str" if char == "U" else "bytes" if char == "S" else obj.dtype.name
        tensor = {"dtype": dtype, "shape": [-1, *obj.shape[1:]] if obj.ndim else []}
        features = json.dumps([{"type": "tensor", "tensor-spec": tensor}])
        return json.dumps({"mlflow_tensorspec": {"features": features, "targets": None}})
    return None


def _columns(obj: object) -> tuple[str, tuple[int, ...], Iterator[tuple[Any, pd.Series]]]:
    """The kind, shape and (name, Series) columns of ``obj``; the Series are views."""
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if pd is not None and isinstance(obj, pd.DataFrame):
        return "DataFrame", obj.shape, obj.items()
    if pd is not None and isinstance(obj, pd.Series):
        return "Series", obj.shape, iter([("values" if obj.name is None else obj.name, obj)])
    if np is not None and isinstance(obj, np.ndarray):
        return "ndarray", obj.shape, _array_columns(obj)
    raise UnsupportedDataError(
        f"{type(obj).__module__}.{type(obj).__qualname__}",
        f"cannot profile an object of type {type(obj).__qualname__}",
    )


def _array_columns(a: np.ndarray) -> Iterator[tuple[Any, pd.Series]]:
    import pandas as pd

    def series(values: np.ndarray) -> pd.Series:
        return pd.Series(values, dtype=values.dtype, copy=False)

    if a.dtype.names and a.ndim == 1:
        for name in a.dtype.names:
            yield name, series(a[name])
    elif a.ndim == 2 and a.shape[1] <= _MAX_ARRAY_COLUMNS:
        for i in range(a.shape[1]):
            yield str(i), series(a[:, i])
    else:
        yield "values", series(a.ravel(order="K"))  # a view unless the array is non-contiguous


def _column_profile(name: Any, s: pd.Series) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    dtype = s.dtype
    kind = getattr(dtype, "kind", "O")
    out: dict[str, Any] = {"name": str(name), "dtype": str(dtype), "nulls": int(s.isna().sum())}
    if isinstance(dtype, pd.CategoricalDtype) or kind in "OSUT":
        small = len(s) <= _MAX_DISTINCT_ROWS
        counted = text_counts(s) if small or isinstance(dtype, pd.CategoricalDtype) else None
        out["distinct"] = counted[1] if counted is not None and small else None
        out |= _top(counted[0] if counted is not None else None)
    elif kind == "b":
        true_count = int(s.sum())
        out["true_count"] = true_count
        false_count = len(s) - out["nulls"] - true_count
        out |= _top(pd.Series([true_count, false_count], index=["True", "False"]))
    elif kind in "iuf":
        with np.errstate(all="ignore"):  # inf and overflow become None, not warnings
            out |= {stat: _number(x) for stat, x in _moments(s).items()}
        out |= _distribution(s, len(s) - out["nulls"], out["min"], out["max"])
    elif kind in "mM":
        out |= {stat: _iso(getattr(s, stat)()) for stat in ("min", "max")}
    return out


def _moments(s: pd.Series) -> dict[str, Any]:
    """``min``, ``max``, ``mean`` and ``std`` (ddof 1) of a numeric column's non-missing values, in one
    pass over chunks of ``_CHUNK`` values (no copy of the column; chunks combined as Chan et al. do)."""
    import numpy as np

    plain = isinstance(s.dtype, np.dtype)
    values = s.to_numpy() if plain else None  # a view
    lo = hi = None
    n, mean, m2 = 0, 0.0, 0.0
    for i in range(0, len(s), _CHUNK):
        if values is not None:
            part = values[i : i + _CHUNK]
        else:  # nullable and Arrow-backed numbers: a chunk at a time, extremes in their own type
            chunk = s.iloc[i : i + _CHUNK]
            part = chunk.to_numpy(dtype=np.float64, na_value=np.nan)
        if part.dtype.kind == "f" and np.isnan(part.min()):
            part = part[~np.isnan(part)]
        if not part.size:
            continue
        low, high = (part.min(), part.max()) if values is not None else (chunk.min(), chunk.max())
        lo = low if lo is None or low < lo else lo
        hi = high if hi is None or high > hi else hi
        k = part.size
        k_mean = float(part.sum(dtype=np.float64)) / k
        k_m2 = float(np.square(part - k_mean, dtype=np.float64).sum())
        total = n + k
        delta = k_mean - mean
        mean += delta * k / total
        m2 += k_m2 + delta * delta * n * k / total
        n = total
    if not n:
        return {"min": None, "max": None, "mean": None, "std": None}
    return {"min": lo, "max": hi, "mean": mean, "std": math.sqrt(m2 / (n - 1)) if n > 1 and m2 >= 0 else None}


def text_counts(s: pd.Series) -> tuple[pd.Series, int] | None:
    """Counts of the non-missing values of ``s`` by their text, as a Series indexed by text.

    Also returns the number of distinct values before they became text. None when the values
    cannot be counted (unhashable ones such as lists). A value's text is ``str(value)`` cut at
    200 characters, as in :func:`profile`; values with the same text are counted together.
    """
    import numpy as np
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        codes, uniques = s.cat.codes.to_numpy(), s.cat.categories
    else:
        try:
            codes, uniques = pd.factorize(s, use_na_sentinel=True)
        except (TypeError, ValueError, NotImplementedError):  # unhashable values such as lists
            return None
    n = np.bincount(codes[codes >= 0], minlength=len(uniques))
    seen = n > 0
    if not seen.all():  # unused categories
        n, uniques = n[seen], uniques[seen]
    text = uniques.astype(str)
    unique = uniques.inferred_type == "string"  # distinct strings stay distinct as text...
    if len(text) and text.str.len().max() > _MAX_TEXT:
        text, unique = text.str.slice(0, _MAX_TEXT), False  # ...unless cut
    counts = pd.Series(n, index=text, copy=False)
    if not unique and not text.is_unique:
        counts = counts.groupby(level=0, sort=False).sum()
    return counts, len(uniques)


def _top(counts: pd.Series | None) -> dict[str, Any]:
    """The ``top`` and ``other`` entries of a profile from counts by text."""
    import numpy as np

    if counts is None:
        return {"top": None, "other": None}
    n = counts.to_numpy()
    keep = np.flatnonzero(n > 0)
    if keep.size > _TOP_VALUES:  # the most frequent; at the cutoff, the first seen
        cutoff = np.partition(n, n.size - _TOP_VALUES)[n.size - _TOP_VALUES]
        above = np.flatnonzero(n > cutoff)
        keep = np.concatenate([above, np.flatnonzero(n == cutoff)[: _TOP_VALUES - above.size]])
    keep = keep[np.lexsort((keep, -n[keep]))]
    top = dict(zip(counts.index[keep].tolist(), n[keep].tolist()))
    return {"top": top, "other": int(n.sum()) - sum(top.values())}


def _distribution(s: pd.Series, present: int, lo: Any, hi: Any) -> dict[str, list[float] | None]:
    """The ``quantiles``, ``cdf`` and ``cdf_left`` entries of a numeric column's profile.

    ``present`` is the count of non-missing values; ``lo`` and ``hi`` are the column's minimum
    and maximum when they are known to be finite (else None, and they are computed here).
    """
    import numpy as np

    none: dict[str, list[float] | None] = {"quantiles": None, "cdf": None, "cdf_left": None}
    if not present:
        return none
    if isinstance(s.dtype, np.dtype):
        values = s.to_numpy()  # a view
    else:  # nullable and Arrow-backed numbers
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    if present > _QUANTILE_SAMPLE:  # sample without copying the column; drop NaN and inf after
        rng = np.random.default_rng(0)  # the same data gives the same profile
        size = min(values.size, -(-_QUANTILE_SAMPLE * values.size // present))
        sample = values[rng.integers(0, values.size, size)]
    else:
        sample = np.array(values, copy=True)  # partitioned in place below
    if sample.dtype.kind == "f":
        finite = np.isfinite(sample)
        if not finite.all():
            sample = sample[finite]
    if sample.size == 0:
        return none
    if lo is None or hi is None:  # infinite values: the extremes of the finite ones
        finite = np.isfinite(values)
        lo = np.min(values, where=finite, initial=np.inf)
        hi = np.max(values, where=finite, initial=-np.inf)
    levels = np.arange(101) / 100
    q = np.quantile(sample, levels, method="inverted_cdf", overwrite_input=True)
    q = q.astype(np.float64)
    q[0], q[-1] = lo, hi
    # shares of the values at most (cdf) and below (cdf_left) each distinct quantile
    distinct = np.unique(q)
    slot = np.searchsorted(distinct, sample)  # values in (distinct[i - 1], distinct[i]]
    at_most = np.cumsum(np.bincount(slot, minlength=len(distinct)))
    equal = np.bincount(slot, weights=sample == distinct[slot], minlength=len(distinct))
    where = np.searchsorted(distinct, q)
    return {
        "quantiles": q.tolist(),
        "cdf": np.round(at_most[where] / sample.size, 7).tolist(),
        "cdf_left": np.round((at_most - equal)[where] / sample.size, 7).tolist(),
    }


def _number(x: Any) -> int | float | None:
    import numbers

    import pandas as pd

    if pd.isna(x):
        return None
    if isinstance(x, numbers.Integral):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def _iso(x: Any) -> str | None:
    import pandas as pd

    return None if pd.isna(x) else x.isoformat()


def _mlflow_type(dtype: Any, values: Any) -> str:
    """MLflow's name for a pandas dtype (``values`` is read only for object dtype)."""
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return _mlflow_type(dtype.categories.dtype, dtype.categories)
    kind, size = getattr(dtype, "kind", "O"), getattr(dtype, "itemsize", 8)
    if kind == "b":
        return "boolean"
    if kind in "iu":
        if size < 4 or (kind == "i" and size == 4):
            return "integer"
        # MLflow has no unsigned 64-bit type: double holds every value, if not exactly
        return "long" if size < 8 or kind == "i" else "double"
    if kind == "f":
        return "float" if size <= 4 else "double"
    if kind == "M":
        return "datetime"
    if hasattr(dtype, "pyarrow_dtype"):
        import pyarrow as pa

        binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)
        if any(is_binary(dtype.pyarrow_dtype) for is_binary in binary):
            return "binary"
    if str(dtype) == "object":
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        return {
            "bytes": "binary",
            "boolean": "boolean",
            "integer": "long",
            "floating": "double",
            "mixed-integer-float": "double",
            "datetime": "datetime",
            "datetime64": "datetime",
        }.get(inferred, "string")
    return "string"
