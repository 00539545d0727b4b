"""`nbmlops reproduce`: real papermill executions re-run from what a real MLflow store recorded."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

import nbmlops
from nbmlops.exceptions import ConfigError
from nbmlops.runner import run_notebook
from nbmlops.runner.reproduce import NotReproducibleError, format_report, reproduce
from nbmlops.tracking.query import RunNotFoundError
from tests.conftest import runs_of
from tests.test_runner import notebook


def _training_notebook(project: Path) -> Path:
    (project / "data.csv").write_text("x\n1\n2\n3\n")
    return notebook(
        project / "train.ipynb",
        "%load_ext nbmlops",
        "import pandas as pd\ndf = pd.read_csv('data.csv')",
        "%%track --name fit\ntotal = float(df['x'].sum()) * scale",
        parameters="scale = 1.0\nlabel = 'a'",
    )


def _typed_parameters(client, run_id: str, dst: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, "notebook/parameters.json", str(dst))).read_text())


def test_notebook_run_is_reproduced_with_the_same_typed_parameters(project, client, tmp_path):
    first = run_notebook(_training_notebook(project), parameters={"scale": 2}, progress_bar=False)
    assert first.status == "FINISHED" and first.metrics == {"total": 12.0}, first.error

    result = reproduce(first.run_id)

    assert result.reproduced and result.exit_code == 0 and result.status == "FINISHED"
    assert [(m.name, m.original, m.new, m.ok) for m in result.metrics] == [("total", 12.0, 12.0, True)]
    assert result.params == () and result.data == () and result.notes == ()
    new = client.get_run(result.run_id)
    assert new.data.tags["nbmlops.reproduces"] == first.run_id and new.info.run_name == "reproduce train"
    assert new.data.params == client.get_run(first.run_id).data.params == {"scale": "2", "label": "a"}
    assert _typed_parameters(client, result.run_id, tmp_path / "new") == {"scale": 2, "label": "a"}
    assert result.execution.parameters == {"scale": 2, "label": "a"}
    report = format_report(result)
    assert report.startswith("REPRODUCED: notebook run " + first.run_id) and "total" in report


def test_changed_data_is_not_reproduced_and_the_report_names_the_metric_and_the_input(project, client):
    first = run_notebook(_training_notebook(project), progress_bar=False)
    assert first.metrics == {"total": 6.0}, first.error
    (project / "data.csv").write_text("x\n1\n2\n4\n")

    result = reproduce(first.run_id, rtol=1e-6)

    assert not result.reproduced and result.exit_code == 4 and result.status == "FINISHED"
    assert [(m.name, m.new, m.ok) for m in result.metrics] == [("total", 7.0, False)]
    (change,) = result.data
    assert change.startswith("input df changed: ") and len(change.split(" -> ")[1]) == 12
    report = format_report(result)
    assert report.startswith("NOT REPRODUCED") and "DIFF  total  6.0" in report
    assert "input df changed" in report.split("data:")[1]


def test_cell_run_is_reproduced_from_the_recorded_kernel_history(shell, client, request):
    shell.run_cell("seed = 3", store_history=True)
    shell.run_cell("%%track\nscore = seed * 2", store_history=True)
    nbmlops.flush(60)
    (original,) = runs_of(client, request.node.name)

    result = reproduce(original.info.run_id)

    assert result.reproduced and result.exit_code == 0, format_report(result)
    assert [(m.name, m.new) for m in result.metrics] == [("score", 6.0)]
    new = client.get_run(result.run_id)
    assert new.data.tags["nbmlops.kind"] == "cell" and new.data.tags["nbmlops.reproduces"] == original.info.run_id
    assert new.data.tags["mlflow.parentRunId"] == result.execution.run_id != result.run_id
    executed = nbformat.read(result.execution.output, 4)
    assert [c.source.splitlines()[0] for c in executed.cells] == [
        "%load_ext nbmlops",
        "seed = 3",
        f"%%track --tag nbmlops.reproduces={original.info.run_id}",
    ]


def test_history_cells_that_raised_are_replayed_without_stopping_the_reproduction(shell, client, request):
    shell.run_cell("seed = 3", store_history=True)
    assert shell.run_cell("seed = 4\n1 / 0", store_history=True).error_in_exec is not None
    shell.run_cell("%%track\nscore = seed * 2", store_history=True)
    nbmlops.flush(60)
    (original,) = runs_of(client, request.node.name)

    result = reproduce(original.info.run_id)

    assert result.reproduced, format_report(result)
    assert [(m.name, m.new) for m in result.metrics] == [("score", 8.0)]  # the raising cell's effect replayed
    executed = nbformat.read(result.execution.output, 4)
    assert executed.cells[2].metadata["tags"] == ["raises-exception"]


def test_unknown_run_and_runs_of_other_kinds_are_usage_errors(project, client, request):
    with pytest.raises(RunNotFoundError, match="no run 'f00'") as caught:
        reproduce("f00")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ConfigError, match="rtol"):
        reproduce("f00", rtol=-1)
    with nbmlops.track("script"):
        nbmlops.log_metric("m", 1.0)
    nbmlops.flush(60)
    (run,) = runs_of(client, request.node.name)
    with pytest.raises(NotReproducibleError, match="not an nbmlops run"):
        reproduce(run.info.run_id)
