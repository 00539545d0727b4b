"""`nbmlops reproduce`: real papermill executions re-run from what a real MLflow store recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.exceptions import ConfigError
from nbmlops.runner import run_notebook
from nbmlops.runner.compare import match_cells
from nbmlops.runner.reproduce import NotReproducibleError, format_report, reproduce
from nbmlops.runner.tolerance import first_difference
from nbmlops.tracking.query import RunNotFoundError
from nbmlops.tracking.search import RunRow
from nbmlops.tracking.values import is_timing
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


def _cell_run(shell, client, request, *cells: str):
    """Run ``cells`` in the shell (kept in its history; the last one is tracked) and return the one run recorded."""
    for cell in cells:
        shell.run_cell(cell, store_history=True)
    nbmlops.flush(60)
    (original,) = runs_of(client, request.node.name)
    return original


def _first_run(project: Path, name: str, *cells: str):
    """The notebook ``name`` of ``cells`` (``%load_ext nbmlops`` first) run once, FINISHED: the run to reproduce."""
    first = run_notebook(notebook(project / name, "%load_ext nbmlops", *cells), progress_bar=False)
    assert first.status == "FINISHED", first.error
    return first


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
    original = _cell_run(shell, client, request, "seed = 3", "%%track\nscore = seed * 2")

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


def _run_reading_a_data_file(project: Path):
    """A notebook whose parameter ``data_path`` names the data file it reads, run once on ``data.csv``."""
    (project / "data.csv").write_text("x\n1\n2\n3\n")
    path = notebook(
        project / "train.ipynb",
        "%load_ext nbmlops",
        "import pandas as pd\ndf = pd.read_csv(data_path)",
        "%%track --name fit\ntotal = float(df['x'].sum())",
        parameters="data_path = 'other.csv'",
    )
    return run_notebook(path, parameters={"data_path": "data.csv"}, progress_bar=False)


def _file_snapshot(client, run_id: str) -> str:
    (digest,) = [d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs if d.dataset.name == "data_path"]
    assert client.get_run(run_id).data.tags[f"nbmlops.snapshot.{digest}"] == "stored"
    return digest


@pytest.mark.parametrize("change", ["changed since the run", "is gone"])
def test_a_data_file_that_changed_or_is_gone_is_replaced_by_its_snapshot(project, client, change):
    first = _run_reading_a_data_file(project)
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
    first = _run_reading_a_data_file(project)
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
    first = _run_reading_a_data_file(project)
    (project / "data.csv").write_text("x\n1\n2\n4\n")

    result = reproduce(first.run_id)

    assert not result.reproduced
    assert result.notes == (
        "data_path: data.csv changed since the run; no snapshot of it (not snapshotted: snapshot_max_bytes is 0)",
    )


def test_a_cell_run_whose_source_file_is_gone_is_reproduced_from_the_input_snapshots(shell, client, request, project):
    (project / "data.csv").write_text("x\n1\n2\n3\n")
    original = _cell_run(
        shell, client, request, "import pandas as pd", "df = pd.read_csv('data.csv')", "%%track\ntotal = float(df['x'].sum())"
    )
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


def test_a_cell_run_whose_training_data_file_is_gone_is_reproduced_from_the_training_inputs_snapshots(
    shell, client, request, project
):
    (project / "data.csv").write_text("x,y\n1,2.0\n2,4.1\n3,5.9\n4,8.2\n")
    original = _cell_run(
        shell, client, request,
        "import pandas as pd\nfrom sklearn.linear_model import LinearRegression",
        "df = pd.read_csv('data.csv')\nX_train, y_train = df[['x']], df['y']",
        "%%track\nmodel = LinearRegression().fit(X_train, y_train)\nscore = model.score(X_train, y_train)",
    )
    contexts = {d.dataset.name: [t.value for t in d.tags] for d in original.inputs.dataset_inputs}
    assert contexts == {"X_train": ["training"], "y_train": ["training"]}
    (project / "data.csv").unlink()

    result = reproduce(original.info.run_id)

    assert result.reproduced, format_report(result)
    assert [m for _, m, _, ok in _metrics(result) if ok] == ["score"]
    assert sorted(note.split(";")[0] for note in result.notes) == ["X_train is missing", "y_train is missing"]
    assert result.data == ()  # the same data fingerprints


_REGISTERING = (
    "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression\n"
    "from sklearn.model_selection import train_test_split\nX, y = load_iris(return_X_y=True, as_frame=True)\n"
    "X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)"
)


def test_reproducing_a_registering_cell_registers_nothing_unless_asked_and_tags_what_it_registers(
    shell, client, request
):
    name = f"m-{request.node.name[:30]}-{np.random.default_rng().integers(1 << 30)}"
    original = _cell_run(
        shell, client, request, _REGISTERING,
        f"%%track --register model {name}\nmodel = LogisticRegression(max_iter=1000).fit(X_train, y_train)\n"
        "accuracy = model.score(X_test, y_test)",
    )
    assert [int(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [1]

    result = reproduce(original.info.run_id)

    assert result.reproduced, format_report(result)
    assert [int(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [1]  # no new version
    assert result.registration_skipped == (name,) and result.registered == ()
    assert client.get_run(result.run_id).data.tags["nbmlops.registration_skipped"] == name
    assert f"registration skipped: {name}" in format_report(result)

    asked = reproduce(original.info.run_id, register=True)

    assert asked.reproduced, format_report(asked)
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == [1, 2] and asked.registered == (f"{name}/2",)
    assert versions[2].run_id == asked.run_id
    assert versions[2].tags["nbmlops.reproduction_of"] == f"{name}/1"
    assert "nbmlops.reproduction_of" not in versions[1].tags
    assert "nbmlops.registration_skipped" not in client.get_run(asked.run_id).data.tags


# -- the comparison: cell by cell, every step, outputs by content, timings left out ---------------------------------

_PLAIN = "--no-capture metrics data"  # the tests log what they compare themselves


def _names(result) -> list[tuple[str, list[str], list[tuple[str, str, bool]]]]:
    """(run name, metrics compared, (output, how, matched)) per compared run."""
    return [
        (cell.label.split(" (")[0], [m.name for m in cell.metrics], [(o.name, o.how, o.ok) for o in cell.outputs])
        for cell in result.cells
    ]


def test_a_seeded_model_is_reproduced_cell_by_cell_with_its_outputs_and_metric_series(project, client):
    first = _first_run(
        project,
        "seeded.ipynb",
        "import nbmlops\nimport numpy as np\nfrom sklearn.tree import DecisionTreeClassifier",
        f"%%track --name data {_PLAIN}\nrng = np.random.default_rng(0)\nX = rng.normal(size=(80, 3))\n"
        "y = (X[:, 0] + rng.normal(scale=0.5, size=80) > 0).astype(int)\nnbmlops.log_dataset(X, 'X', context='output')",
        f"%%track --name fit {_PLAIN}\nmodel = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)\n"
        "pred = model.predict(X)\nfor depth in (1, 2, 4):\n    nbmlops.log_metric('loss', 1 / depth)\n"
        "nbmlops.log_metric('accuracy', float((pred == y).mean()))\nnbmlops.log_dataset(pred, 'pred', context='output')",
    )

    result = reproduce(first.run_id)

    assert result.verdict == "REPRODUCED" and result.exit_code == 0, format_report(result)
    assert _names(result) == [
        ("data", [], [("X", "same fingerprint", True)]),
        ("fit", ["accuracy", "loss"], [("pred", "same fingerprint", True)]),
        ("notebook run", ["accuracy", "loss"], []),
    ]
    assert result.compared == 6 and result.causes == ()
    fit = result.cells[1]
    assert fit.new.tags["nbmlops.cell_id"] == fit.original.tags["nbmlops.cell_id"] and fit.new.run_id != fit.original.run_id
    loss = fit.metrics[1]
    assert loss.original == loss.new == ((0, 1.0), (1, 0.5), (2, 0.25))
    report = format_report(result)
    assert report.startswith("REPRODUCED: notebook run") and "ok    metric loss: 3 steps, 1.0 ... 0.25" in report
    assert "ok    output pred: same fingerprint" in report


def test_a_metric_name_reused_by_two_cells_is_compared_in_each_cell_not_by_its_last_value(project, client):
    (project / "score.txt").write_text("0.977")
    first = _first_run(
        project,
        "baselines.ipynb",
        "import nbmlops",
        f"%%track --name tree {_PLAIN}\nnbmlops.log_metric('test_score', float(open('score.txt').read()))",
        f"%%track --name dummy {_PLAIN}\nnbmlops.log_metric('test_score', 0.779)",
    )
    assert first.metrics == {"test_score": 0.779}, first.error
    (project / "score.txt").write_text("0.5")  # the first cell's score changes, the last rolled-up value does not

    result = reproduce(first.run_id)

    assert result.verdict == "NOT REPRODUCED" and result.exit_code == 4, format_report(result)
    tree, dummy, whole = result.cells
    assert tree.label.startswith("tree (In [") and ", cell id " in tree.label
    assert result.first_difference == f"{tree.label}: metric test_score: 0.977 -> 0.5"
    assert [m.ok for m in dummy.metrics] == [True]
    (rolled_up,) = whole.metrics
    assert rolled_up.original == ((0, 0.977), (1, 0.779)) and rolled_up.difference == "0.977 -> 0.5 at step 0"
    (cause,) = result.causes  # the file read is no tracked input: nothing recorded explains it
    assert cause.startswith("nothing recorded explains it: no unseeded randomness was flagged")
    report = format_report(result)
    assert report.startswith("NOT REPRODUCED") and f"first difference: {tree.label}: metric test_score" in report
    assert "likely cause: nothing recorded explains it" in report


def test_a_notebook_that_records_no_metric_and_no_output_has_nothing_to_compare_and_exits_6(project, client):
    first = _first_run(
        project, "setup.ipynb", f"%%track --name settings {_PLAIN}\nseed = 42\nlabel = 'baseline'\nprint(label, seed)"
    )

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nbmlops.cli", "reproduce", first.run_id, *args],
            cwd=project, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    done = command("--no-progress")
    assert done.returncode == 6, done.stdout + done.stderr
    assert done.stdout.startswith(f"NOTHING TO COMPARE: notebook run {first.run_id}")
    assert "compared: nothing; the original run recorded no metric and no output dataset" in done.stdout
    bad = command("--atol", "-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "atol" in bad.stderr


@pytest.mark.parametrize("snapshots", [True, False])
def test_changed_predictions_are_not_reproduced_and_the_tagged_randomness_is_the_likely_cause(
    project, client, monkeypatch, snapshots
):
    if not snapshots:
        monkeypatch.setenv("NBMLOPS_SNAPSHOT_MAX_BYTES", "0")
    (project / "answer.txt").write_text("3")
    first = _first_run(
        project,
        "predict.ipynb",
        "import nbmlops\nimport numpy as np",
        # the tag %%track sets for an unseeded draw; the file makes the change the test's own
        f"%%track --name predict {_PLAIN} --tag nbmlops.nondeterministic=np.random.normal_without_a_seed\n"
        "pred = np.arange(10)\npred[3] = int(open('answer.txt').read())\nnbmlops.log_dataset(pred, 'pred', context='output')",
    )
    (project / "answer.txt").write_text("7")

    result = reproduce(first.run_id)

    assert result.verdict == "NOT REPRODUCED" and result.exit_code == 4, format_report(result)
    predict = result.cells[0]
    (output,) = predict.outputs
    if snapshots:
        assert output.how == "content" and output.difference == "position 3: 3 -> 7"
    else:
        assert output.how == "fingerprint only"
        assert output.difference == (
            f"fingerprint {output.original[:12]} -> {output.new[:12]}; content not compared: the original one: "
            "it has no snapshot (not snapshotted: snapshot_max_bytes is 0)"
        )
    assert result.first_difference == f"{predict.label}: output pred: {output.difference}"
    assert result.causes[0] == "an unseeded estimator or random draw in this cell: np.random.normal_without_a_seed"
    assert f"DIFF  output pred: {output.difference}" in format_report(result)


def test_timings_are_excluded_and_numbers_are_compared_within_the_tolerance(project, client):
    (project / "noise.txt").write_text("0")
    first = _first_run(
        project,
        "cv.ipynb",
        "import time\nimport nbmlops\nimport pandas as pd",
        f"%%track --name cv {_PLAIN}\nnoise = float(open('noise.txt').read())\n"
        "cv_results = pd.DataFrame({'test_score': [0.9, 0.8 + noise], 'fit_time': [time.perf_counter(), 0.1]})\n"
        "nbmlops.log_metric('test_score.mean', float(cv_results['test_score'].mean()))\n"
        "nbmlops.log_metric('fit_time.mean', time.perf_counter())\n"
        "nbmlops.log_dataset(cv_results, 'cv_results', context='output')",
    )
    (project / "noise.txt").write_text("1e-7")

    close = reproduce(first.run_id, atol=1e-6)

    assert close.verdict == "REPRODUCED", format_report(close)
    cv, whole = close.cells
    assert cv.excluded == whole.excluded == ("fit_time.mean",)
    assert [m.name for m in cv.metrics] == ["test_score.mean"]
    (output,) = cv.outputs
    assert output.how == "content" and output.ok and output.excluded == ("fit_time",)
    assert output.new != output.original
    excluded = format_report(close).split("excluded (timings):\n")[1]
    assert f"{cv.label}: fit_time.mean" in excluded and f"{cv.label}: output cv_results column(s) fit_time" in excluded

    strict = reproduce(first.run_id)

    assert strict.verdict == "NOT REPRODUCED", format_report(strict)
    before, after = (float(pd.Series([0.9, 0.8 + noise]).mean()) for noise in (0, 1e-7))
    assert strict.first_difference == f"{strict.cells[0].label}: metric test_score.mean: {before!r} -> {after!r}"
    assert strict.cells[0].outputs[0].difference == f"column 'test_score', row 1: 0.8 -> {0.8 + 1e-7!r}"


def _cell(run_id: str, cell_id: str | None = None) -> RunRow:
    tags = {"nbmlops.kind": "cell", **({"nbmlops.cell_id": cell_id} if cell_id else {})}
    return RunRow(run_id, "0", run_id, "FINISHED", 0, None, {}, {}, tags, experiment="e")


def test_cell_runs_are_matched_by_cell_id_else_by_position_and_source():
    sources = {"a": "x = 1", "b": "y = 2", "c": "z = 3", "B": "y = 2", "C": "z = 4", "A": "x = 1"}
    originals = [_cell("a", "id-a"), _cell("b"), _cell("c")]
    news = [_cell("B"), _cell("C"), _cell("A", "id-a")]  # the id-a cell ran last this time

    pairs = match_cells(originals, news, lambda run: sources[run.run_id])

    assert [(old.run_id, new.run_id if new else None) for old, new in pairs] == [("a", "A"), ("b", None), ("c", None)]
    news = [_cell("A", "id-a"), _cell("B"), _cell("C")]
    pairs = match_cells(originals, news, lambda run: sources[run.run_id])
    assert [(old.run_id, new.run_id if new else None) for old, new in pairs] == [("a", "A"), ("b", "B"), ("c", None)]


def test_data_is_compared_by_shape_columns_index_and_values_within_the_tolerance():
    def diff(old, new, **tolerance):
        return first_difference(old, new, tolerance.get("rtol", 1e-9), tolerance.get("atol", 0.0), is_timing)

    frame = pd.DataFrame({"score": [0.5, np.nan, 0.25], "label": ["a", "b", None], "fit_time": [1.0, 2.0, 3.0]})
    changed = frame.assign(fit_time=[9.0, 9.0, 9.0], score=[0.5, np.nan, 0.2500001])
    assert diff(frame, changed) == ("column 'score', row 2: 0.25 -> 0.2500001", ("fit_time",))
    assert diff(frame, changed, atol=1e-6) == (None, ("fit_time",))
    assert diff(frame, frame.assign(label=["a", "c", None]))[0] == "column 'label', row 1: 'b' -> 'c'"
    assert diff(frame, frame.drop(columns="label"))[0] == "shape (3, 3) -> (3, 2)"
    assert diff(frame, frame.rename(columns={"label": "name"}))[0].startswith("columns ['score', 'label', 'fit_time'] ->")
    assert diff(frame, frame.set_axis([0, 1, 5]))[0] == "index at row 2: 2 -> 5"
    assert diff(pd.Series([1, 2], index=["u", "v"]), pd.Series([1, 3], index=["u", "v"]))[0] == "row 'v': 2 -> 3"
    assert diff(np.arange(6).reshape(2, 3), np.array([[0, 1, 2], [3, 9, 5]]))[0] == "position (1, 1): 4 -> 9"
    assert diff(np.zeros(3), np.zeros(4))[0] == "shape (3,) -> (4,)"
    assert diff(np.zeros(3), pd.Series(np.zeros(3)))[0] == "was a ndarray, now a Series"
    assert diff(np.array([np.inf, np.nan]), np.array([np.inf, np.nan])) == (None, ())
