"""Diffs of data sets from their profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbmlops.data.diff import diff_frames, diff_profiles, format_diff
from nbmlops.data.profile import profile


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    a = pd.DataFrame(
        {
            "x": rng.normal(0.0, 2.0, 100),
            "n": np.arange(100),
            "gone": ["a", "b"] * 50,
            "same": np.ones(100),
        }
    )
    b = pd.DataFrame(
        {
            "x": a["x"].to_numpy()[:80] + 3.0,  # mean up by 3, about 1.5 old std
            "n": np.arange(80, dtype=float),
            "new": np.zeros(80),
            "same": np.ones(80),
        }
    )
    return a, b


def test_diff_reports_every_kind_of_change() -> None:
    a, b = frames()
    d = diff_frames(a, b)
    assert d.changed
    assert (d.rows_before, d.rows_after, d.rows_change) == (100, 80, -20)
    assert d.rows_relative == pytest.approx(-0.2)
    assert d.added == [("new", "float64")]
    assert d.removed == [("gone", "str")]
    assert d.dtype_changes == [("n", "int64", "float64")]
    mean = next(s for s in d.shifts if (s.column, s.stat) == ("x", "mean"))
    expected = (b["x"].mean() - a["x"].mean()) / a["x"].std()
    assert mean.in_std == pytest.approx(expected)
    assert mean.relative == pytest.approx((b["x"].mean() - a["x"].mean()) / abs(a["x"].mean()))
    assert not [s for s in d.shifts if s.column == "same"]

    text = format_diff(d)
    assert "rows: 100 -> 80 (-20, -20.0%)" in text
    assert "column added: new (float64)" in text
    assert "column removed: gone (str)" in text
    assert "dtype changed: n: int64 -> float64" in text
    assert "x: mean " in text and f"{expected:+.2f} std" in text


def test_null_and_distinct_shifts() -> None:
    a = pd.DataFrame({"f": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]})
    b = pd.DataFrame({"f": [1.0, np.nan, 3.0], "s": ["a", "a", "c"]})
    d = diff_frames(a, b)
    stats = {(s.column, s.stat): (s.before, s.after) for s in d.shifts}
    assert stats[("f", "nulls")] == (0, 1)
    assert stats[("s", "distinct")] == (3, 2)
    assert "f: nulls 0 -> 1" in format_diff(d)


def test_identical_data_has_no_differences() -> None:
    a, _ = frames()
    d = diff_profiles(profile(a), profile(a.copy()))
    assert not d.changed
    assert format_diff(d) == "no differences"


def test_diff_of_profiles_survives_json() -> None:
    import json

    a, b = frames()
    stored = [json.loads(json.dumps(profile(x))) for x in (a, b)]
    assert diff_profiles(*stored) == diff_frames(a, b)


def test_empty_before_has_no_relative_change() -> None:
    d = diff_frames(pd.DataFrame({"a": pd.Series([], dtype=float)}), pd.DataFrame({"a": [1.0]}))
    assert d.rows_relative is None
    assert "rows: 0 -> 1 (+1)" in format_diff(d)
