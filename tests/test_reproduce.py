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


def _metrics(result) -> list[tuple[str, str, list[float] | None, bool]]:
    """(run name, metric, the new run's values, matched) for each metric compared, cell by cell."""
    return [
        (cell.label.split(" (")[0], m.name, None if m.new is None else [v for _, v in m.new], m.ok)
        for cell in result.cells
        for m in cell.metrics
    ]


def _typed_parameters(client, run_id: str, dst: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, "notebook/parameters.json", str(dst))).read_text())


def test_notebook_run_is_reproduced_with_the_same_typed_parameters(project, client, tmp_path):
    first = run_notebook(_training_notebook(project), parameters={"scale": 2}, progress_bar=False)
    assert first.status == "FINISHED" and first.metrics == {"total": 12.0}, first.error

    result = reproduce(first.run_id)

    assert result.reproduced and result.exit_code == 0 and result.status == "FINISHED"
    assert result.verdict == "REPRODUCED" and result.first_difference is None and result.causes == ()
    assert _metrics(result) == [("fit", "total", [12.0], True), ("notebook run", "total", [12.0], True)]
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
    assert _metrics(result) == [("fit", "total", [7.0], False), ("notebook run", "total", [7.0], False)]
    assert result.first_difference.startswith("fit (") and result.first_difference.endswith("metric total: 6.0 -> 7.0")
    (change,) = result.data
    assert change.startswith("input df changed: ") and len(change.split(" -> ")[1]) == 12
    assert result.causes[0].startswith("changed input data: input df changed: ")
    report = format_report(result)
    assert report.startswith("NOT REPRODUCED") and "DIFF  metric total: 6.0 -> 7.0" in report
    assert "likely cause: changed input data" in report and "input df changed" in report.split("data:")[1]


def test_cell_run_is_reproduced_from_the_recorded_kernel_history(shell, client, request):
    shell.run_cell("seed = 3", store_history=True)
    shell.run_cell("%%track\nscore = seed * 2", store_history=True)
    nbmlops.flush(60)
    (original,) = runs_of(client, request.node.name)

    result = reproduce(original.info.run_id)

    assert result.reproduced and result.exit_code == 0, format_report(result)
    assert [(m, new) for _, m, new, _ in _metrics(result)] == [("score", [6.0])]
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
    assert [(m, new) for _, m, new, _ in _metrics(result)] == [("score", [8.0])]  # the raising cell's effect replayed
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


def _data_parameter_notebook(project: Path) -> Path:
    (project / "data.csv").write_text("x\n1\n2\n3\n")
    return notebook(
        project / "train.ipynb",
        "%load_ext nbmlops",
        "import pandas as pd\ndf = pd.read_csv(data_path)",
        "%%track --name fit\ntotal = float(df['x'].sum())",
        parameters="data_path = 'other.csv'",
    )


def _file_snapshot(client, run_id: str) -> str:
    (digest,) = [d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs if d.dataset.name == "data_path"]
    assert client.get_run(run_id).data.tags[f"nbmlops.snapshot.{digest}"] == "stored"
    return digest


@pytest.mark.parametrize("change", ["changed since the run", "is gone"])
def test_a_data_file_that_changed_or_is_gone_is_replaced_by_its_snapshot(project, client, change):
    first = run_notebook(_data_parameter_notebook(project), parameters={"data_path": "data.csv"}, progress_bar=False)
    assert first.metrics == {"total": 6.0}, first.error
    digest = _file_snapshot(client, first.run_id)
    if change == "is gone":
        (project / "data.csv").unlink()
    else:
        (project / "data.csv").write_text("x\n1\n2\n4\n")

    result = reproduce(first.run_id)

    assert result.reproduced, format_report(result)
    assert [(m, new) for _, m, new, _ in _metrics(result)] == [("total", [6.0])] * 2
    assert result.notes == (f"data_path: data.csv {change}; used snapshot {digest[:12]}",)
    assert result.params == () and result.data == ()
    restored = Path(result.execution.parameters["data_path"])
    assert restored.name == "data.csv" and restored.read_text() == "x\n1\n2\n3\n"
    assert "used snapshot" in format_report(result).split("notes:")[1]


def test_a_corrupt_snapshot_is_a_note_and_the_file_is_used_as_it_is(project, client):
    first = run_notebook(_data_parameter_notebook(project), parameters={"data_path": "data.csv"}, progress_bar=False)
    digest = _file_snapshot(client, first.run_id)
    (project / ".nbmlops" / "data" / digest[:2] / f"{digest}.bin").write_text("x\n9\n")
    (project / "data.csv").write_text("x\n1\n2\n4\n")

    result = reproduce(first.run_id)

    assert not result.reproduced and result.status == "FINISHED"
    (note,) = result.notes
    assert note.startswith(f"data_path: data.csv changed since the run; its snapshot {digest[:12]} cannot be used")
    assert "is corrupt" in note
    assert [(m, new) for _, m, new, _ in _metrics(result)] == [("total", [7.0])] * 2


def test_a_data_file_without_snapshot_is_noted_and_the_run_proceeds(project, client, monkeypatch):
    monkeypatch.setenv("NBMLOPS_SNAPSHOT_MAX_BYTES", "0")
    first = run_notebook(_data_parameter_notebook(project), parameters={"data_path": "data.csv"}, progress_bar=False)
    (project / "data.csv").write_text("x\n1\n2\n4\n")

    result = reproduce(first.run_id)

    assert not result.reproduced
    assert result.notes == (
        "data_path: data.csv changed since the run; no snapshot of it (not snapshotted: snapshot_max_bytes is 0)",
    )


def test_a_cell_run_whose_source_file_is_gone_is_reproduced_from_the_input_snapshots(shell, client, request, project):
    (project / "data.csv").write_text("x\n1\n2\n3\n")
    shell.run_cell("import pandas as pd", store_history=True)
    shell.run_cell("df = pd.read_csv('data.csv')", store_history=True)
    shell.run_cell("%%track\ntotal = float(df['x'].sum())", store_history=True)
    nbmlops.flush(60)
    (original,) = runs_of(client, request.node.name)
    (digest,) = [d.dataset.digest for d in original.inputs.dataset_inputs]
    (project / "data.csv").unlink()

    result = reproduce(original.info.run_id)

    assert result.reproduced, format_report(result)
    assert [(m, new) for _, m, new, _ in _metrics(result)] == [("total", [6.0])]
    assert result.notes == (f"df is missing; restored from snapshot {digest[:12]}",)
    executed = nbformat.read(result.execution.output, 4)
    assert [c.metadata.get("tags", []) for c in executed.cells] == [
        [], ["raises-exception"], ["raises-exception"], ["nbmlops-restore"], []
    ]
    assert any(o.get("ename") == "FileNotFoundError" for o in executed.cells[2].outputs)
