"""Item 15 of the trust issue: odd data. A self-referential object column raised an untyped
``RecursionError``; ``None`` and ``NaN`` in an object column must give distinct fingerprints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.exceptions import FingerprintError, NbmlopsError, UnsupportedDataError
from tests.conftest import runs_of


def _cells(*items: object) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items  # element by element, even lists
    return out


def _itself() -> list[object]:
    loop: list[object] = [1]
    loop.append(loop)
    return loop


def _holding_itself() -> dict[str, object]:
    loop: dict[str, object] = {"k": 1}
    loop["self"] = loop
    return loop


def _array_holding_itself() -> np.ndarray:
    loop = np.empty(1, dtype=object)
    loop[0] = loop
    return loop


@pytest.mark.parametrize("value", [_itself(), _holding_itself(), _array_holding_itself()],
                         ids=["list", "dict", "array"])
@pytest.mark.parametrize("wrap", [pd.Series, lambda a: pd.DataFrame({"c": a, "n": [1.0, 2.0]}), np.asarray],
                         ids=["series", "frame", "ndarray"])
def test_a_self_referential_object_column_raises_a_typed_one_line_fingerprint_error(value, wrap):
    data = wrap(_cells(value, "x"))

    with pytest.raises(FingerprintError) as caught:
        nbmlops.fingerprint(data)

    assert isinstance(caught.value, UnsupportedDataError) and isinstance(caught.value, NbmlopsError)
    assert "contains itself" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_tracked_cell_reading_a_self_referential_frame_finishes_without_that_dataset(shell, client, request, capfd):
    shell.user_ns["odd"] = pd.DataFrame({"c": _cells(_itself(), "x"), "y": [1.0, 2.0]})
    shell.run_cell_magic("track", "", "total = float(odd.y.sum())")
    nbmlops.flush(60)

    [run] = runs_of(client, request.node.name)
    assert run.info.status == "FINISHED" and run.data.metrics["total"] == 3.0
    err = capfd.readouterr().err
    assert "contains itself" in err and "RecursionError" not in err


MARKER_SHAPES = {
    "with strings": lambda m: ["a", m, "b"],
    "with numbers": lambda m: [1, m, 2.5],
    "with mixed cells": lambda m: [m, (1, "t"), {"k": 1}, b"x"],
    "alone": lambda m: [m],
    "only markers": lambda m: [m, m],
    "next to the other marker": lambda m: [m, np.nan if m is None else None, "a"],
    "inside a list cell": lambda m: [[m], "a"],
    "inside a dict cell": lambda m: [{"k": m}, "a"],
}


@pytest.mark.parametrize("shape", list(MARKER_SHAPES))
def test_none_and_nan_in_an_object_column_give_distinct_fingerprints(shape):
    build = MARKER_SHAPES[shape]
    for wrap in (lambda a: pd.Series(a, dtype=object), lambda a: pd.DataFrame({"c": a}, dtype=object),
                 lambda a: pd.Index(a, dtype=object), np.asarray):
        none, nan = wrap(_cells(*build(None))), wrap(_cells(*build(np.nan)))
        assert nbmlops.fingerprint(none) != nbmlops.fingerprint(nan), (shape, none)
