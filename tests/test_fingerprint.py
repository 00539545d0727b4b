"""fingerprint(): full content, layout independence, determinism across processes, files."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbmlops.data import fingerprint
from nbmlops.exceptions import UnsupportedDataError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[1]

# --- frames described by raw columns: (kind, values, mask); a mask marks missing values ---

Raw = tuple[str, np.ndarray, np.ndarray]


def _strings(values: np.ndarray, mask: np.ndarray, missing: object) -> list[object]:
    return [missing if m else f"s{v}é" for v, m in zip(values, mask, strict=True)]


def _objects(items: list[object]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items  # element by element, even when the items are tuples or lists
    return out


def _mixed(v: int) -> object:
    return [v, v + 0.5, f"m{v}", (v, "t"), b"b%d" % v, {"k": v}][v % 6]


BUILD: dict[str, Callable[[np.ndarray, np.ndarray], object]] = {
    "int64": lambda v, m: v,
    "int8": lambda v, m: (v % 100).astype(np.int8),
    "uint16": lambda v, m: (v % 1000).astype(np.uint16),
    "float32": lambda v, m: np.where(m, np.nan, v / 7).astype(np.float32),
    "float64": lambda v, m: np.where(m, np.nan, v / 3),
    "bool": lambda v, m: v % 2 == 0,
    "datetime64[ns]": lambda v, m: np.where(m, np.datetime64("NaT"), v.astype("M8[ns]")),
    "datetime64[s, tz]": lambda v, m: (
        pd.DatetimeIndex(np.where(m, np.datetime64("NaT"), v.astype("M8[s]")))
        .tz_localize("UTC")
        .tz_convert("Asia/Tokyo")
    ),
    "timedelta64[ms]": lambda v, m: v.astype("m8[ms]"),
    "period[D]": lambda v, m: pd.PeriodIndex.from_ordinals(v % 50_000, freq="D"),
    "category": lambda v, m: pd.Categorical.from_codes(np.where(m, -1, v % 3), ["a", "b", "c"]),
    "object str": lambda v, m: _objects(_strings(v, m, None)),
    "object mixed": lambda v, m: _objects([None if x else _mixed(y) for y, x in zip(v, m)]),
    "str": lambda v, m: pd.array(_strings(v, m, None), dtype="str"),
    "string[python]": lambda v, m: pd.array(_strings(v, m, None), dtype="string[python]"),
    "large_string[pyarrow]": lambda v, m: pd.array(
        _strings(v, m, None), dtype=pd.ArrowDtype(pa.large_string())
    ),
    "int64[pyarrow]": lambda v, m: pd.arrays.ArrowExtensionArray(pa.array(v, mask=m)),
    "Int64": lambda v, m: pd.arrays.IntegerArray(v.copy(), m.copy()),
    "Float64": lambda v, m: pd.arrays.FloatingArray(v / 4, m.copy()),
    "boolean": lambda v, m: pd.arrays.BooleanArray(v % 2 == 0, m.copy()),
}
IGNORE_MASK = {"int64", "int8", "uint16", "bool", "timedelta64[ms]", "period[D]"}


def build(raws: list[Raw], names: list[object] | None = None) -> pd.DataFrame:
    df = pd.DataFrame({i: BUILD[kind](v, m) for i, (kind, v, m) in enumerate(raws)})
    if names is not None:
        df.columns = names
    return df


def mutated(raws: list[Raw], col: int, row: int) -> list[Raw]:
    """The same columns with one value changed (or one missing value made present)."""
    kind, v, m = raws[col]
    v, m = v.copy(), m.copy()
    if m[row] and kind not in IGNORE_MASK:
        m[row] = False
    else:
        v[row] += 1
    return [*raws[:col], (kind, v, m), *raws[col + 1 :]]


@st.composite
def frames(draw: st.DrawFn, min_rows: int = 0, max_rows: int = 30) -> list[Raw]:
    n = draw(st.integers(min_rows, max_rows))
    kinds = draw(st.lists(st.sampled_from(sorted(BUILD)), min_size=1, max_size=6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [(k, rng.integers(0, 10**6, n), rng.random(n) < 0.2) for k in kinds]


labels = st.one_of(st.text(max_size=5), st.integers(-3, 3), st.none(), st.floats(allow_nan=False))


# --- equal content, equal digest ---


@SETTINGS
@given(frames())
def test_frames_built_twice_or_copied_have_equal_digests(raws: list[Raw]) -> None:
    df = build(raws)
    digest = fingerprint(df)
    assert len(digest) == 32 and int(digest, 16) >= 0 and digest == digest.lower()
    assert fingerprint(build(raws)) == digest
    assert fingerprint(df.copy()) == digest
    unconsolidated = pd.concat([df.iloc[:, [i]] for i in range(df.shape[1])], axis=1)
    assert fingerprint(unconsolidated) == digest


@SETTINGS
@given(st.integers(0, 50), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_c_and_fortran_ordered_frames_have_equal_digests(rows: int, cols: int, seed: int) -> None:
    a = np.random.default_rng(seed).standard_normal((rows, cols))
    digests = {
        fingerprint(pd.DataFrame(np.ascontiguousarray(a), copy=False)),
        fingerprint(pd.DataFrame(np.asfortranarray(a), copy=False)),
        fingerprint(pd.DataFrame({i: a[:, i].copy() for i in range(cols)})),
    }
    assert len(digests) == 1
    assert fingerprint(np.ascontiguousarray(a)) == fingerprint(np.asfortranarray(a))


@SETTINGS
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=8)), max_size=40),
    st.lists(st.integers(0, 40), max_size=4),
    st.integers(0, 5),
    st.sampled_from([pa.large_string(), pa.string(), pa.binary()]),
)
def test_arrow_chunking_and_offsets_do_not_change_the_digest(
    values: list[str | None], cuts: list[int], pad: int, type_: pa.DataType
) -> None:
    items = [None if v is None else (v.encode() if type_ == pa.binary() else v) for v in values]
    whole = pa.array(items, type=type_)
    bounds = sorted({0, len(items), *(c for c in cuts if c <= len(items))})
    chunked = pa.chunked_array([whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)], type_)
    offset = pa.array([items[0] if items else None] * pad + items, type=type_).slice(pad)

    def digest(arr: pa.Array | pa.ChunkedArray) -> str:
        return fingerprint(pd.Series(pd.arrays.ArrowExtensionArray(arr), name="s"))

    assert digest(whole) == digest(chunked) == digest(offset)


def test_large_rechunked_arrow_and_sliced_masked_columns_keep_null_positions() -> None:
    n = 300_000
    rng = np.random.default_rng(7)
    mask = rng.random(n) < 0.1
    ints = pa.array(rng.integers(0, 100, n), mask=mask)
    strs = pa.array(np.where(mask, None, np.char.mod("v%d", rng.integers(0, 100, n))).tolist())
    for arr in (ints, strs):
        pieces = pa.chunked_array([arr.slice(0, 123_457), arr.slice(123_457)])
        assert fingerprint(pd.Series(pd.arrays.ArrowExtensionArray(arr))) == fingerprint(
            pd.Series(pd.arrays.ArrowExtensionArray(pieces))
        )
    values = pd.arrays.IntegerArray(rng.integers(0, 9, n + 5), rng.random(n + 5) < 0.1)
    fresh = pd.arrays.IntegerArray(values._data[5:].copy(), values._mask[5:].copy())
    assert fingerprint(pd.Series(values[5:])) == fingerprint(pd.Series(fresh))


def test_multichunk_object_strings_mixing_fast_and_null_chunks() -> None:
    n = 200_000  # several chunks: some all-str, some with missing values of different kinds
    values = np.array([f"row {i} ü" for i in range(n)], dtype=object)
    values[150_000], values[150_001] = None, np.nan
    copy = np.array([v if not isinstance(v, str) else (v + ".")[:-1] for v in values], object)

    def digest(a: np.ndarray) -> str:
        return fingerprint(pd.Series(a, dtype=object))

    assert digest(values) == digest(copy)
    changed = values.copy()
    changed[150_001] = None
    assert digest(changed) != digest(values)
    changed = values.copy()
    changed[n - 1] = "row 199999 u"
    assert digest(changed) != digest(values)


# --- any change changes the digest ---


@SETTINGS
@given(frames(min_rows=1), st.data())
def test_any_single_value_change_changes_the_digest(raws: list[Raw], data: st.DataObject) -> None:
    col = data.draw(st.integers(0, len(raws) - 1))
    row = data.draw(st.integers(0, len(raws[0][1]) - 1))
    assert fingerprint(build(mutated(raws, col, row))) != fingerprint(build(raws))


@pytest.fixture(scope="module")
def big() -> tuple[pd.DataFrame, str]:
    n = 20_000
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "f": rng.standard_normal(n),
            "i": rng.integers(0, 10**9, n),
            "s": pd.array([f"x{i}" for i in range(n)], dtype="str"),
            "o": pd.Series([f"o{i}" for i in range(n)], dtype=object),
            "t": pd.date_range("2000-01-01", periods=n, freq="min", tz="UTC"),
        }
    )
    return df, fingerprint(df)


@SETTINGS
@given(st.integers(10_000, 19_999), st.integers(0, 4))
def test_changes_beyond_row_10000_change_the_digest(
    big: tuple[pd.DataFrame, str], row: int, col: int
) -> None:
    df, digest = big
    changed = df.copy()
    old = changed.iloc[row, col]
    changed.iloc[row, col] = old + (1 if col < 2 else "!" if col < 4 else pd.Timedelta("1s"))
    assert fingerprint(changed) != digest
    assert fingerprint(df) == digest


def test_mlflow_digest_misses_row_10001_but_fingerprint_does_not() -> None:
    import mlflow.data

    n = 10_050
    a = pd.DataFrame({"x": np.arange(n, dtype=np.float64), "s": [f"v{i}" for i in range(n)]})
    b = a.copy()
    b.loc[10_000, "x"] = -1.0  # the 10,001st row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own use of pandas APIs
        assert mlflow.data.from_pandas(a).digest == mlflow.data.from_pandas(b).digest
    assert fingerprint(a) != fingerprint(b)


@SETTINGS
@given(frames(min_rows=1), st.data())
def test_column_rename_reorder_and_index_change_change_the_digest(
    raws: list[Raw], data: st.DataObject
) -> None:
    names = data.draw(st.lists(labels, min_size=len(raws), max_size=len(raws), unique=True))
    df = build(raws, names)
    digest = fingerprint(df)
    col = data.draw(st.integers(0, len(raws) - 1))
    renamed = df.copy()
    renamed.columns = [*names[:col], ("renamed", names[col]), *names[col + 1 :]]
    assert fingerprint(renamed) != digest
    if len(names) > 1:
        assert fingerprint(df.iloc[:, ::-1]) != digest
    shifted = df.copy()
    shifted.index = shifted.index + 1
    assert fingerprint(shifted) != digest
    assert fingerprint(df.rename_axis("id")) != digest


def test_dtype_and_structure_changes_change_the_digest() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    digest = fingerprint(df)
    assert fingerprint(df.astype({"a": "int32"})) != digest
    assert fingerprint(df.astype({"a": "float64"})) != digest
    assert fingerprint(df.astype({"a": "Int64"})) != digest
    assert fingerprint(df.astype({"a": object})) != digest
    assert fingerprint(df.set_axis(["a", "c"], axis=1)) != digest
    assert fingerprint(df.rename_axis(columns="cols")) != digest
    assert fingerprint(df.iloc[:2]) != digest
    assert fingerprint(df[["a"]]) != fingerprint(df["a"]) != fingerprint(df["a"].to_numpy())
    assert fingerprint(df["a"].rename("z")) != fingerprint(df["a"])
    assert fingerprint(pd.Index([1, 2, 3])) != fingerprint(pd.Index([1, 2, 3], name="n"))
    strings = pd.Series(["a", "b"])
    assert fingerprint(strings.astype("string[python]")) != fingerprint(strings.astype("string"))
    assert fingerprint(strings.astype("str")) != fingerprint(strings.astype("string"))
    cat = pd.Series(pd.Categorical(["a", "b"]))
    assert fingerprint(cat) != fingerprint(cat.cat.as_ordered())
    assert fingerprint(cat) != fingerprint(cat.cat.add_categories(["z"]))


def test_non_string_and_duplicate_column_names() -> None:
    values = {0: [1, 2], 1: [1, 2]}
    assert fingerprint(pd.DataFrame(values).set_axis([1, "1"], axis=1)) != fingerprint(
        pd.DataFrame(values).set_axis(["1", "1"], axis=1)
    )
    dup = pd.DataFrame(values).set_axis(["x", "x"], axis=1)
    assert fingerprint(dup) == fingerprint(dup.copy())
    assert fingerprint(dup) != fingerprint(pd.DataFrame(values).set_axis(["x", "y"], axis=1))
    assert fingerprint(pd.DataFrame(values).set_axis([True, 1], axis=1)) != fingerprint(
        pd.DataFrame(values).set_axis([1, 1], axis=1)
    )
    multi = pd.DataFrame(values).set_axis(pd.MultiIndex.from_tuples([("a", 1), ("a", 2)]), axis=1)
    assert fingerprint(multi) == fingerprint(multi.copy())


# --- missing values, hidden bytes, special floats ---


def test_values_under_a_nullable_mask_do_not_matter_but_the_mask_does() -> None:
    mask = np.array([False, True, False])
    for cls, a, b in [
        (pd.arrays.IntegerArray, np.array([1, 99, 3]), np.array([1, -7, 3])),
        (pd.arrays.FloatingArray, np.array([1.0, 9.5, 3.0]), np.array([1.0, np.nan, 3.0])),
        (pd.arrays.BooleanArray, np.array([True, True, False]), np.array([True, False, False])),
    ]:
        assert fingerprint(pd.Series(cls(a, mask.copy()))) == fingerprint(
            pd.Series(cls(b, mask.copy()))
        )
        assert fingerprint(pd.Series(cls(a, mask.copy()))) != fingerprint(
            pd.Series(cls(a, np.zeros(3, bool)))
        )


def test_bytes_behind_arrow_nulls_do_not_matter() -> None:
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())

    def ints(hidden: int) -> pa.Array:
        data = pa.py_buffer(np.array([1, hidden, 3], dtype=np.int64).tobytes())
        return pa.Array.from_buffers(pa.int64(), 3, [validity, data], null_count=1)

    def strs(hidden: bytes) -> pa.Array:
        offsets = pa.py_buffer(
            np.array([0, 1, 1 + len(hidden), 2 + len(hidden)], np.int32).tobytes()
        )
        data = pa.py_buffer(b"a" + hidden + b"c")
        return pa.Array.from_buffers(pa.string(), 3, [validity, offsets, data], null_count=1)

    def digest(arr: pa.Array) -> str:
        return fingerprint(pd.Series(pd.arrays.ArrowExtensionArray(arr)))

    assert digest(ints(0)) == digest(ints(12345))
    assert digest(strs(b"")) == digest(strs(b"hidden"))
    assert digest(strs(b"")) != digest(pa.array(["a", "", "c"]))


def test_missing_markers_in_object_columns_are_told_apart() -> None:
    markers = [None, np.nan, pd.NA, pd.NaT]
    for column in (["a", "b"], [1, 2]):
        digests = {fingerprint(pd.Series([*column, m], dtype=object)) for m in markers}
        assert len(digests) == len(markers)


def test_nan_payloads_hash_alike_and_signed_zeros_differ() -> None:
    quiet = np.array([1.0, np.nan])
    negative = quiet.copy()
    negative.view(np.uint64)[1] = 0xFFF8000000000001  # another NaN: sign and payload bits set
    assert np.isnan(negative[1])
    assert fingerprint(quiet) == fingerprint(negative)
    assert fingerprint(quiet.astype(np.float32)) == fingerprint(negative.astype(np.float32))
    assert fingerprint(pd.DataFrame({"x": quiet})) == fingerprint(pd.DataFrame({"x": negative}))
    assert fingerprint(np.array([0.0])) != fingerprint(np.array([-0.0]))  # documented choice


def test_timezone_alone_changes_the_digest() -> None:
    instants = pd.date_range("2024-03-30", periods=48, freq="h", tz="UTC")
    utc = pd.DataFrame({"t": instants})
    paris = pd.DataFrame({"t": instants.tz_convert("Europe/Paris")})
    assert (utc["t"] == paris["t"]).all()
    assert fingerprint(utc) != fingerprint(paris)
    assert fingerprint(utc) != fingerprint(pd.DataFrame({"t": instants.tz_localize(None)}))
    assert fingerprint(pd.DataFrame({"t": instants.as_unit("ns")})) != fingerprint(utc)


# --- numpy layouts and other objects ---


def test_ndarray_layouts_byte_order_and_structured_padding() -> None:
    a = np.arange(60, dtype=np.int64).reshape(3, 4, 5)
    assert fingerprint(a) == fingerprint(np.asfortranarray(a))
    assert fingerprint(a[:, ::2]) == fingerprint(a[:, ::2].copy())
    assert fingerprint(a) == fingerprint(a.astype(">i8"))
    assert fingerprint(a) != fingerprint(a.reshape(4, 3, 5))
    big_endian = pd.DataFrame({"x": np.arange(5, dtype=">f8")})
    assert fingerprint(big_endian) == fingerprint(pd.DataFrame({"x": np.arange(5.0)}))
    padded = np.dtype([("a", "u1"), ("b", "<i4")], align=True)
    x, y = np.zeros(4, padded), np.zeros(4, padded)
    y.view(np.uint8).reshape(4, -1)[:, 1:4] = 0xAB  # garbage in the padding only
    assert fingerprint(x) == fingerprint(y)
    y["b"][2] = 1
    assert fingerprint(x) != fingerprint(y)
    big = np.arange(3_000_000, dtype=np.float64)[::3]  # strided, more than one chunk
    assert fingerprint(big) == fingerprint(big.copy())
    assert fingerprint(np.array(["ab", "c"])) != fingerprint(np.array(["a", "bc"]))
    objects = np.array([[1, "a"], [None, (2, 3)]], dtype=object)
    assert fingerprint(objects) == fingerprint(objects.T.copy().T)


def test_indexes_range_and_multiindex() -> None:
    assert fingerprint(pd.RangeIndex(5)) == fingerprint(pd.Index(np.arange(5)))
    assert fingerprint(pd.RangeIndex(3, 30, 3)) == fingerprint(pd.Index(np.arange(3, 30, 3)))
    assert fingerprint(pd.RangeIndex(5)) != fingerprint(pd.RangeIndex(6))
    mi = pd.MultiIndex.from_product([["a", "b", "c"], [1, 2]], names=["k", "n"])
    part = mi[:3]  # keeps the unused level value "c"
    assert fingerprint(part) == fingerprint(part.remove_unused_levels())
    assert fingerprint(part) == fingerprint(pd.MultiIndex.from_tuples(list(part), names=["k", "n"]))
    assert fingerprint(part) != fingerprint(part.set_names(["k", "m"]))
    s = pd.Series([1.0, 2.0, 3.0], index=part)
    assert fingerprint(s) == fingerprint(s.copy())
    assert fingerprint(s) != fingerprint(s.reset_index(drop=True))


def test_interval_period_sparse_and_nested_arrow_columns() -> None:
    df = pd.DataFrame(
        {
            "iv": pd.arrays.IntervalArray.from_breaks([0, 1, 2, 4]),
            "p": pd.period_range("2020-01", periods=3, freq="M"),
            "sp": pd.arrays.SparseArray([0.0, 0.0, 1.5]),
            "l": pd.array([[1], None, [2, 3]], dtype=pd.ArrowDtype(pa.list_(pa.int64()))),
            "d": pd.array(
                ["x", "y", "x"], dtype=pd.ArrowDtype(pa.dictionary(pa.int8(), pa.string()))
            ),
        }
    )
    digest = fingerprint(df)
    assert fingerprint(df.copy()) == digest
    for col, values in [
        ("iv", pd.arrays.IntervalArray.from_breaks([0, 1, 2, 5])),
        ("p", pd.period_range("2020-02", periods=3, freq="M")),
        ("sp", pd.arrays.SparseArray([0.0, 0.5, 1.5])),
        ("l", pd.array([[1], [], [2, 3]], dtype=pd.ArrowDtype(pa.list_(pa.int64())))),
        ("d", pd.array(["x", "y", "y"], dtype=df["d"].dtype)),
    ]:
        assert fingerprint(df.assign(**{col: values})) != digest
        assert fingerprint(df.assign(**{col: df[col].copy()})) == digest


def test_unsupported_objects_raise() -> None:
    class Opaque:
        pass

    for obj in (object(), 123, 1.5, [1, 2], {"a": 1}, None, Opaque()):
        with pytest.raises(UnsupportedDataError) as info:
            fingerprint(obj)
        assert isinstance(info.value, TypeError)

    class Addressed:
        def __repr__(self) -> str:
            return f"<Addressed at 0x{id(self):x}>"

    for cell in (Opaque(), Addressed()):
        with pytest.raises(UnsupportedDataError):
            fingerprint(pd.Series(["ok", cell], dtype=object))
    with pytest.raises(UnsupportedDataError):
        fingerprint(np.ma.masked_array([1, 2], mask=[0, 1]))
    with pytest.raises(FileNotFoundError):
        fingerprint("/nonexistent/nbmlops/path")


def test_object_cells_are_canonical() -> None:
    a = pd.Series([{"x": 1, "y": [1, 2]}, {3, 1, 2}, np.arange(3), 2**100, b"b"], dtype=object)
    b = pd.Series([{"y": [1, 2], "x": 1}, {2, 3, 1}, np.arange(3), 2**100, b"b"], dtype=object)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(pd.Series([1], dtype=object)) != fingerprint(pd.Series([True], dtype=object))
    assert fingerprint(pd.Series(["1"], dtype=object)) != fingerprint(
        pd.Series([b"1"], dtype=object)
    )
    same = np.array(["abc"] * 5, dtype=object)  # one object five times, or five objects
    distinct = np.array([("abc" + str(i))[:3] for i in range(5)], dtype=object)
    assert fingerprint(same) == fingerprint(distinct)
    subclass = np.array([np.str_("abc"), np.str_("d")], dtype=object)
    assert fingerprint(subclass) == fingerprint(subclass.copy())
    assert fingerprint(np.array([np.bytes_(b"x")], dtype=object)) == fingerprint(
        np.array([np.bytes_(b"x")], dtype=object)
    )
    surrogate = pd.Series(["ok", "bad \udc80"], dtype=object)
    assert fingerprint(surrogate) == fingerprint(surrogate.copy())


# --- determinism and cost ---

SCRIPT = textwrap.dedent(
    """
    import numpy as np, pandas as pd, pyarrow as pa
    from nbmlops.data import fingerprint
    n = 30_000
    rng = np.random.default_rng(11)
    df = pd.DataFrame({
        "f": rng.standard_normal(n), "i": rng.integers(0, 99, n).astype("int16"),
        "s": pd.array([f"s{i}" for i in range(n)], dtype="str"),
        "o": pd.Series([("t", i) if i % 7 else None for i in range(n)], dtype=object),
        "t": pd.date_range("2020", periods=n, freq="s", tz="Europe/Paris"),
        "c": pd.Categorical(rng.choice(["x", "y"], n)),
        "I": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "a": pd.array(rng.integers(0, 5, n), dtype=pd.ArrowDtype(pa.int32())),
    }, index=pd.Index([f"r{i}" for i in range(n)], name="row"))
    print(fingerprint(df))
    """
)


def test_digest_is_the_same_in_another_process() -> None:
    namespace: dict[str, object] = {}
    lines = SCRIPT.replace("print(fingerprint(df))", "digest = fingerprint(df)")
    exec(compile(lines, "<frame>", "exec"), namespace)  # the same script, in this process
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    assert child.stdout.strip() == namespace["digest"]


def test_known_digests() -> None:
    """Pins the format: a change here changes every stored digest."""
    assert fingerprint(b"abc") == xxhash.xxh3_128_hexdigest(b"abc")
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None]}, index=pd.Index([10, 20], name="k"))
    assert fingerprint(df) == "6eb026eaf677558a25c1ec73b9101ce9"


def test_import_does_not_load_pandas() -> None:
    code = "import sys, nbmlops.data; assert not {'pandas', 'numpy', 'pyarrow'} & set(sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_hashing_a_frame_does_not_copy_it() -> None:
    rows, cols = 500_000, 10
    c_order = pd.DataFrame(np.ones((rows, cols)), copy=False)  # strided columns
    frames = [c_order, pd.DataFrame({i: np.ones(rows, np.int64) for i in range(cols)})]
    for df in frames:
        tracemalloc.start()
        fingerprint(df)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8_000_000 < rows * cols * 8


# --- files and directories ---


def test_file_digest_is_xxh128_of_its_bytes(tmp_path: Path) -> None:
    data = os.urandom(9_000_000)  # more than two read buffers
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert fingerprint(path) == fingerprint(str(path)) == xxhash.xxh3_128_hexdigest(data)
    assert fingerprint(data) == fingerprint(path)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert fingerprint(path) != xxhash.xxh3_128_hexdigest(data)


def make_tree(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.csv").write_text("x,y\n1,2\n")
    (root / "sub" / "deep" / "c.bin").write_bytes(b"\x00\x01")
    return root


def test_directory_digest_covers_paths_contents_and_structure(tmp_path: Path) -> None:
    one, two = make_tree(tmp_path / "one"), make_tree(tmp_path / "two")
    digest = fingerprint(one)
    assert fingerprint(two) == digest
    (two / "sub" / "b.csv").write_text("x,y\n1,3\n")
    assert fingerprint(two) != digest
    (two / "sub" / "b.csv").write_text("x,y\n1,2\n")
    (two / "a.txt").rename(two / "A.txt")
    assert fingerprint(two) != digest
    (two / "A.txt").rename(two / "a.txt")
    (two / "empty").mkdir()
    assert fingerprint(two) != digest
    (two / "empty").rmdir()
    assert fingerprint(two) == digest


def test_symlinks_are_recorded_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("v1")
    tree = make_tree(tmp_path / "tree")
    (tree / "link").symlink_to(outside)
    (tree / "loop").symlink_to(tree, target_is_directory=True)
    digest = fingerprint(tree)
    outside.write_text("v2")
    assert fingerprint(tree) == digest
    (tree / "link").unlink()
    (tree / "link").symlink_to(tree / "a.txt")
    assert fingerprint(tree) != digest
