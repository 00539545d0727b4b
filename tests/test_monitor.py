"""Drift monitoring of a registered model on real data, a real registry and a real retraining run."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.cli import main
from nbmlops.data import SnapshotStore
from nbmlops.registry import get_version
from nbmlops.registry.monitor import ModelSchemaError, monitor
from tests.test_runner import notebook


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1.0, n)
    b = rng.uniform(0, 10, n)
    colour = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    return pd.DataFrame({"a": a, "b": b, "colour": colour, "y": (a + b / 5 > 1).astype(int)})


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["a", "b"]]


def _registered(name: str, snapshot: bool) -> tuple[pd.DataFrame, int]:
    from sklearn.linear_model import LogisticRegression

    train = _frame(3000, 0)
    X_train = _features(train)
    if snapshot:
        SnapshotStore().save(X_train)
    with nbmlops.track("train"):
        version = nbmlops.register(LogisticRegression().fit(X_train, train.y), name, training_data=X_train,
                                   timeout=120)
    nbmlops.flush(60)
    if not snapshot:  # as when the training data was above the snapshot size limit
        shutil.rmtree(Path(".nbmlops/data"), ignore_errors=True)
    return train, version.version


def test_same_distribution_is_ok_and_a_shift_drifts_with_prediction_drift(project, request, client, capsys):
    name = f"mon-{uuid.uuid4().hex[:8]}"
    _, version = _registered(name, snapshot=True)
    _features(_frame(2000, 1)).to_csv(project / "same.csv", index=False)
    _features(_frame(2000, 2, shift=1.5)).to_csv(project / "shifted.csv", index=False)
    assert main(["monitor", f"{name}/{version}", "same.csv"]) == 0
    assert "OK: no drift" in capsys.readouterr().out
    assert main(["monitor", f"{name}/{version}", "shifted.csv", "--report", "drift.html"]) == 5
    out = capsys.readouterr().out
    assert "DRIFTED: 1 feature(s) and the predictions" in out
    html = (project / "drift.html").read_text()
    assert "data:image/png;base64," in html
    runs = client.search_runs([client.get_experiment_by_name(f"monitor/{name}").experiment_id],
                              order_by=["attributes.start_time DESC"])
    assert [r.data.tags["nbmlops.drifted"] for r in runs] == ["true", "false"]
    latest = runs[0]
    assert latest.data.metrics["psi.a"] > 0.2 > latest.data.metrics["psi.b"]
    assert "psi.prediction" in latest.data.metrics and latest.data.tags["nbmlops.model_version"] == str(version)
    assert [a.path for a in client.list_artifacts(latest.info.run_id, "drift")] == ["drift/report.html"]


def test_profile_reference_when_no_snapshot_and_schema_mismatch_is_a_clear_error(project, capsys):
    name = f"mon-{uuid.uuid4().hex[:8]}"
    _, version = _registered(name, snapshot=False)
    result = monitor(f"{name}/{version}", _features(_frame(2000, 3, shift=2.0)))
    assert result.report.drifted and result.report.reference_source == "profile" and result.report.prediction is None
    assert any("no snapshot" in note for note in result.notes)
    with pytest.raises(ModelSchemaError, match="lacks column"):
        monitor(f"{name}/{version}", pd.DataFrame({"a": [1.0, 2.0]}))
    pd.DataFrame({"a": ["x", "y"], "b": [1.0, 2.0]}).to_csv(project / "text.csv", index=False)
    assert main(["monitor", f"{name}/{version}", "text.csv"]) == 2
    assert "a" in capsys.readouterr().err
    assert main(["monitor", f"{name}/{version}", "missing.parquet"]) == 2
    assert main(["monitor", f"{name}/{version}", "text.csv", "-p", "x", "1"]) == 2


def test_retrain_on_drift_registers_a_challenger(project, request, capsys):
    name = f"mon-{uuid.uuid4().hex[:8]}"
    _, version = _registered(name, snapshot=True)
    drifted = _frame(2000, 4, shift=1.5)
    drifted.to_csv(project / "live.csv", index=False)
    _features(drifted).to_csv(project / "live_features.csv", index=False)
    notebook(
        project / "retrain.ipynb",
        "%load_ext nbmlops",
        "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression\nframe = pd.read_csv(data_path)\n"
        "X_train, y_train = frame[['a', 'b']], frame.y",
        f"%%track --register model {name}\nmodel = LogisticRegression().fit(X_train, y_train)\n"
        "accuracy = model.score(X_train, y_train)",
        parameters="data_path = 'train.csv'",
    )
    code = main(["monitor", f"{name}@{_alias(name, version)}", "live_features.csv", "--retrain", "retrain.ipynb",
                 "-p", "data_path", "live.csv", "--gate", "accuracy >= 0.8"])
    out = capsys.readouterr().out
    assert code == 5, out
    assert f"registered {name}/2 as @challenger" in out
    challenger = get_version(f"{name}@challenger")
    assert challenger.version == 2 and challenger.decisions[-1].accepted


def _alias(name: str, version: int) -> str:
    nbmlops.promote(f"{name}/{version}", "champion")
    return "champion"
