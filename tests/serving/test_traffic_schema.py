"""The traffic dataset's schema, typed column by column for speed, is the one MLflow's own inference gives."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from nbmlops.backend.traffic import _schema

N = 40
COLUMNS = {
    "s": [f"id{i}" for i in range(N)],
    "s_obj": pd.Series([f"id{i}" for i in range(N)], dtype=object),
    "none": np.array([None] * N, dtype=object),
    "err": np.array([None] * 5 + ["boom"] + [None] * (N - 6), dtype=object),
    "err2": np.array(["boom"] + [None] * (N - 1), dtype=object),
    "i": np.arange(N),
    "i32": np.arange(N, dtype="int32"),
    "f": np.arange(N) * 1.5,
    "fnan": [1.0] * (N - 1) + [np.nan],
    "f32": np.arange(N, dtype="float32"),
    "I": pd.array([1] * (N - 1) + [None], dtype="Int64"),
    "I2": pd.array([1] * N, dtype="Int64"),
    "b": [True] * N,
    "t": pd.to_datetime(np.arange(N), unit="s", utc=True),
    "tn": pd.to_datetime([0.0] * (N - 1) + [None], unit="s", utc=True),
    "tnaive": pd.to_datetime(np.arange(N), unit="s"),
    "mixobj": np.array([1, "a"] * (N // 2), dtype=object),
    "intobj": np.array([1, 2] * (N // 2), dtype=object),
    "listobj": pd.Series([[1, 2]] * N),
    "dictobj": pd.Series([{"a": 1}] * N),
    "strnan": pd.Series(["a"] * (N - 1) + [None], dtype="str"),
    "fl64": pd.array([1.0] * (N - 1) + [None], dtype="Float64"),
    "u8": np.arange(N, dtype="uint8"),
}


def _mlflows(frame: pd.DataFrame) -> str | None:
    from mlflow.types.utils import _infer_schema

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return json.dumps({"mlflow_colspec": _infer_schema(frame).to_dict()})
    except Exception:
        return None


@pytest.mark.parametrize("column", sorted(COLUMNS))
def test_each_kind_of_column_gets_mlflows_schema(column):
    frame = pd.DataFrame(COLUMNS)[[column]]
    assert _schema(frame) == _mlflows(frame)


def test_a_whole_frame_and_an_empty_one_get_mlflows_schema():
    frames = [pd.DataFrame(COLUMNS).drop(columns=["mixobj", "listobj", "dictobj"]),
              pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype="float64")})]
    for frame in frames:
        assert _schema(frame) == _mlflows(frame)
