"""The runs view on a tracking server (``http://``): no SQL to count with, so counts probe offsets and pages
come from MLflow's own search; the answers must be the same as on a database store."""

from __future__ import annotations

from pathlib import Path

from nbmlops.tracking import search
from nbmlops.widgets.runs import RunsView
from tests.conftest import mlflow_server

RUNS = 23


def test_runs_view_on_a_tracking_server_counts_pages_sorts_and_filters(tmp_path: Path):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as uri:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("served")
        for i in range(RUNS):
            run = client.create_run(experiment_id, start_time=1_700_000_000_000 + i * 1000, run_name=f"run {i:02d}",
                                    tags={"nbmlops.cell_key": f"cell-{i % 3}"})
            client.log_metric(run.info.run_id, "acc", i / RUNS)
            client.set_terminated(run.info.run_id, "FAILED" if i % 5 == 0 else "FINISHED")

        assert search.count_runs(uri, [experiment_id]) == RUNS
        view = RunsView(uri, [experiment_id], page_size=5)
        assert view.total == RUNS and view.pages == 5 and view.stats["counts"] == 1
        view.page(4)
        assert [r.name for r in view.rows()] == ["run 02", "run 01", "run 00"]
        view.sort_by("metrics.acc", descending=True)
        assert view.rows()[0].name == f"run {RUNS - 1:02d}"
        view.set_filter(status="FAILED", expression="acc >= 0.2")
        assert view.total == len([i for i in range(RUNS) if i % 5 == 0 and i / RUNS >= 0.2])
        assert {c.key: c.runs for c in view.cells()} == {"cell-0": 8, "cell-1": 8, "cell-2": 7}
        view.set_filter(cell="cell-1")
        assert view.total == 8 and {r.cell for r in view.rows()} == {"cell-1"}
