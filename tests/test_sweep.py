"""Parameter sweeps: real papermill executions in a process pool and on a real Dask cluster, read back
from real MLflow stores (the shared sqlite one, and a tracking server started for the Dask test)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from nbmlops.exceptions import SweepError
from nbmlops.journal import list_journals
from nbmlops.runner.gates import GateSyntaxError, evaluate_gate, infer_maximize, parse_gate
from nbmlops.runner.grid import combinations, parse_grid
from nbmlops.runner.parameters import ParameterError
from nbmlops.runner.ranking import SweepResult, format_table
from nbmlops.runner.reports import write_junit
from nbmlops.runner.sweep import run_sweep
from nbmlops.runner.sweep_worker import SweepRun
from tests.conftest import mlflow_server, runs_of
from tests.test_runner import notebook


def train_notebook(project: Path) -> Path:
    return notebook(
        project / "train.ipynb",
        "%load_ext nbmlops",
        "%%track --name fit\nscore = alpha * depth",
        "assert not (alpha == 10 and depth == 3), 'diverged'",
        parameters="alpha = 1.0\ndepth = 2",
    )


# -- grids and combinations -------------------------------------------------------------------------


def test_grid_values_are_typed_like_parameter_values():
    grid = parse_grid(["alpha=0.1,1,10", "flag = True,False,None", "name=a, b c", "lr=1e-3"])
    assert grid == {"alpha": [0.1, 1, 10], "flag": [True, False, None], "name": ["a", "b c"], "lr": [0.001]}
    assert [type(v) for v in grid["alpha"]] == [float, int, int]


@pytest.mark.parametrize("spec", ["alpha", "=1,2", "alpha=", "alpha=1,,2", "1x=2", "alpha=1,1"])
def test_malformed_grid_specs_are_usage_errors_naming_the_spec(spec):
    with pytest.raises(SweepError, match="grid") as caught:
        parse_grid([spec])
    assert isinstance(caught.value, ValueError) and spec in str(caught.value)


def test_a_parameter_swept_twice_is_refused():
    with pytest.raises(SweepError, match='grid "alpha=3": alpha is already swept'):
        parse_grid(["alpha=1,2", "alpha=3"])


def test_combinations_cover_the_grid_in_a_stable_order():
    grid = {"a": [1, 2], "b": ["x", "y", "z"]}
    assert combinations(grid) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
        {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"},
    ]
    assert combinations({}) == [{}]
    assert combinations(grid, random=6) == combinations(grid, random=100) == combinations(grid)


def test_random_combinations_are_distinct_reproducible_and_never_list_a_huge_grid():
    grid = {f"p{i}": list(range(10)) for i in range(12)}  # 10**12 combinations
    drawn = combinations(grid, random=50, seed=7)
    assert len(drawn) == 50 and len({tuple(c.values()) for c in drawn}) == 50
    assert drawn == combinations(grid, random=50, seed=7)
    assert drawn != combinations(grid, random=50, seed=8)
    small = {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert all(c in combinations(small) for c in combinations(small, random=4, seed=1))
    with pytest.raises(SweepError, match="at least 1"):
        combinations(small, random=0)


@pytest.mark.parametrize("name", ["loss", "val_loss", "trainRMSE", "error_rate", "mae", "val/mse", "logloss", "WER"])
def test_losses_and_errors_are_minimized(name):
    assert infer_maximize(name) is False


@pytest.mark.parametrize("name", ["accuracy", "f1", "r2", "roc_auc", "score", "lossless_ratio", "neg_mean_squared_error",
                                  "neg_log_loss"])
def test_other_metrics_are_maximized(name):
    assert infer_maximize(name) is True


def test_exit_code_failure_wins_over_gates():
    passed = evaluate_gate(parse_gate("score > 1"), {"score": 2})
    failed = evaluate_gate(parse_gate("score > 1"), {"score": 0})

    def result(*runs: SweepRun) -> SweepResult:
        return SweepResult(Path("n.ipynb"), "k", None, None, "e", runs, None, None, None, 0.0)

    ok = SweepRun(0, {"a": 1}, "FINISHED", gates=(passed,))
    gated = SweepRun(1, {"a": 2}, "FINISHED", gates=(failed,))
    broken = SweepRun(2, {"a": 3}, "TIMEOUT")
    assert (result(ok).exit_code, result(ok, gated).exit_code, result(ok, gated, broken).exit_code) == (0, 3, 1)
    assert [r.notebook for r in result(gated, ok).reports()] == ["n.ipynb[a=1]", "n.ipynb[a=2]"]


# -- local sweeps ------------------------------------------------------------------------------------


def test_local_sweep_records_a_sweep_run_parent_of_every_notebook_run(project, client, request):
    path = train_notebook(project)
    result = run_sweep(
        path, parse_grid(["alpha=0.5,10", "depth=2,3"]), workers=2, gates=["score >= 1.2"], objective="score",
        progress=False,
    )
    # scores: #0 0.5*2=1, #1 0.5*3=1.5, #2 10*2=20, #3 10*3=30 but its notebook fails after the cell
    assert [r.index for r in result.runs] == [2, 1, 0, 3]
    assert [r.status for r in result.runs] == ["FINISHED"] * 3 + ["FAILED"]
    assert result.maximize is True and result.best is result.runs[0] and result.best.metrics == {"score": 20}
    assert "AssertionError: diverged" in result.runs[-1].error and result.runs[-1].metrics == {"score": 30}
    assert result.exit_code == 1
    gates = {r.index: r.gates_passed for r in result.runs}
    assert gates == {0: False, 1: True, 2: True, 3: True} and result.runs[-1].gates == ()

    runs = runs_of(client, request.node.name)
    by_kind: dict[str, list] = {}
    for run in runs:
        by_kind.setdefault(run.data.tags["nbmlops.kind"], []).append(run)
    (sweep,) = by_kind["sweep"]
    assert sweep.info.run_id == result.run_id and sweep.info.status == "FINISHED"
    assert sweep.info.run_name == "sweep train"
    assert sweep.data.params == {"grid.alpha": "[0.5, 10]", "grid.depth": "[2, 3]"}
    assert sweep.data.metrics == {"best_score": 20}
    assert {k: sweep.data.tags[k] for k in ("nbmlops.sweep.size", "nbmlops.sweep.finished", "nbmlops.sweep.failed",
                                            "nbmlops.sweep.best_index", "nbmlops.sweep.best_run_id")} == {
        "nbmlops.sweep.size": "4", "nbmlops.sweep.finished": "3", "nbmlops.sweep.failed": "1",
        "nbmlops.sweep.best_index": "2", "nbmlops.sweep.best_run_id": result.best.run_id,
    }
    notebooks = {run.info.run_id: run for run in by_kind["notebook"]}
    assert set(notebooks) == {r.run_id for r in result.runs}
    for outcome in result.runs:
        run = notebooks[outcome.run_id]
        assert run.data.tags["mlflow.parentRunId"] == result.run_id
        assert run.data.tags["nbmlops.sweep"] == result.run_key
        assert run.data.tags["nbmlops.sweep.index"] == str(outcome.index)
        assert run.data.params == {"alpha": str(outcome.params["alpha"]), "depth": str(outcome.params["depth"])}
        assert run.info.status == ("FAILED" if outcome.index == 3 else "FINISHED")
        assert run.data.tags.get("nbmlops.gates") == (None if outcome.index == 3 else
                                                      "passed" if outcome.gates_passed else "failed")
        executed = project / ".nbmlops" / "outputs" / f"sweep-{result.run_key}" / f"{outcome.index}.ipynb"
        shown = [o["data"]["text/plain"] for c in nbformat.read(executed, as_version=4).cells
                 for o in c.get("outputs", []) if "nbmlops run 'fit'" in o.get("data", {}).get("text/plain", "")]
        # the summaries say where their runs are now, not "journaled; ... delivers it"
        assert shown and all("journaled" not in text and "/runs/" in text for text in shown), shown
    cells = by_kind["cell"]
    assert sorted(run.data.tags["mlflow.parentRunId"] for run in cells) == sorted(notebooks)
    assert all(run.info.run_name == "fit" for run in cells)
    assert len(list_journals(project / ".nbmlops" / "journal")) <= 1  # only this process's: workers closed theirs

    table = format_table(result).splitlines()
    assert table[0].startswith("sweep train.ipynb: 4 run(s), 1 failed") and "ranked by score (maximized)" in table[0]
    assert table[1].split() == ["#", "status", "alpha", "depth", "score", "gates", "run"]
    rows = [line.split() for line in table[2:6]]
    assert rows[0][:6] == ["*", "2", "FINISHED", "10", "2", "20"] and rows[0][-1] == result.best.run_id
    assert [row[0] for row in rows[1:]] == ["1", "0", "3"]
    assert f"best: #2 alpha=10, depth=2: score = 20 (run {result.best.run_id})" in table
    assert any(line.startswith("failed: #3 alpha=10, depth=3:") and "diverged" in line for line in table)

    write_junit(project / "sweep.xml", result.reports())
    suite = ET.parse(project / "sweep.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("7", "2")  # 4 notebooks + 3 gates; #3 and #0's gate


def test_bad_parameters_or_gates_are_refused_before_any_kernel_starts(project, client, request):
    path = train_notebook(project)
    with pytest.raises(ParameterError, match="'gamma'"):
        run_sweep(path, {"alpha": [1, 2], "gamma": [3]}, progress=False)
    with pytest.raises(SweepError, match="alpha both fixed and swept"):
        run_sweep(path, {"alpha": [1, 2]}, fixed={"alpha": 3}, progress=False)
    with pytest.raises(GateSyntaxError):
        run_sweep(path, {"alpha": [1, 2]}, gates=["score >> 1"], progress=False)
    with pytest.raises(SweepError, match="no combinations"):
        run_sweep(path, {"alpha": []}, progress=False)
    with pytest.raises(SweepError, match="workers must be at least 1"):
        run_sweep(path, {"alpha": [1]}, workers=0, progress=False)
    with pytest.raises(FileNotFoundError):
        run_sweep(project / "missing.ipynb", {"alpha": [1]}, progress=False)
    assert runs_of(client, request.node.name) == []
    assert not (project / ".nbmlops" / "outputs").exists()


# -- Dask ---------------------------------------------------------------------------------------------


def test_dask_with_a_local_store_is_refused_naming_the_store(project, client, request, store_uri):
    with pytest.raises(SweepError) as caught:
        run_sweep(train_notebook(project), {"alpha": [1, 2]}, dask="tcp://127.0.0.1:8786", progress=False)
    message = str(caught.value)
    assert store_uri[len("sqlite:///"):] in message and "MLflow tracking server" in message
    assert runs_of(client, request.node.name) == []


def test_dask_sweep_on_a_local_cluster_records_everything_on_the_server(project, monkeypatch, request):
    from distributed import LocalCluster
    from mlflow import MlflowClient

    path = train_notebook(project)
    monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT")  # the server stores artifacts
    with mlflow_server(project / "server") as uri, LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        # the workers were started with the sqlite store in their environment: the sweep must tell them
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        result = run_sweep(
            path, {"alpha": [0.5, 2.0], "depth": [3]}, dask=cluster.scheduler_address, objective="score", progress=False
        )
        assert [(r.index, r.status, r.metrics) for r in result.runs] == [
            (1, "FINISHED", {"score": 6}), (0, "FINISHED", {"score": 1.5})
        ]
        assert result.exit_code == 0 and result.best.index == 1 and result.url.startswith(uri)
        server = MlflowClient(uri)
        runs = runs_of(server, request.node.name)
        kinds = sorted(run.data.tags["nbmlops.kind"] for run in runs)
        assert kinds == ["cell", "cell", "notebook", "notebook", "sweep"]
        sweep = next(run for run in runs if run.data.tags["nbmlops.kind"] == "sweep")
        assert sweep.info.run_id == result.run_id and sweep.data.tags["nbmlops.sweep.backend"] == "dask"
        assert sweep.data.metrics == {"best_score": 6}
        for run in runs:
            if run.data.tags["nbmlops.kind"] == "notebook":
                assert run.data.tags["mlflow.parentRunId"] == result.run_id and run.info.status == "FINISHED"
                assert run.data.tags["nbmlops.pid"] != str(os.getpid())
                assert {a.path for a in server.list_artifacts(run.info.run_id, "notebook")} >= {"notebook/train.ipynb"}


def test_sweep_started_from_a_notebook_cell_spawns_its_workers(shell, client, request):
    """IPython's ``__main__`` has no ``__spec__``; spawned workers must start all the same."""
    from tests.test_runner import notebook

    path = notebook(Path.cwd() / "n.ipynb", "x = alpha * 2", parameters="alpha = 1")
    shell.user_ns["path"] = path
    result = shell.run_cell(
        "from nbmlops.runner import run_sweep\n"
        "result = run_sweep(path, {'alpha': [1, 2]}, workers=2, progress=False)\n"
        "result.exit_code"
    )
    assert result.error_in_exec is None, result.error_in_exec
    assert result.result == 0
    assert len(runs_of(client, request.node.name)) == 3  # the sweep run and two notebook runs
