"""The dashboard against a real MLflow store: runs table, compare, charts, models, live refresh, escaping.

The views are driven through their plain methods, the widgets through their values and ``Button.click()``.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import threading
import time
import uuid

import ipywidgets
import numpy as np
import pytest

import nbmlops
from nbmlops.config import resolve_settings
from nbmlops.registry import get_version
from nbmlops.runner.gates import GateSyntaxError
from nbmlops.tracking.search import count_runs, experiment_ids, metric_points, search_page
from nbmlops.tracking.summary import Summary
from nbmlops.widgets.app import _CONTROLS, Dashboard
from nbmlops.widgets.charts import ChartsView
from nbmlops.widgets.live import Live
from nbmlops.widgets.models import ModelsView
from nbmlops.widgets.runs import FilterError, RunsView, metric_filter

EVIL = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
BULK = 300
BASE_MS = 1_700_000_000_000


def _bulk_values(i: int) -> dict:
    """What bulk run ``i`` holds (the tests compute expected counts from this)."""
    acc = (i % 100) / 100
    return {
        "name": f"run {i:03d}",
        "status": "FAILED" if i % 10 == 3 else "FINISHED",
        "cell": f"cell-{i % 4}",
        "params": {"alpha": str(i % 7), "depth": str(3 + i % 3)},
        "metrics": {"acc": acc, "loss": round(1 - acc, 6)},
        "start": BASE_MS + i * 1000,
    }


@pytest.fixture(scope="module")
def bulk(store_uri: str) -> tuple[str, str]:
    """An experiment of BULK finished and failed cell runs, written with MlflowClient: (name, id)."""
    from mlflow.entities import Metric, Param

    from nbmlops.backend.store import open_store

    client = open_store(store_uri, None).client
    name = f"widgets-bulk-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    for i in range(BULK):
        v = _bulk_values(i)
        run = client.create_run(experiment_id, start_time=v["start"], run_name=v["name"],
                                tags={"nbmlops.kind": "cell", "nbmlops.cell_key": v["cell"]})
        client.log_batch(run.info.run_id, metrics=[Metric(k, x, v["start"], 0) for k, x in v["metrics"].items()],
                         params=[Param(k, x) for k, x in v["params"].items()])
        client.set_terminated(run.info.run_id, v["status"], end_time=v["start"] + 500 + i)
    return name, experiment_id


def _expected(predicate) -> list[dict]:
    return [v for v in map(_bulk_values, range(BULK)) if predicate(v)]


def _row_ids(html: str) -> list[str]:
    return re.findall(r"<tr data-run-id='([0-9a-f]+)'", html)


# -- the runs table -----------------------------------------------------------------------------------------


def test_runs_view_counts_sorts_and_pages_without_reading_every_run(bulk, store_uri):
    _, experiment_id = bulk
    view = RunsView(store_uri, [experiment_id], page_size=50)
    assert view.total == BULK and view.pages == 6 and view.describe() == f"{BULK} runs"
    assert [r.name for r in view.rows()[:2]] == [f"run {BULK - 1:03d}", f"run {BULK - 2:03d}"]  # newest first
    assert view.stats["runs_read"] == 50

    view.page(5)
    assert [r.name for r in view.rows()][-1] == "run 000" and len(view.rows()) == 50
    view.page(99)
    assert view.page_number == 5

    view.sort_by("metrics.acc", descending=False)
    assert view.page_number == 0
    values = [r.metrics["acc"] for r in view.rows()]
    assert values == sorted(values) and values[0] == 0.0
    view.sort_by("params.alpha", descending=True)
    assert view.rows()[0].params["alpha"] == "6"
    view.sort_by("name", descending=False)
    assert view.rows()[0].name == "run 000"
    with pytest.raises(FilterError, match="cannot sort by 'duration'"):
        view.sort_by("duration")
    assert "metrics.acc" in view.sortable() and "params.depth" in view.sortable()
    assert view.stats["runs_read"] <= 50 * 6  # one page per change, never the whole experiment


def test_filters_are_pushed_down_status_cell_and_metric_expression(bulk, store_uri):
    _, experiment_id = bulk
    view = RunsView(store_uri, [experiment_id], page_size=50)

    view.set_filter(status="failed")
    assert view.total == len(_expected(lambda v: v["status"] == "FAILED")) == 30
    assert {r.status for r in view.rows()} == {"FAILED"}

    view.set_filter(cell="cell-2")
    assert view.filter_string == "tags.`nbmlops.cell_key` = 'cell-2'"
    assert view.total == BULK // 4 and {r.cell for r in view.rows()} == {"cell-2"}

    view.set_filter(cell="run 042")  # not a cell key: a run name
    assert view.filter_string == "attributes.run_name = 'run 042'"
    assert [r.name for r in view.rows()] == ["run 042"]

    view.set_filter(status="FINISHED", expression="acc > 0.9 and loss < 0.05")
    expected = _expected(lambda v: v["status"] == "FINISHED" and v["metrics"]["acc"] > 0.9 and v["metrics"]["loss"] < 0.05)
    assert view.total == len(expected) > 0
    assert sorted(r.name for r in view.rows()) == sorted(v["name"] for v in expected)

    view.set_filter(expression="0.5 <= acc")  # the gate grammar: flipped, and == / != too
    assert view.total == len(_expected(lambda v: v["metrics"]["acc"] >= 0.5))
    assert metric_filter("acc == 0.5 and `val loss` != 1e-05") == "metrics.`acc` = 0.5 and metrics.`val loss` != 1e-05"
    view.set_filter(expression="acc == 0.5")
    assert view.total == 3


def test_bad_filter_raises_from_the_view_and_shows_in_the_widget(bulk, project, dashboards):
    name, _ = bulk
    dashboard = dashboards(name)
    before = dashboard.runs.filter_string
    with pytest.raises(GateSyntaxError, match="expected a number"):
        dashboard.runs.set_filter(expression="acc >")
    with pytest.raises(FilterError, match="status 'DONE'"):
        dashboard.runs.set_filter(status="done")
    assert dashboard.runs.filter_string == before

    dashboard.expression.value = "acc > > 1"  # what Enter (or leaving the box) sends
    assert "expected a number" in dashboard.error.value and "position" in dashboard.error.value
    assert dashboard.count_label.value == f"{BULK} runs"
    dashboard.expression.value = "acc > 0.9"
    assert dashboard.error.value == ""
    assert dashboard.count_label.value == f"{len(_expected(lambda v: v['metrics']['acc'] > 0.9))} runs"


def test_dashboard_widgets_filter_page_sort_and_carry_dom_hooks(bulk, project, dashboards):
    name, _ = bulk
    dashboard = dashboards(name, page_size=40)
    assert dashboard.wait_loaded(60)  # the controls are built after the first page
    classes = {cls for widget in [dashboard, *_all_widgets(dashboard)] for cls in widget._dom_classes}
    assert {"nbmlops-dashboard", "nbmlops-filter", "nbmlops-status", "nbmlops-apply", "nbmlops-runs",
            "nbmlops-count"} <= classes
    assert dashboard.count_label.value == f"{BULK} runs"
    assert len(_row_ids(dashboard.table.value)) == 40
    assert "class='nbmlops-runs-table'" in dashboard.table.value
    assert dashboard.page_label.value == "page 1 of 8" and dashboard.prev_button.disabled

    dashboard.next_button.click()
    assert dashboard.page_label.value == "page 2 of 8"
    assert "run 259" in dashboard.table.value
    dashboard.prev_button.click()
    assert dashboard.runs.page_number == 0

    dashboard.expression.unobserve_all("value")  # as a browser would: type, then press Apply
    dashboard.expression.value = "acc >= 0.95"
    dashboard.apply_button.click()
    passing = _expected(lambda v: v["metrics"]["acc"] >= 0.95)
    assert dashboard.count_label.value == f"{len(passing)} runs"
    assert len(_row_ids(dashboard.table.value)) == len(passing)

    dashboard.status_filter.value = "FAILED"  # a dropdown applies at once
    both = [v for v in passing if v["status"] == "FAILED"]
    assert dashboard.count_label.value == f"{len(both)} run" + ("" if len(both) == 1 else "s")

    dashboard.status_filter.value = ""
    dashboard.sort_column.value = "metrics.acc"
    dashboard.sort_descending.value = False
    accs = [float(x) for x in re.findall(r"<td class='nbmlops-metric-col'>(0\.9\d*)</td>", dashboard.table.value)]
    assert accs == sorted(accs)

    cell = dashboard.cell_filter.options[1][1]
    dashboard.cell_filter.value = cell
    assert dashboard.runs.filter.cell == cell and all(r.cell == cell for r in dashboard.runs.rows())


def test_first_page_is_the_count_and_table_and_controls_used_at_once_are_built_once(bulk, project, dashboards):
    name, _ = bulk
    failed = _expected(lambda v: v["status"] == "FAILED")
    for _ in range(4):  # the loader thread or this one builds the controls first: either way, once
        dashboard = dashboards(name, page_size=20)
        assert dashboard.count_label.value == f"{BULK} runs" and len(_row_ids(dashboard.table.value)) == 20
        dashboard.status_filter.value = "FAILED"  # at once: built here unless the loader was first
        assert dashboard.count_label.value == f"{len(failed)} runs"
        assert dashboard.wait_loaded(60) and dashboard.error.value == ""
        shown = _all_widgets(dashboard)
        assert sum("nbmlops-status" in widget._dom_classes for widget in shown) == 1
        assert dashboard.status_filter in shown and dashboard.table in shown and dashboard.count_label in shown
        assert dashboard.status_filter.value == "FAILED" and dashboard.count_label.value == f"{len(failed)} runs"
        built = {key for key, value in vars(dashboard).items() if isinstance(value, ipywidgets.Widget)}
        assert built - {"error", "count_label", "table"} == _CONTROLS
    with pytest.raises(AttributeError, match="no attribute 'models_table'"):
        dashboard.models_table  # noqa: B018 (the Models tab's widgets come when it is opened)


def test_static_html_fallback_holds_the_current_page(bulk, project, dashboards):
    name, _ = bulk
    dashboard = dashboards(name, page_size=10)
    dashboard.expression.value = "acc > 0.97"
    bundle = dashboard._repr_mimebundle_()
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(bundle)
    assert "nbmlops-runs-table" in bundle["text/html"]
    assert len(_row_ids(bundle["text/html"])) == len(_expected(lambda v: v["metrics"]["acc"] > 0.97))
    assert "metrics.`acc` &gt; 0.97" in bundle["text/html"]
    assert bundle["text/plain"] == f"nbmlops dashboard: experiment {name!r}, {dashboard.runs.describe()}"


# -- escaping -------------------------------------------------------------------------------------------------


def test_html_in_run_names_params_and_tags_shows_as_text_everywhere(project, request, dashboards):
    experiment = request.node.name
    for value in (0.97, 0.98):
        with nbmlops.track(EVIL, params={"note": EVIL}, tags={"nbmlops.cell_key": EVIL, "owner": EVIL}) as run:
            run.log_metrics({"accuracy": value})
            nbmlops.log_metric("loss", 1 - value)
            nbmlops.log_metric("loss", 0.5 - value / 2)
    nbmlops.flush(60)
    dashboard = dashboards(experiment)
    dashboard.select(*[row.run_id for row in dashboard.runs.rows()])
    comparison = dashboard.compare_selected()
    assert comparison is not None and comparison.field("params", "note").values == (EVIL, EVIL)
    dashboard.tabs.selected_index = 2  # charts: drawn on first view
    dashboard.chart_mode.value = "steps"
    dashboard.metric_choice.value = "loss"
    steps = _figure(dashboard.chart_output)["data"]
    dashboard.chart_mode.value = "runs"
    dashboard.metric_choice.value = "accuracy"
    figure = _figure(dashboard.chart_output)
    points = figure["data"][0]
    assert len(steps) == 2 and all(len(trace["y"]) == 2 for trace in steps)

    htmls = {
        "table": dashboard.table.value,
        "compare": dashboard.compare_view.value,
        "static": dashboard._repr_mimebundle_()["text/html"],
        "chart": dashboard.chart.to_html(),
    }
    texts = {
        "hover": " ".join(points["text"]),
        "steps": " ".join(t["name"] + " ".join(t["text"]) for t in steps),
        "title": figure["layout"]["title"]["text"],
        "details": dashboard.show_details(dashboard.runs.rows()[0].run_id),
    }
    for where, text in {**htmls, **texts}.items():
        assert "<img" not in text, where
    for where in ("table", "compare", "static", "hover", "steps", "details"):
        assert ESCAPED in {**htmls, **texts}[where], where
    assert dashboard.wait_loaded(60)
    assert any(EVIL in label for label, _ in dashboard.cell_filter.options)  # plain-text labels: shown as is
    summary = Summary(name=EVIL, experiment=EVIL, status="FINISHED", duration_s=0.1, params={"p": EVIL})
    assert "<img" not in summary.to_html()


# -- compare ----------------------------------------------------------------------------------------------


def test_compare_two_cell_runs_marks_param_metric_data_and_code_differences(shell, project, dashboards):
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1.0, 2.0, 3.0]})")
    shell.run_cell("%%track --name train\nalpha = 0.5\nscore = alpha * float(df['x'].sum())")
    shell.run_cell("df.loc[0, 'x'] = 10.0")
    shell.run_cell("%%track --name train\nalpha = 0.7\nscore = alpha * float(df['x'].sum())\nextra = 1")
    nbmlops.flush(60)
    dashboard = dashboards(resolve_settings().experiment)
    first, second = sorted(dashboard.runs.rows(), key=lambda r: r.start_time)
    dashboard.table.selected = [first.run_id, second.run_id]  # ticking both in the table
    assert set(dashboard.runs.selected) == {first.run_id, second.run_id}
    assert not dashboard.compare_button.disabled
    dashboard.compare_button.click()
    comparison = dashboard.comparison
    assert comparison is not None and dashboard.tabs.selected_index == 1

    differing = {(f.section, f.key) for f in comparison.differences()}
    assert {("params", "alpha"), ("metrics", "score"), ("params", "extra"), ("data", "df (input)")} <= differing
    assert ("run", "name") not in differing and ("run", "cell") not in differing  # the same cell
    assert ("run", "run id") not in differing  # identities are shown, not marked
    assert not [f for f in comparison.fields if f.section == "environment" and f.differs]
    assert comparison.field("params", "alpha").values == ("0.5", "0.7")

    [code] = comparison.code
    assert code.changed
    assert ("-", "alpha = 0.5") in code.lines and ("+", "alpha = 0.7") in code.lines
    assert ("+", "extra = 1") in code.lines
    html = dashboard.compare_view.value
    assert html.count("class='nbmlops-differs'") == len(comparison.differences())
    assert html.count("class='nbmlops-key'") == len(comparison.differences())  # only the differences
    assert "<span class='nbmlops-del'>-alpha = 0.5</span>" in html
    assert "<span class='nbmlops-add'>+alpha = 0.7</span>" in html

    dashboard.clear_button.click()
    dashboard.select(first.run_id)
    dashboard.compare_selected()
    assert "select two or more runs" in dashboard.compare_view.value


# -- charts -----------------------------------------------------------------------------------------------


def test_charts_plot_a_metric_over_runs_and_a_sweep_as_parallel_coordinates(project, client, request, dashboards):
    experiment_id = client.create_experiment(f"{request.node.name}-{uuid.uuid4().hex[:6]}")
    sweep = client.create_run(experiment_id, run_name="sweep grid",
                              tags={"nbmlops.kind": "sweep", "nbmlops.sweep.size": "4",
                                    "nbmlops.sweep.objective": "accuracy"})
    grid = [(0.1, "gini"), (0.1, "entropy"), (1.0, "gini"), (1.0, "entropy")]
    for index, (alpha, criterion) in enumerate(grid):
        child = client.create_run(experiment_id, run_name=f"combination {index}",
                                  tags={"mlflow.parentRunId": sweep.info.run_id, "nbmlops.kind": "notebook"})
        client.log_param(child.info.run_id, "alpha", str(alpha))
        client.log_param(child.info.run_id, "criterion", criterion)
        client.log_param(child.info.run_id, "seed", "7")  # the same everywhere: no axis
        client.log_metric(child.info.run_id, "accuracy", 0.5 + alpha / 4 + (criterion == "gini") / 10)
        client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(sweep.info.run_id, "FINISHED")
    name = client.get_experiment(experiment_id).name

    charts = ChartsView(RunsView(project_uri(), [experiment_id]))
    parallel = charts.parallel(sweep.info.run_id)
    assert [d.label for d in parallel.dimensions] == ["alpha", "criterion", "accuracy"]
    criterion = parallel.dimensions[1]
    assert criterion.ticktext == ("entropy", "gini") and criterion.values == (1.0, 0.0, 1.0, 0.0)
    assert parallel.colour is not None and parallel.colour.label == "accuracy"
    over = charts.over_runs("accuracy")
    assert len(over.series[0].y) == 4

    dashboard = dashboards(name)
    dashboard.tabs.selected_index = 2
    assert dashboard.sweep_choice.value == sweep.info.run_id
    [trace] = _figure(dashboard.parallel_output)["data"]
    assert trace["type"] == "parcoords"
    assert [d["label"] for d in trace["dimensions"]] == ["alpha", "criterion", "accuracy"]
    assert dashboard.metric_choice.value == "accuracy"
    assert _figure(dashboard.chart_output)["data"][0]["y"] == list(over.series[0].y)
    assert "nbmlops-parallel-table" in dashboard.to_html()
    dashboard.expression.value = "accuracy > 0.75"  # the charts follow the filter
    assert _figure(dashboard.chart_output)["data"][0]["y"] == [0.85]


def project_uri() -> str:
    return resolve_settings().tracking_uri


# -- models -----------------------------------------------------------------------------------------------


def _register(name: str, accuracy: float) -> int:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": accuracy})
        version = nbmlops.register(model, name, evaluation_data=np.arange(4.0).reshape(2, 2), timeout=120)
    nbmlops.flush(60)
    return version.version


def _alias(name: str, alias: str) -> int | None:
    try:
        return get_version(f"{name}@{alias}").version
    except LookupError:
        return None


def test_promote_button_refused_by_a_gate_shows_the_reason_and_keeps_the_alias(project, request, dashboards):
    name = f"w-{uuid.uuid4().hex[:8]}"
    v1 = _register(name, 0.95)
    nbmlops.promote(f"{name}/{v1}", "champion")
    v2 = _register(name, 0.80)
    dashboard = dashboards(request.node.name)
    dashboard.tabs.selected_index = 3
    assert name in dashboard.models_table.value and "@champion=1" in dashboard.models_table.value
    dashboard.model_choice.value = name
    dashboard.version_choice.value = v2
    dashboard.alias_input.value = "champion"
    dashboard.gates_input.value = "accuracy >= 0.9"
    dashboard.promote_button.click()
    assert f"Point {name}@champion (now version {v1}) at version {v2}" in dashboard.confirmation.value
    assert dashboard.confirm_button.layout.display is None  # shown, waiting for the person
    assert _alias(name, "champion") == v1  # asking changes nothing

    dashboard.confirm_button.click()
    assert "REFUSED" in dashboard.outcome.value
    assert "accuracy = 0.8, not &gt;= 0.9" in dashboard.outcome.value
    assert _alias(name, "champion") == v1
    assert "REFUSED" in dashboard.versions_view.value  # the gate history shows the decision
    assert dashboard.confirm_button.layout.display == "none"

    dashboard.gates_input.value = "accuracy >="
    dashboard.promote_button.click()
    assert "expected a number" in dashboard.confirmation.value
    assert dashboard.models.pending is None


def test_confirmed_promotion_moves_the_alias_and_cancel_does_not(project, request):
    name = f"w-{uuid.uuid4().hex[:8]}"
    v1 = _register(name, 0.95)
    models = ModelsView()
    question = models.request_promotion(name, v1, "staging", gates=["accuracy >= 0.9"])
    assert question.startswith(f"Point {name}@staging (unset now) at version {v1}")
    models.cancel_promotion()
    assert models.confirm_promotion().message.startswith("nothing to confirm")
    assert _alias(name, "staging") is None

    models.request_promotion(name, v1, "staging", gates=["accuracy >= 0.9"])
    outcome = models.confirm_promotion()
    assert outcome.accepted and outcome.message == "every check passed"
    assert _alias(name, "staging") == v1
    assert "PROMOTED" in outcome.to_html()
    assert "ACCEPTED" in models.versions_html(name)
    with pytest.raises(ValueError, match="reserved"):
        models.request_promotion(name, v1, "latest")


# -- live -------------------------------------------------------------------------------------------------


def test_live_refresh_picks_up_a_new_run_reading_one_page_not_the_experiment(bulk, project, client, dashboards):
    from mlflow.entities import Metric

    name, experiment_id = bulk
    dashboard = dashboards(name, page_size=25)
    assert dashboard.refresh().active is False and dashboard.live_label.value == "nothing running"
    read_before = dashboard.runs.stats["runs_read"]

    run = client.create_run(experiment_id, run_name="live one", start_time=BASE_MS + BULK * 1000,
                            tags={"nbmlops.kind": "cell", "nbmlops.cell_key": "cell-live"})
    try:
        activity = dashboard.refresh()
        assert activity.active and activity.changed and dashboard.live_label.value == "1 running"
        assert dashboard.count_label.value == f"{BULK + 1} runs"
        assert _row_ids(dashboard.table.value)[0] == run.info.run_id
        assert dashboard.runs.stats["runs_read"] - read_before <= 25 + 1  # the page and the running run
        assert any(key == "cell-live" for _, key in dashboard.cell_filter.options)

        client.log_batch(run.info.run_id, metrics=[Metric("acc", 0.5, BASE_MS, 0)])
        dashboard.refresh()  # a run on the page is running: the page is read again, with its new metric
        assert dashboard.runs.rows()[0].metrics == {"acc": 0.5}
    finally:
        client.set_terminated(run.info.run_id, "FINISHED")
    activity = dashboard.refresh()
    assert not activity.active and activity.changed
    assert dashboard.runs.rows()[0].status == "FINISHED"
    idle = dashboard.runs.stats["runs_read"]
    assert not dashboard.refresh().changed and dashboard.runs.stats["runs_read"] == idle  # nothing read
    client.delete_run(run.info.run_id)


def test_live_thread_follows_a_sweep_with_progress_and_stops_when_it_ends(project, client, request, dashboards):
    experiment_id = client.create_experiment(f"{request.node.name}-{uuid.uuid4().hex[:6]}")
    name = client.get_experiment(experiment_id).name
    sweep = client.create_run(experiment_id, run_name="sweep live",
                              tags={"nbmlops.kind": "sweep", "nbmlops.sweep.size": "3"})
    dashboard = dashboards(name, live=True, interval=0.05)
    assert dashboard.wait_loaded(60)  # the first poll comes after the first page
    assert dashboard._ticker is not None and dashboard._ticker.running
    assert dashboard.progress.layout.display is None and dashboard.progress.description == "0/3"

    children = []
    for index in range(3):
        child = client.create_run(experiment_id, run_name=f"combination {index}",
                                  tags={"mlflow.parentRunId": sweep.info.run_id})
        children.append(child.info.run_id)
        client.set_terminated(child.info.run_id, "FINISHED")
        _wait(lambda done=index + 1: dashboard.progress.value == done, f"progress {index + 1}/3")
    assert dashboard.progress.description == "3/3" and dashboard.count_label.value == "1 run, 3 nested"
    assert "sweep live: 3/3 finished" in dashboard.live_label.value

    client.set_terminated(sweep.info.run_id, "FINISHED")
    _wait(lambda: not dashboard._ticker.running, "the live thread to stop")
    assert dashboard.live_label.value == "nothing running"
    assert dashboard.progress.layout.display == "none"
    assert count_runs(project_uri(), [experiment_id], "attributes.status = 'RUNNING'") == 0


def test_close_stops_the_live_thread(project, client, request):
    experiment_id = client.create_experiment(f"{request.node.name}-{uuid.uuid4().hex[:6]}")
    run = client.create_run(experiment_id, run_name="forever")
    dashboard = Dashboard(client.get_experiment(experiment_id).name, interval=0.05)
    try:
        assert dashboard.wait_loaded(60) and dashboard._ticker is not None and dashboard._ticker.running
    finally:
        dashboard.close()
        client.set_terminated(run.info.run_id, "KILLED")
    assert not [t for t in threading.enumerate() if t.name == "nbmlops-live"]


def test_live_poll_counts_instead_of_reading_when_nothing_changed(bulk, store_uri):
    _, experiment_id = bulk
    view = RunsView(store_uri, [experiment_id], page_size=10)
    live = Live(view)
    live.poll()
    before = dict(view.stats)
    activity = live.poll()
    assert not activity.changed and not activity.active
    assert view.stats["runs_read"] == before["runs_read"] and view.stats["counts"] == before["counts"] + 1


# -- the magic, the package ---------------------------------------------------------------------------------


def test_magic_and_api_open_the_dashboard_of_this_notebook_by_default(shell, project, request, dashboards):
    shell.run_cell("%%track --name one\nacc = 0.5")
    nbmlops.flush(60)
    app = shell.run_line_magic("nbmlops", "dashboard")
    try:
        assert isinstance(app, Dashboard) and app.experiment == request.node.name
        assert app.count_label.value == "1 run"
    finally:
        app.close()
    later = f"{request.node.name} later"
    other = shell.run_line_magic("nbmlops", f"dashboard '{later}'")
    try:
        assert other.count_label.value == "0 runs" and "no experiment named" in other.error.value
        with nbmlops.track("first", experiment=later):
            nbmlops.log_metric("acc", 0.1)
        nbmlops.flush(60)
        other.refresh()  # opened before the experiment's first run: found now
        assert other.count_label.value == "1 run" and other.error.value == ""
        assert other.experiment_choice.value == other.runs.experiment_ids[0]
    finally:
        other.close()
    api = nbmlops.dashboard(live=False)
    try:
        assert api.experiment == request.node.name and api.runs.total == 1
    finally:
        api.close()
    with pytest.raises(Exception, match="one experiment at most"):
        shell.run_line_magic("nbmlops", "dashboard a b")


def test_load_ext_imports_neither_ipywidgets_nor_plotly(tmp_path):
    code = (
        "import sys, nbmlops\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'nbmlops')\n"
        "print(sorted(m for m in ('ipywidgets', 'plotly', 'mlflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_search_pages_counts_and_points_agree_with_mlflow_search_runs(bulk, store_uri, client, request):
    name, experiment_id = bulk
    assert experiment_ids(store_uri, [name, "absent-experiment"]) == [experiment_id]
    for filter_string in ("", "metrics.acc > 0.5", "attributes.status = 'FAILED'", "params.alpha = '3'"):
        runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000)
        assert count_runs(store_uri, [experiment_id], filter_string) == len(runs)
        points = metric_points(store_uri, [experiment_id], filter_string, "acc", limit=40)
        assert [p.run_id for p in points] == [r.info.run_id for r in runs[:40]][::-1]
        for order_by in (["metrics.`acc` DESC"], ["params.`alpha` ASC", "metrics.`loss` DESC"],
                         ["attributes.run_name ASC"], ["tags.`nbmlops.cell_key` DESC"], []):
            for offset in (0, 45):
                page = search_page(store_uri, [experiment_id], filter_string, order_by, offset, 30)
                expected = client.search_runs([experiment_id], filter_string=filter_string, order_by=order_by,
                                              max_results=1000)[offset : offset + 30]
                assert [r.run_id for r in page.rows] == [r.info.run_id for r in expected], (filter_string, order_by)
                assert page.total in (len(runs), None)

    # missing and NaN metrics sort as MLflow sorts them: after every number, NaN first
    odd = client.create_experiment(f"{request.node.name}-{uuid.uuid4().hex[:6]}")
    for index, value in enumerate([0.5, math.nan, None, 0.25]):
        run = client.create_run(odd, start_time=BASE_MS + index, run_name=f"odd {index}")
        if value is not None:
            client.log_metric(run.info.run_id, "acc", value)
    for order_by in (["metrics.`acc` DESC"], ["metrics.`acc` ASC"]):
        page = search_page(store_uri, [odd], "", order_by, 0, 10)
        assert [r.name for r in page.rows] == [r.info.run_name for r in client.search_runs([odd], order_by=order_by)]
    assert [p.name for p in metric_points(store_uri, [odd], "", "acc")] == ["odd 0", "odd 3"]


# -- helpers ----------------------------------------------------------------------------------------------


def _figure(output) -> dict:
    """The plotly figure (JSON) an Output widget of the Charts tab shows."""
    from nbmlops.widgets.figures import MIME_TYPE

    [shown] = output.outputs
    return shown["data"][MIME_TYPE]


def _all_widgets(widget) -> list:
    found = []
    for child in getattr(widget, "children", ()):
        found += [child, *_all_widgets(child)]
    return found


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
