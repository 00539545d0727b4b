"""Drift statistics: scipy as the oracle for KS, PSI's properties, profile against snapshot."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nbmlops.data import (
    DriftError,
    DriftReport,
    FeatureDrift,
    compare,
    compare_predictions,
    drift_report,
    profile,
    psi,
)
from nbmlops.data.drift import psi_categorical
from nbmlops.data.drift_stats import EPSILON, order_index
from nbmlops.exceptions import NbmlopsError, UnsupportedDataError

EVIL = "<img src=x onerror=alert(1)>"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def by_name(report: DriftReport) -> dict[str, FeatureDrift]:
    return {f.name: f for f in report.features}


def stored(df: pd.DataFrame) -> dict:
    """A profile as it comes back from the tracking store."""
    return json.loads(json.dumps(profile(df), allow_nan=False))


# --- KS: scipy's, on the finite values ---


def test_snapshot_ks_is_scipys_on_the_finite_values() -> None:
    r = rng(1)
    ref = {"ties": np.round(r.normal(size=700) * 2), "small": r.normal(size=90), "large": r.normal(size=12_000)}
    cur = {"ties": np.round(r.normal(0.2, size=500) * 2), "small": r.normal(1, size=60), "large": r.exponential(size=40)}
    reference = pd.DataFrame({k: np.resize(np.concatenate([v, [np.nan, np.inf]]), 12_000) for k, v in ref.items()})
    current = pd.DataFrame({k: np.resize(np.concatenate([v, [-np.inf, np.nan]]), 500) for k, v in cur.items()})
    for f in compare(reference, current).features:
        finite = [s[f.name].to_numpy() for s in (reference, current)]
        expected = stats.ks_2samp(*(x[np.isfinite(x)] for x in finite))
        assert (f.ks_statistic, f.ks_pvalue) == (expected.statistic, expected.pvalue), f.name
        assert not f.approximate


# --- PSI ---


def test_psi_of_a_hand_computed_example() -> None:
    reference = np.arange(1, 11)  # two bins split at the median, 5: (-inf, 5], (5, inf)
    current = [1, 2, 6, 7, 8, 9, 10, 11]  # shares 0.25 and 0.75 against 0.5 and 0.5
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(reference, current, bins=2) == pytest.approx(expected)
    # an empty bin counts with a share of EPSILON
    expected = (EPSILON - 0.5) * math.log(EPSILON / 0.5) + 0.5 * math.log(1 / 0.5)
    assert psi(reference, [6, 7, 8], bins=2) == pytest.approx(expected)


def test_psi_is_near_zero_for_the_same_distribution_and_grows_with_shift() -> None:
    r = rng(11)
    reference = r.normal(size=200_000)
    assert psi(reference, r.normal(size=200_000)) < 0.001
    values = [psi(reference, r.normal(shift, size=50_000)) for shift in (0.1, 0.25, 0.5, 1.0)]
    assert values == sorted(values)
    assert values[0] < 0.05 and values[-1] > 0.2


def test_psi_with_ties_merges_duplicate_edges() -> None:
    reference = np.array([0.0] * 60 + list(range(1, 41)))  # 60% zeros: deciles 1-6 are all 0
    assert psi(reference, reference) == 0.0
    assert psi(reference, np.zeros(100)) > 1.0
    more_zeros = np.array([0.0] * 80 + list(range(1, 21)))
    assert 0 < psi(reference, more_zeros) < psi(reference, np.zeros(100))


def test_psi_leaves_out_nan_and_infinity() -> None:
    r = rng(12)
    reference, current = r.normal(size=1000), r.normal(0.3, size=800)
    noisy = np.concatenate([current, [np.nan, np.inf, -np.inf]])
    assert psi(np.append(reference, np.nan), noisy) == psi(reference, current)
    with pytest.raises(DriftError, match="finite"):
        psi([np.nan, np.inf], current)
    with pytest.raises(DriftError, match="bins"):
        psi(reference, current, bins=1)
    with pytest.raises(DriftError, match="psi_categorical"):
        psi(["a", "b"], ["a"])


def test_categorical_psi_with_new_and_missing_categories() -> None:
    def term(ref: float, cur: float) -> float:
        ref, cur = max(ref, EPSILON), max(cur, EPSILON)
        return (cur - ref) * math.log(cur / ref)

    reference = {"a": 50, "b": 30, "gone": 20}
    current = {"a": 50, "b": 25, "new": 25}
    expected = term(0.5, 0.5) + term(0.3, 0.25) + term(0.2, 0) + term(0, 0.25)
    assert psi_categorical(reference, current) == pytest.approx(expected)
    assert psi_categorical(reference, reference) == 0.0
    with pytest.raises(DriftError):
        psi_categorical(reference, {})


def test_order_index_matches_numpy_inverted_cdf() -> None:
    r = rng(13)
    for n in (1, 2, 3, 7, 10, 99, 100, 101, 1000, 12345):
        values = np.sort(r.normal(size=n))
        levels = np.concatenate([np.arange(101) / 100, np.arange(1, 10) / 10, [1 / 3, 2 / 7]])
        expected = np.quantile(values, levels, method="inverted_cdf")
        assert np.array_equal(values[order_index(n, levels)], expected)


# --- compare ---


def reference_frame(n: int = 100_000, seed: int = 20) -> pd.DataFrame:
    r = rng(seed)
    return pd.DataFrame(
        {
            "normal": r.normal(size=n),
            "gamma": r.gamma(2.0, size=n),
            "count": r.poisson(1.5, n),
            "mixed": np.where(r.random(n) < 0.4, 0.0, r.exponential(size=n)),
            "color": r.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
            "flag": r.random(n) < 0.3,
            "level": pd.Categorical(r.choice(["low", "mid", "high"], n)),
        }
    )


def test_profile_reference_agrees_with_snapshot_reference() -> None:
    reference = reference_frame()
    r = rng(21)
    same = reference_frame(seed=22)
    drifted = same.assign(
        normal=same["normal"] + 0.6,
        gamma=same["gamma"] * 1.6,
        count=r.poisson(2.5, len(same)),
        color=r.choice(["red", "green", "blue", "black"], len(same)),
    )
    for current in (same, drifted):
        exact = by_name(compare(reference, current))
        approx = by_name(compare(stored(reference), current))
        assert exact.keys() == approx.keys()
        for name, e in exact.items():
            a = approx[name]
            assert a.psi == pytest.approx(e.psi, abs=1e-3), name
            assert a.drifted == e.drifted, name
            if e.kind == "numeric":
                assert a.approximate and not e.approximate
                assert a.ks_statistic == pytest.approx(e.ks_statistic, abs=0.01), name
    assert not compare(reference, same).drifted
    assert {f.name for f in compare(stored(reference), drifted).drifted_features} == {
        "normal",
        "gamma",
        "count",
        "color",
    }


def test_profile_of_a_sampled_column_still_agrees() -> None:
    r = rng(23)
    reference = pd.DataFrame({"x": r.lognormal(size=600_000)})  # above the profile's sample
    current = pd.DataFrame({"x": r.lognormal(0.05, size=50_000)})
    exact = compare(reference, current).features[0]
    approx = compare(stored(reference), current).features[0]
    assert approx.psi == pytest.approx(exact.psi, abs=0.005)
    assert approx.ks_statistic == pytest.approx(exact.ks_statistic, abs=0.01)


def test_categorical_notes_and_counts() -> None:
    reference = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["gone"] * 20})
    current = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 25 + ["x"] * 15 + ["y"] * 10})
    for ref in (reference, stored(reference)):
        f = compare(ref, current).features[0]
        assert f.kind == "categorical" and f.ks_statistic is None and f.ks_pvalue is None
        assert f.psi == pytest.approx(
            psi_categorical({"a": 50, "b": 30, "gone": 20}, {"a": 50, "b": 25, "x": 15, "y": 10})
        )
        assert f.drifted and not f.approximate
        assert "2 new categories: x, y" in f.note
        assert "1 absent category: gone" in f.note


def test_profile_with_pooled_categories_is_approximate() -> None:
    values = [f"v{i:03d}" for i in range(150)]
    reference = pd.DataFrame({"c": values * 4 + ["v000"] * 100})
    current = pd.DataFrame({"c": values * 4 + ["v000"] * 100})
    f = compare(stored(reference), current).features[0]
    assert f.approximate and f.psi == pytest.approx(0.0, abs=1e-12)
    assert "new" not in f.note  # the profile cannot tell a rare value from a new one
    exact = compare(reference, current).features[0]
    assert not exact.approximate and exact.psi == 0.0


def test_columns_missing_extra_skipped_and_selected() -> None:
    reference = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0],
            "gone": [1, 2, 3],
            "t": pd.date_range("2024-01-01", periods=3),
            "z": np.array([1j, 2j, 3j]),
        }
    )
    current = pd.DataFrame(
        {
            "x": [1.0, 2.0, 2.5],
            "new": ["a", "b", "c"],
            "t": pd.date_range("2025-01-01", periods=3),
            "z": np.array([1j, 2j, 3j]),
        }
    )
    for ref in (reference, stored(reference)):
        report = compare(ref, current)
        assert [f.name for f in report.features] == ["x"]
        assert report.missing_columns == ("gone",) and report.extra_columns == ("new",)
        assert dict(report.skipped)["t"] == "datetimes and timedeltas are not compared"
        assert "complex128" in dict(report.skipped)["z"]
        assert report.reference_source == ("snapshot" if ref is reference else "profile")
        assert (report.reference_rows, report.current_rows) == (3, 3)
    assert [f.name for f in compare(reference, current, columns="x").features] == ["x"]
    selected = compare(reference, current, columns=["x", "gone"])
    assert [f.name for f in selected.features] == ["x"]
    assert selected.missing_columns == ("gone",) and selected.extra_columns == ()
    with pytest.raises(DriftError, match="'nope'"):
        compare(reference, current, columns=["nope"])


def test_missing_values_are_left_out_and_noted() -> None:
    r = rng(30)
    reference = pd.DataFrame({"x": r.normal(size=1000), "s": r.choice(["a", "b"], 1000)})
    current = reference.copy()
    current.loc[:499, "x"] = np.nan
    current.loc[:299, "s"] = None
    current["x"] = current["x"].astype("Float64")  # nullable numbers as well
    features = by_name(compare(reference, current))
    assert features["x"].current_rows == 500 and features["x"].current_missing == 0.5
    assert features["x"].note == "missing values 0.0% -> 50.0%"
    assert features["s"].current_rows == 700 and "30.0%" in features["s"].note
    everything_missing = current.assign(x=np.nan, s=None)
    for ref in (reference, stored(reference)):
        features = by_name(compare(ref, everything_missing))
        for f in features.values():
            assert f.psi is None and f.drifted and f.current_rows == 0
            assert f.note == "all values missing in current data"
    both = compare(reference.assign(x=np.nan), everything_missing)
    assert not by_name(both)["x"].drifted
    assert by_name(both)["x"].note == "all values missing in reference and current data"


def test_numbers_read_as_text_are_compared_as_numbers() -> None:
    r = rng(31)
    reference = pd.DataFrame({"x": r.integers(0, 100, 1000)})
    current = pd.DataFrame({"x": reference["x"].astype(str).astype(object)})
    f = compare(reference, current).features[0]
    assert f.kind == "numeric" and f.psi == 0.0 and f.ks_statistic == 0.0
    assert compare(stored(reference), current).features[0].psi == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("reference", "current", "dtypes"),
    [
        ([1.0, 2.0], ["a", "b"], ("float64", "str")),
        (["a", "b"], [1.0, 2.0], ("str", "float64")),
        ([1, 2], [True, False], ("int64", "bool")),
        (pd.to_datetime(["2024-01-01", "2024-01-02"]), [1.0, 2.0], ("datetime64", "float64")),
    ],
)
def test_incompatible_dtypes_raise_naming_the_column_and_both_dtypes(
    reference: list, current: list, dtypes: tuple[str, str]
) -> None:
    ref = pd.DataFrame({"col": reference})
    for r in (ref, stored(ref)):
        with pytest.raises(DriftError) as caught:
            compare(r, pd.DataFrame({"col": current}))
        message = str(caught.value)
        assert caught.value.column == "col" and "'col'" in message
        assert dtypes[0] in message and dtypes[1] in message
        assert isinstance(caught.value, NbmlopsError) and isinstance(caught.value, ValueError)


def test_drift_errors() -> None:
    reference = reference_frame(100)
    with pytest.raises(DriftError, match="current data has no rows"):
        compare(reference, reference.iloc[:0])
    with pytest.raises(DriftError, match="reference data has no rows"):
        compare(reference.iloc[:0], reference)
    with pytest.raises(DriftError, match="reference data has no rows"):
        compare(profile(reference.iloc[:0]), reference)
    old = stored(reference)
    for col in old["columns"]:
        for key in ("quantiles", "cdf", "cdf_left", "top", "other"):
            col.pop(key, None)
    with pytest.raises(DriftError, match="no distribution recorded") as caught:
        compare(old, reference)
    assert caught.value.column == "normal"
    with pytest.raises(DriftError, match="not a profile"):
        compare({"a": 1}, reference)
    with pytest.raises(DriftError, match="threshold"):
        compare(reference, reference, threshold=0)
    with pytest.raises(DriftError, match="bins"):
        compare(reference, reference, bins=1)
    with pytest.raises(UnsupportedDataError):
        compare(reference["normal"].to_numpy(), reference)
    with pytest.raises(UnsupportedDataError):
        compare(reference, reference.to_dict())


def test_top_none_in_the_profile_skips_the_column() -> None:
    reference = pd.DataFrame({"s": ["a", "b"]})
    prof = stored(reference)
    prof["columns"][0]["top"] = prof["columns"][0]["other"] = None
    report = compare(prof, reference)
    assert report.features == () and "no category counts" in dict(report.skipped)["s"]


# --- predictions ---


def test_compare_predictions_numeric_and_labels() -> None:
    r = rng(40)
    scores = r.beta(2, 5, 5000)
    shifted = r.beta(3, 4, 3000)
    f = compare_predictions(scores, shifted)
    assert f.name == "prediction" and f.kind == "numeric" and f.drifted
    assert (f.ks_statistic, f.ks_pvalue) == pytest.approx(tuple(stats.ks_2samp(scores, shifted)[:2]), rel=1e-9)
    from_profile = compare_predictions(stored(pd.DataFrame({"p": scores})), shifted)
    assert from_profile.approximate and from_profile.psi == pytest.approx(f.psi, abs=1e-3)
    proba = np.column_stack([1 - scores, scores])
    assert compare_predictions(proba[:, 1:], scores).psi == 0.0
    labels = compare_predictions(["cat", "dog"] * 50, pd.Series(["cat"] * 90 + ["dog"] * 10))
    assert labels.kind == "categorical" and labels.drifted
    assert not compare_predictions(np.array([0, 1] * 50), np.array([1, 0] * 40)).drifted
    with pytest.raises(DriftError, match="one column"):
        compare_predictions(proba, proba)
    with pytest.raises(DriftError, match="no current predictions"):
        compare_predictions(scores, [])
    with pytest.raises(DriftError, match="prediction"):
        compare_predictions(scores, ["a", "b"])


# --- the report ---


def report_with_awkward_names() -> DriftReport:
    r = rng(50)
    names = [
        EVIL,
        "a/b",
        "../up",
        "x:y",
        "",
        "max",
        "prediction",
        "a?b",
        "a!b",
        "é ok-1.2",
        "z" * 300,
    ]
    reference = pd.DataFrame({name: r.normal(size=500) for name in names})
    reference["cat"] = r.choice(["u", "v"], 500)
    current = reference.copy()
    current[EVIL] = current[EVIL] + 2  # drifted
    current["cat"] = r.choice(["u", "v", "w$x$"], 500)  # a $ must not start mathtext
    report = compare(reference, current)
    return dataclasses.replace(report, prediction=compare_predictions(r.random(300), r.random(200)))


def test_metrics_keys_are_valid_mlflow_metric_names_and_distinct() -> None:
    from mlflow.utils.validation import _validate_metric_name

    report = report_with_awkward_names()
    metrics = report.to_metrics()
    for key in metrics:
        _validate_metric_name(key)
        assert re.fullmatch(r"[\w\-. ]+", key) and len(key) <= 250
    assert len([k for k in metrics if k.startswith("psi.")]) == len(report.features) + 2
    assert metrics["psi.max"] == max(f.psi for f in report.features)
    assert metrics["drifted_features"] == float(len(report.drifted_features)) >= 2
    assert metrics["psi.prediction"] == report.prediction.psi
    assert "ks_pvalue.prediction" in metrics
    assert "psi.max_2" in metrics and "psi.prediction_2" in metrics  # columns, not the summary
    assert "psi.a_b" in metrics and "psi.a_b_2" in metrics and "psi.a_b_3" in metrics
    assert "psi._" in metrics and "psi.é ok-1.2" in metrics and "ks.cat" not in metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_format_table_sorts_by_psi_and_marks_drift() -> None:
    report = report_with_awkward_names()
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "feature",
        "kind",
        "psi",
        "ks",
        "ks",
        "p-value",
        "ref",
        "rows",
        "cur",
        "rows",
        "note",
    ]
    assert lines[2].startswith("   [prediction]")
    rows = lines[3 : 3 + len(report.features)]
    assert rows[0].startswith("*") and EVIL in rows[0]
    psis = [float(re.search(r"(categorical|numeric)\s+(\S+)", row).group(2)) for row in rows]
    assert psis == sorted(psis, reverse=True)
    assert f"{len(report.drifted_features)} of {len(report.features)} features drifted" in table
    approx = compare(stored(pd.DataFrame({"x": [1.0, 2.0, 3.0]})), pd.DataFrame({"x": [1.0, 2.0]}))
    assert "~" in approx.format_table()


def test_html_is_self_contained_escaped_and_has_plots() -> None:
    report = report_with_awkward_names()
    page = report.to_html(title=f"drift of {EVIL}")
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page.replace("&gt;", "")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and "drift detected" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 + len(report.features)  # PSI chart, prediction, each feature
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere


def test_html_from_a_profile_and_caps_feature_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift_report, "MAX_PLOTS", 3)
    r = rng(51)
    reference = pd.DataFrame({f"c{i}": r.normal(size=300) for i in range(5)})
    reference["s"] = r.choice(list("abcdefghijklmnopqrstuvwxyz"), 300)  # more than a plot shows
    current = reference.copy()
    current["c3"] = current["c3"] + 3
    page = compare(stored(reference), current).to_html("t")
    assert len(re.findall(r"data:image/png;base64,", page)) == 1 + 3
    assert "The 3 most drifted features." in page
    assert page.index("<h3>") == page.index("<h3>c3</h3>")  # the most drifted first
    assert "~" in page


def test_importing_nbmlops_data_imports_no_numerical_library() -> None:
    code = (
        "import sys, nbmlops.data\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
