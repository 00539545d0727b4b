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


def profile(obj: object) -> dict[str, Any]:
    """Summarise a DataFrame, Series or ndarray as a JSON-serialisable dict.

    The result has ``kind``, ``shape``, ``num_rows``, ``num_elements`` and ``columns``, one
    entry per column with ``name``, ``dtype`` and ``nulls``, plus: ``min``, ``max``, ``mean``
    and ``std`` for numbers; ``true_count`` for booleans; ``min`` and ``max`` as ISO 8601 text
    for datetimes and timedeltas; ``distinct`` for strings, objects and categoricals (``None``
    above a million rows). A 1-D array, an array of more than two dimensions and a 2-D array
    of more than 1000 columns are one column named ``values``; a structured array has a column
    per field. Missing, NaN and infinite statistics are ``None``.

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
            spec = {"type": _mlflow_type(s.dtype, s)}
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
        out["distinct"] = _distinct(s)
    elif kind == "b":
        out["true_count"] = int(s.sum())
    elif kind in "iuf":
        with np.errstate(all="ignore"):  # inf and overflow become None, not warnings
            out |= {stat: _number(getattr(s, stat)()) for stat in ("min", "max", "mean", "std")}
    elif kind in "mM":
        out |= {stat: _iso(getattr(s, stat)()) for stat in ("min", "max")}
    return out


def _distinct(s: pd.Series) -> int | None:
    if len(s) > _MAX_DISTINCT_ROWS:
        return None
    try:
        return int(s.nunique(dropna=True))
    except (TypeError, ValueError, NotImplementedError):  # unhashable values such as lists
        return None


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
