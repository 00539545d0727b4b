"""profile() and mlflow_schema(): statistics, JSON safety, MLflow's own schema format."""

from __future__ import annotations

import json
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmlops.data import fingerprint, mlflow_schema, profile
from nbmlops.exceptions import UnsupportedDataError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": [1, 2, 3, 4],
            "f": [0.5, np.nan, 2.5, np.inf],
            "b": [True, False, True, True],
            "t": pd.to_datetime(["2024-01-02", None, "2024-01-01", "2024-03-01"]),
            "tz": pd.date_range("2024-01-01", periods=4, tz="Europe/Paris"),
            "s": ["a", "b", None, "a"],
            "o": pd.Series([1, "x", None, (1, 2)], dtype=object),
            "c": pd.Categorical(["u", "v", "u", None]),
            "I": pd.array([1, None, 5, 7], dtype="Int64"),
            "B": pd.array([True, None, False, True], dtype="boolean"),
            "a": pd.array([1.0, 2.0, None, 4.0], dtype=pd.ArrowDtype(pa.float32())),
            "d": pd.to_timedelta([1, 2, 3, None], unit="s"),
        }
    )


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["columns"]}


def test_profile_of_a_frame(frame: pd.DataFrame) -> None:
    result = profile(frame)
    assert {k: result[k] for k in ("kind", "shape", "num_rows", "num_elements")} == {
        "kind": "DataFrame",
        "shape": [4, 12],
        "num_rows": 4,
        "num_elements": 48,
    }
    cols = by_name(result)
    assert cols["i"] == {
        "name": "i",
        "dtype": "int64",
        "nulls": 0,
        "min": 1,
        "max": 4,
        "mean": 2.5,
        "std": pytest.approx(1.2909944),
        "quantiles": [1.0] * 26 + [2.0] * 25 + [3.0] * 25 + [4.0] * 25,
        "cdf": [0.25] * 26 + [0.5] * 25 + [0.75] * 25 + [1.0] * 25,
        "cdf_left": [0.0] * 26 + [0.25] * 25 + [0.5] * 25 + [0.75] * 25,
    }
    assert cols["f"]["nulls"] == 1 and cols["f"]["min"] == 0.5
    assert cols["f"]["max"] is None and cols["f"]["mean"] is None  # inf is not JSON
    assert cols["f"]["quantiles"] == [0.5] * 51 + [2.5] * 50  # finite values only
    assert cols["b"] == {
        "name": "b",
        "dtype": "bool",
        "nulls": 0,
        "true_count": 3,
        "top": {"True": 3, "False": 1},
        "other": 0,
    }
    assert cols["t"]["min"] == "2024-01-01T00:00:00" and cols["t"]["max"] == "2024-03-01T00:00:00"
    assert cols["t"]["nulls"] == 1
    assert cols["tz"]["min"] == "2024-01-01T00:00:00+01:00"
    assert cols["s"]["distinct"] == 2 and cols["s"]["nulls"] == 1
    assert cols["s"]["top"] == {"a": 2, "b": 1} and cols["s"]["other"] == 0
    assert cols["o"]["distinct"] == 3 and cols["o"]["top"] == {"(1, 2)": 1, "1": 1, "x": 1}
    assert cols["c"] == {
        "name": "c",
        "dtype": "category",
        "nulls": 1,
        "distinct": 2,
        "top": {"u": 2, "v": 1},
        "other": 0,
    }
    assert "quantiles" not in cols["t"] and "top" not in cols["t"]
    assert cols["I"]["min"] == 1 and cols["I"]["max"] == 7 and cols["I"]["nulls"] == 1
    assert isinstance(cols["I"]["min"], int)
    assert cols["I"]["quantiles"][::50] == [1.0, 5.0, 7.0]
    assert cols["B"]["true_count"] == 2 and cols["B"]["nulls"] == 1
    assert cols["B"]["top"] == {"True": 2, "False": 1}
    assert cols["a"]["mean"] == pytest.approx(7 / 3)
    assert cols["a"]["quantiles"][::50] == [1.0, 2.0, 4.0]
    assert cols["d"]["max"] == "P0DT0H0M3S"
    json.dumps(result, allow_nan=False)


def test_profile_of_series_and_arrays() -> None:
    s = profile(pd.Series([1.0, 2.0], name=("a", 1)))
    assert s["kind"] == "Series" and s["shape"] == [2] and s["num_elements"] == 2
    assert s["columns"][0]["name"] == "('a', 1)"
    assert profile(pd.Series([1]))["columns"][0]["name"] == "values"
    one = profile(np.arange(5))
    assert one["kind"] == "ndarray" and one["shape"] == [5]
    assert [c["name"] for c in one["columns"]] == ["values"] and one["columns"][0]["max"] == 4
    two = profile(np.arange(6.0).reshape(3, 2))
    assert [c["name"] for c in two["columns"]] == ["0", "1"]
    assert two["columns"][1]["min"] == 1.0 and two["num_rows"] == 3 and two["num_elements"] == 6
    wide = profile(np.zeros((2, 1001)))
    assert len(wide["columns"]) == 1 and wide["columns"][0]["name"] == "values"
    cube = profile(np.ones((2, 3, 4)))
    assert cube["columns"][0]["mean"] == 1.0 and cube["num_elements"] == 24
    fields = profile(np.array([(1, 2.5)], dtype=[("x", "i4"), ("y", "f8")]))
    assert [c["name"] for c in fields["columns"]] == ["x", "y"]
    strings = profile(np.array(["a", "b", "a"], dtype=object))
    assert strings["columns"][0]["distinct"] == 2
    json.dumps([s, one, two, wide, cube, fields, strings], allow_nan=False)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20))
def test_profile_is_always_strict_json(values: list[float]) -> None:
    df = pd.DataFrame(
        {"x": np.array(values, dtype=np.float32), "y": pd.array(values, dtype="Float64")}
    )
    json.dumps(profile(df), allow_nan=False)


def test_distinct_is_skipped_above_a_million_rows() -> None:
    n = 1_000_001
    df = pd.DataFrame(
        {
            "o": np.full(n, "x", dtype=object),
            "c": pd.Categorical.from_codes(np.zeros(n, int), ["x"]),
        }
    )
    assert [c["distinct"] for c in profile(df)["columns"]] == [None, None]
    assert profile(df.iloc[:1_000_000])["columns"][0]["distinct"] == 1
    objects, categories = profile(df)["columns"]
    assert objects["top"] is None and objects["other"] is None
    assert categories["top"] == {"x": n} and categories["other"] == 0  # counted from codes


def test_unhashable_values_have_no_distinct_count() -> None:
    result = profile(pd.DataFrame({"l": pd.Series([[1], [2]], dtype=object)}))
    assert result["columns"][0]["distinct"] is None
    assert result["columns"][0]["top"] is None


def test_quantiles_are_numpys_inverted_cdf_with_shares_at_and_below() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=5000), np.zeros(3000), [np.nan, np.inf, -np.inf]])
    col = profile(pd.Series(values))["columns"][0]
    finite = values[np.isfinite(values)]
    expected = np.quantile(finite, np.arange(101) / 100, method="inverted_cdf")
    assert col["quantiles"] == expected.tolist()
    q = np.array(col["quantiles"])
    at_most = [(finite <= x).mean() for x in q]
    below = [(finite < x).mean() for x in q]
    assert col["cdf"] == pytest.approx(at_most, abs=1e-7)
    assert col["cdf_left"] == pytest.approx(below, abs=1e-7)
    zero = q.tolist().index(0.0)
    assert col["cdf"][zero] - col["cdf_left"][zero] == pytest.approx(3000 / 8000)  # the step
    empty = profile(pd.Series([np.nan, np.inf]))["columns"][0]
    assert empty["quantiles"] is empty["cdf"] is empty["cdf_left"] is None
    assert profile(pd.Series([], dtype=float))["columns"][0]["quantiles"] is None


def test_quantiles_of_a_long_column_come_from_a_fixed_sample() -> None:
    rng = np.random.default_rng(1)
    values = rng.exponential(size=1_200_000)
    values[::10] = np.nan
    first = profile(pd.Series(values))["columns"][0]
    assert first == profile(pd.Series(values))["columns"][0]  # deterministic
    q = np.array(first["quantiles"])
    finite = np.sort(values[~np.isnan(values)])
    assert q[0] == finite[0] and q[-1] == finite[-1]  # exact extremes
    assert np.all(np.diff(q) >= 0)
    ranks = np.searchsorted(finite, q[1:-1], side="right") / finite.size
    assert np.abs(ranks - np.arange(1, 100) / 100).max() < 0.01
    assert np.abs(np.array(first["cdf"][1:-1]) - ranks).max() < 0.01


def test_top_keeps_the_hundred_most_frequent_values_as_text() -> None:
    values = [f"v{i:03d}" for i in range(150)]
    s = pd.Series(values * 2 + ["v149"] * 10 + [None])
    col = profile(s)["columns"][0]
    assert col["distinct"] == 150 and len(col["top"]) == 100
    assert list(col["top"].items())[:2] == [("v149", 12), ("v000", 2)]  # ties as first seen
    assert "v099" not in col["top"] and "v098" in col["top"]
    assert col["other"] == 2 * 50 and sum(col["top"].values()) + col["other"] == 310
    mixed = profile(pd.Series([1, "1", 1.0, "x" * 300, "x" * 301], dtype=object))["columns"][0]
    assert mixed["top"] == {"1": 3, "x" * 200: 2}  # same text, counted together
    assert mixed["distinct"] == 4


def test_profile_does_not_mutate_or_copy_the_frame(frame: pd.DataFrame) -> None:
    before, snapshot = fingerprint(frame), frame.copy()
    profile(frame)
    mlflow_schema(frame)
    assert fingerprint(frame) == before
    pd.testing.assert_frame_equal(frame, snapshot)
    big = pd.DataFrame({i: np.arange(400_000, dtype=np.float64) for i in range(10)})  # 32 MB
    tracemalloc.start()
    profile(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12_000_000


def test_unsupported_objects() -> None:
    for obj in (b"bytes", "a/path", 3, [1, 2]):
        with pytest.raises(UnsupportedDataError):
            profile(obj)
        assert mlflow_schema(obj) is None


# --- mlflow_schema ---


def mlflow_own_schema(df: pd.DataFrame) -> str:
    import mlflow.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.data.from_pandas(df).to_dict()["schema"]


def test_colspec_matches_mlflow_and_parses_back(frame: pd.DataFrame) -> None:
    from mlflow.types import Schema

    df = frame.drop(columns=["d", "o"]).assign(  # MLflow infers nothing for mixed objects
        i8=np.arange(4, dtype=np.int8),
        i32=np.arange(4, dtype=np.int32),
        u32=np.arange(4, dtype=np.uint32),
        f32=np.ones(4, np.float32),
        by=pd.Series([b"a", b"b", b"c", b"d"], dtype=object),
        ab=pd.array([b"x", None, b"y", b"z"], dtype=pd.ArrowDtype(pa.binary())),
        sp=pd.array(["a", "b", "c", None], dtype="string[python]"),
    )
    ours = mlflow_schema(df)
    assert ours == mlflow_own_schema(df)
    schema = Schema.from_json(json.dumps(json.loads(ours)["mlflow_colspec"]))
    types = {spec.name: spec.type.name for spec in schema.inputs}
    assert types["i8"] == "integer" and types["i"] == "long" and types["f32"] == "float"
    assert types["by"] == types["ab"] == "binary" and types["tz"] == "datetime"
    required = {spec.name: spec.required for spec in schema.inputs}
    assert required["i"] and not required["f"] and not required["s"]


def test_colspec_for_series_and_types_mlflow_lacks() -> None:
    from mlflow.types import Schema

    series = mlflow_schema(pd.Series([1.5, 2.5], name="x"))
    assert json.loads(series) == {
        "mlflow_colspec": [{"type": "double", "name": "x", "required": True}]
    }
    assert "name" not in json.loads(mlflow_schema(pd.Series([1])))["mlflow_colspec"][0]
    odd = pd.DataFrame(
        {
            ("t", 1): pd.to_timedelta([1], unit="s"),
            2: np.array([1 + 2j]),
            "u64": np.array([1], dtype=np.uint64),
            "iv": pd.arrays.IntervalArray.from_breaks([0, 1]),
        }
    )
    specs = json.loads(mlflow_schema(odd))["mlflow_colspec"]
    assert [s["type"] for s in specs] == ["string", "string", "double", "string"]
    assert [s["name"] for s in specs] == ["('t', 1)", "2", "u64", "iv"]
    Schema.from_json(json.dumps(specs))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((5, 3, 2), dtype=np.float32),
        np.arange(4),
        np.array(["a", "bc"]),
        np.array([b"x"]),
        np.array([1, "a"], dtype=object),
    ],
)
def test_tensorspec_matches_mlflow_and_parses_back(array: np.ndarray) -> None:
    import mlflow.data
    from mlflow.data.schema import TensorDatasetSchema

    ours = mlflow_schema(array)
    assert ours == json.dumps(mlflow.data.from_numpy(array).schema.to_dict())
    parsed = TensorDatasetSchema.from_dict(json.loads(ours))
    assert parsed.features.inputs[0].shape == (-1, *array.shape[1:])
    assert parsed.targets is None
