"""Item 13 of the trust issue: MLflow stores +inf as 1.7976931348623157e308, and that value passed
``accuracy >= 0.5``. Gates read the stored largest float as infinite and fail closed; logging inf or NaN warns."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import numpy as np
from nbformat.v4 import new_code_cell, new_notebook

import nbmlops
from nbmlops.cli import main
from nbmlops.registry import get_version
from tests.conftest import runs_of

STORED_INF = sys.float_info.max


def _register(name: str, metrics: dict[str, float]) -> int:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics(metrics)
        version = nbmlops.register(model, name, evaluation_data=np.eye(3), timeout=120)
    nbmlops.flush(60)
    return version.version


def test_nbmlops_run_gate_fails_with_exit_3_on_a_metric_logged_as_inf(project: Path, client, request):
    nb = new_notebook()
    nb.cells = [new_code_cell("import nbmlops\nnbmlops.log_metric('accuracy', float('inf'))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "inf.ipynb")

    gated = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "run", "inf.ipynb", "--gate", "accuracy >= 0.5", "--no-progress"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )

    assert gated.returncode == 3, gated.stdout + gated.stderr
    assert "metric accuracy is inf" in gated.stdout + gated.stderr and "Traceback" not in gated.stderr
    [parent] = [r for r in runs_of(client, request.node.name) if r.data.tags.get("nbmlops.kind") == "notebook"]
    assert parent.data.metrics["accuracy"] == STORED_INF  # what MLflow gives back for inf
    assert parent.data.tags["nbmlops.gates"] == "failed"
    [executed] = (project / ".nbmlops" / "outputs").glob("inf-*.ipynb")
    [warning] = [o.text for o in nbformat.read(executed, 4).cells[0].outputs if o.get("name") == "stderr"]
    assert "metric 'accuracy' is inf" in warning


def test_models_promote_gate_refuses_with_exit_3_a_version_whose_metric_was_logged_as_inf(project, capsys):
    name = f"inf-{uuid.uuid4().hex[:8]}"
    version = _register(name, {"accuracy": float("inf")})

    code = main(["models", "promote", name, str(version), "--alias", "champion", "--gate", "accuracy >= 0.5"])

    assert code == 3
    out = capsys.readouterr().out
    assert "REFUSED" in out and "metric accuracy is inf" in out
    assert get_version(f"{name}/{version}").aliases == ()
    [decision] = get_version(f"{name}/{version}").decisions
    assert not decision.accepted


def test_models_promote_beat_refuses_a_candidate_whose_metric_was_logged_as_inf(project, capsys):
    name = f"inf-beat-{uuid.uuid4().hex[:8]}"
    incumbent = _register(name, {"rmse": 0.3})
    assert nbmlops.promote(f"{name}/{incumbent}", "champion").accepted
    candidate = _register(name, {"rmse": float("-inf")})

    code = main(["models", "promote", name, str(candidate), "--alias", "champion", "--beat", "champion:rmse"])

    assert code == 3
    assert "the candidate's rmse is -inf" in capsys.readouterr().out
    assert get_version(f"{name}@champion").version == incumbent


def test_logging_an_inf_or_nan_metric_warns_once_per_metric_name(project, capfd):
    tag = uuid.uuid4().hex[:6]
    with nbmlops.track("odd metrics") as run:
        run.log_metrics({f"acc_{tag}": float("inf"), f"loss_{tag}": float("nan"), f"ok_{tag}": 1.0})
        run.log_metrics({f"acc_{tag}": float("inf")})
        run.log_metric_series(f"curve_{tag}", [0.5, float("-inf")])
    nbmlops.flush(60)

    err = capfd.readouterr().err
    assert err.count(f"metric 'acc_{tag}' is inf") == 1
    assert err.count(f"metric 'loss_{tag}' is nan") == 1
    assert err.count(f"metric 'curve_{tag}' is -inf") == 1
    assert f"ok_{tag}" not in err
