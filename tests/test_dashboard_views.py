"""The dashboard on runs like the quickstart's (issue 14): columns that answer first, sweeps as groups, row
checkboxes, a comparison that shows only what differs under headings that tell runs apart, charts that count each
metric once and say when there is nothing to draw, curves in a run's details, metrics beside model versions, and
colours that follow JupyterLab's theme. Real sqlite MLflow stores throughout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import nbmlops
from nbmlops.config import resolve_settings
from nbmlops.widgets.app import Dashboard
from nbmlops.widgets.charts import ChartsView
from nbmlops.widgets.figures import MIME_TYPE
from nbmlops.widgets.format import STYLE
from nbmlops.widgets.runs import DEFAULT_PARAMS

BASE_MS = 1_760_000_000_000
ESTIMATOR_PARAMS = 27  # as many as the notebook had before its `accuracy` column


@pytest.fixture
def dashboards(dashboards):
    """The conftest's dashboards, each loaded before the test looks at it."""

    def make(*args, **kwargs) -> Dashboard:
        dashboard = dashboards(*args, **kwargs)
        assert dashboard.wait_loaded(60)
        return dashboard

    return make


def _run(client, experiment_id: str, name: str, start: int, *, params=None, metrics=None, tags=None,
         parent: str | None = None, status: str = "FINISHED") -> str:
    from mlflow.entities import Metric, Param

    tags = dict(tags or {})
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, start_time=BASE_MS + start * 1000, run_name=name, tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     metrics=[Metric(k, v, BASE_MS + start * 1000, 0) for k, v in (metrics or {}).items()])
    client.set_terminated(run_id, status, end_time=BASE_MS + start * 1000 + 1500)
    return run_id


def quickstart_like(client, request) -> tuple[str, dict[str, str]]:
    """An experiment like the quickstart's after a person used it: two tracked cells (``split``, ``train`` with 27
    estimator params), a cell sweeping ``C`` in five nested runs, and a headless notebook run with its cell run
    (both carry ``accuracy``: the notebook run's is rolled up from the cell's). Returns (name, run ids by name)."""
    name = f"{request.node.name}-{uuid.uuid4().hex[:6]}"
    experiment_id = client.create_experiment(name)
    cell = {"nbmlops.kind": "cell", "nbmlops.notebook": "/home/me/project/quickstart.ipynb"}
    ids = {}
    ids["split"] = _run(client, experiment_id, "split", 1, params={"test_size": 0.25, "seed": 42},
                        metrics={"n_train": 133, "n_test": 45},
                        tags={**cell, "nbmlops.cell_key": "11394bed", "nbmlops.execution_count": "4"})
    estimator = {f"model.logisticregression__p{i:02d}": i for i in range(ESTIMATOR_PARAMS)}
    ids["train"] = _run(client, experiment_id, "train", 2, params={"C": 0.5, "max_iter": 500, **estimator},
                        metrics={"accuracy": 0.97},
                        tags={**cell, "nbmlops.cell_key": "2cbd4751", "nbmlops.execution_count": "5"})
    ids["sweep"] = _run(client, experiment_id, "sweep", 3, params={"C": "[0.01, 0.1, 1.0]"},
                        tags={**cell, "nbmlops.cell_key": "17a27b6e", "nbmlops.execution_count": "6"})
    for index, c in enumerate((0.01, 0.1, 1.0)):
        ids[f"C={c}"] = _run(client, experiment_id, f"logreg C={c}", 4 + index, params={"C": c},
                             metrics={"accuracy": 0.9 + index / 100}, parent=ids["sweep"])
    ids["headless"] = _run(client, experiment_id, "quickstart", 10, metrics={"accuracy": 0.95},
                           tags={"nbmlops.kind": "notebook", "nbmlops.notebook": "/home/me/project/quickstart.ipynb"})
    ids["headless cell"] = _run(client, experiment_id, "train", 11, params={"C": 0.7}, metrics={"accuracy": 0.95},
                                tags={**cell, "nbmlops.cell_key": "2cbd4751", "nbmlops.execution_count": "3"},
                                parent=ids["headless"])
    for step, value in enumerate([0.9, 0.7, 0.5, 0.4, 0.35, 0.33]):
        client.log_metric(ids["train"], "train_mse", value, step=step)
    return name, ids


def _header(html: str, table: str) -> list[str]:
    head = re.search(rf"<table class='{table}'><thead><tr>(.*?)</tr></thead>", html).group(1)
    return [re.sub(r"<[^>]+>", " ", cell).split()[0] if re.sub(r"<[^>]+>", "", cell).strip() else ""
            for cell in re.findall(r"<th[^>]*>(.*?)</th>", head)]


def _rows(html: str) -> list[tuple[str, str, str]]:
    """(run id, data-ancestors, class) of each table row."""
    return [(run_id, ancestors, css) for run_id, ancestors, css in
            re.findall(r"<tr data-run-id='(\w+)' data-depth='\d+' data-ancestors='([\w ]*)'(?: class='([^']*)')?>", html)]


def _figure(output) -> dict:
    [shown] = output.outputs
    return shown["data"][MIME_TYPE]


# -- the runs table ------------------------------------------------------------------------------------------


def test_runs_table_shows_metrics_first_then_the_users_params_and_estimator_params_only_when_chosen(
        project, client, request, dashboards):
    name, _ = quickstart_like(client, request)
    dashboard = dashboards(name)
    header = _header(dashboard.table.value, "nbmlops-runs-table")
    assert header[:3] == ["", "name", "status"]
    assert header.index("accuracy") < header.index("C")  # metrics first, never after the params
    assert "n_train" in header and header.index("n_train") < header.index("C")
    user = [h for h in header if h in ("C", "max_iter", "test_size", "seed")]
    assert user and len(user) <= DEFAULT_PARAMS
    assert not [h for h in header if h.startswith("model.")]  # estimator params are offered, not shown
    assert "params.model.logisticregression__p00" in dashboard.columns_choice.allowed_tags
    assert dashboard.columns_choice.value == dashboard.runs.shown_columns()
    assert dashboard.runs.shown_columns()[0] == "metrics.accuracy"  # on most runs

    dashboard.columns_choice.value = ["params.model.logisticregression__p03", "metrics.accuracy"]  # as typed
    assert _header(dashboard.table.value, "nbmlops-runs-table")[3:6] == [  # metrics still first
        "accuracy", "model.logisticregression__p03", "cell"]
    assert not dashboard.choose_columns(["accuracy"])  # not a column name (the chooser offers none such)
    assert "metrics.NAME or params.NAME" in dashboard.error.value
    dashboard.default_columns_button.click()
    assert _header(dashboard.table.value, "nbmlops-runs-table") == header and dashboard.error.value == ""


def test_cell_column_names_the_execution_and_notebook_not_a_key(project, client, request, dashboards):
    name, _ = quickstart_like(client, request)
    html = dashboards(name).table.value
    assert "[5] quickstart.ipynb" in html and "quickstart.ipynb (headless)" in html
    assert ">2cbd4751<" not in html  # the cell key is the cell's tooltip only
    options = dict(dashboards(name).cell_filter.options)
    assert "train (2cbd4751) · 2 runs" not in options and any(label.startswith("train · 2 runs") for label in options)


def test_sweep_runs_are_a_collapsed_group_under_their_parent_and_expand(project, client, request, dashboards):
    name, ids = quickstart_like(client, request)
    dashboard = dashboards(name)
    view = dashboard.runs
    assert [r.name for r in view.rows()] == ["quickstart", "sweep", "train", "split"]  # nobody's child, newest first
    assert view.describe() == "4 runs, 4 nested" and dashboard.count_label.value == "4 runs, 4 nested"
    rows = _rows(dashboard.table.value)
    order = [run_id for run_id, _, _ in rows]
    children = [ids[f"C={c}"] for c in (0.01, 0.1, 1.0)]
    assert order[order.index(ids["sweep"]) + 1:order.index(ids["sweep"]) + 4] == children  # in the order they ran
    for run_id, ancestors, css in rows:
        nested = run_id in children or run_id == ids["headless cell"]
        assert (ancestors != "") == nested and ("nbmlops-collapsed" in (css or "")) == nested
    assert f"data-toggle='{ids['sweep']}'" in dashboard.table.value and "3 nested" in dashboard.table.value

    dashboard.table.expanded = [ids["sweep"]]  # the toggle, clicked in the browser
    dashboard.refresh()
    dashboard.show_page(0)  # redrawn: the group stays open
    opened = {run_id: css for run_id, _, css in _rows(dashboard.table.value)}
    assert all("nbmlops-collapsed" not in (opened[c] or "") for c in children)
    assert "nbmlops-collapsed" in opened[ids["headless cell"]]

    dashboard.expression.value = "accuracy >= 0.905"  # a filter lists what matches, nested where its parent is
    assert dashboard.count_label.value == "5 runs"
    assert sorted(r.name for r in view.rows()) == ["logreg C=0.1", "logreg C=1.0", "quickstart", "train", "train"]
    nested = {run_id: ancestors for run_id, ancestors, _ in _rows(dashboard.table.value)}
    assert nested[ids["headless cell"]] == ids["headless"] and nested[ids["C=1.0"]] == ""


def test_row_checkboxes_select_runs_for_compare(project, client, request, dashboards):
    name, ids = quickstart_like(client, request)
    dashboard = dashboards(name)
    assert "type='checkbox' data-select-all" in dashboard.table.value
    assert dashboard.table.value.count("type='checkbox' data-select=") == 8  # every run, nested ones too
    assert not hasattr(dashboard, "selector")
    dashboard.table.selected = [ids["train"], ids["C=0.1"]]  # ticked in the browser
    assert set(dashboard.runs.selected) == {ids["train"], ids["C=0.1"]}
    assert dashboard.selected_label.value == "2 selected" and not dashboard.compare_button.disabled
    assert f"data-select='{ids['train']}' checked" in dashboard.table.value
    dashboard.table.selected = [ids["train"]]  # one unticked
    assert list(dashboard.runs.selected) == [ids["train"]] and dashboard.compare_button.disabled
    dashboard.clear_button.click()
    assert dashboard.table.selected == [] and "checked" not in dashboard.table.value.replace("data-select-all", "")


# -- compare -------------------------------------------------------------------------------------------------


def test_compare_answers_first_metrics_then_params_only_differences_under_name_time_and_id(
        project, client, request, dashboards):
    name, ids = quickstart_like(client, request)
    dashboard = dashboards(name)
    dashboard.table.selected = [ids["train"], ids["headless cell"]]  # both runs are called "train"
    dashboard.compare_button.click()
    html = dashboard.compare_view.value
    headings = re.findall(r"<th title='(\w+)'>(.*?)</th>", html)
    assert [run_id for run_id, _ in headings] == [ids["train"], ids["headless cell"]]
    texts = [re.sub(r"<[^>]+>", " ", heading).split() for _, heading in headings]
    assert texts[0][0] == texts[1][0] == "train" and texts[0] != texts[1]
    for (run_id, _), words in zip(headings, texts):
        assert run_id[:8] in words and re.fullmatch(r"\d\d-\d\d", words[1]) and re.fullmatch(r"[\d:]{8}", words[2])
    sections = re.findall(r"<td class='nbmlops-section' colspan='3'>(\w+)</td>", html)
    assert sections.index("metrics") < sections.index("params")
    assert dashboard.only_differences.value is True
    assert html.count("<tr class='nbmlops-differs'>") == html.count("<td class='nbmlops-key'>")  # only differences
    assert ">accuracy<" in html and ">C<" in html and ">seed<" not in html
    assert "white-space:nowrap" in STYLE and "nbmlops-scroll" in html  # names never wrap letter by letter

    dashboard.only_differences.value = False
    every = dashboard.compare_view.value
    assert every.count("<td class='nbmlops-key'>") > every.count("<tr class='nbmlops-differs'>")
    assert "showing only those" not in every and "showing only those" in html


# -- charts --------------------------------------------------------------------------------------------------


def test_charts_count_a_headless_runs_metric_once_at_its_cell_run(project, client, request, dashboards):
    name, ids = quickstart_like(client, request)
    dashboard = dashboards(name)
    chart = ChartsView(dashboard.runs).over_runs("accuracy")
    [series] = chart.series
    assert len(series.y) == 5  # train, three sweep runs, the headless cell run: not the notebook run again
    assert ids["headless"] not in " ".join(series.text) and "quickstart<br>" not in " ".join(series.text)
    assert "train<br>accuracy = 0.95" in " ".join(series.text)
    steps = ChartsView(dashboard.runs).over_steps("accuracy", [ids["headless"], ids["headless cell"]])
    assert len(steps.series) == 1

    dashboard.tabs.selected_index = 2
    figure = _figure(dashboard.chart_output)
    assert len(figure["data"][0]["y"]) == 5
    sweep = _figure(dashboard.parallel_output)  # the cell's nested runs are a sweep too
    assert [d["label"] for d in sweep["data"][0]["dimensions"]] == ["C", "accuracy"]


def test_charts_tab_shows_a_loading_line_until_drawn_then_plotly_json_with_a_transparent_neutral_theme(
        project, client, request, dashboards):
    name, _ = quickstart_like(client, request)
    dashboard = dashboards(name)
    assert "nbmlops-loading" in dashboard.chart_message.value  # there before the tab is opened
    assert dashboard.chart_output.outputs == () and dashboard.chart_output.layout.display == "none"
    dashboard.tabs.selected_index = 2
    assert dashboard.chart_message.value == "" and dashboard.chart_output.layout.display is None
    [shown] = dashboard.chart_output.outputs
    assert set(shown["data"]) == {MIME_TYPE, "text/html", "text/plain"}
    assert "nbmlops-chart-table" in shown["data"]["text/html"]
    layout = shown["data"][MIME_TYPE]["layout"]
    assert layout["paper_bgcolor"] == layout["plot_bgcolor"] == "rgba(0,0,0,0)"
    assert "template" not in layout and "nbmlops-chart" in dashboard.chart_output._dom_classes
    json.dumps(shown)  # what the Output widget sends: plain JSON


def test_drawing_the_charts_imports_no_plotly_in_the_kernel(project, client, request, tmp_path):
    name, _ = quickstart_like(client, request)
    code = (
        "import sys\n"
        "from nbmlops.widgets.app import Dashboard\n"
        f"d = Dashboard({name!r}, live=False)\n"
        "assert d.wait_loaded(60)\n"
        "d.tabs.selected_index = 2\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'plotly'))\n"
        "print(d.chart is not None and d.parallel is not None)\n"
        "d.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's nbmlops
    result = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]  # both charts drawn, and plotly never imported


def test_charts_with_nothing_to_draw_say_so_in_a_sentence(project, client, request, dashboards):
    name = f"{request.node.name}-{uuid.uuid4().hex[:6]}"
    experiment_id = client.create_experiment(name)
    _run(client, experiment_id, "no metrics", 1, params={"C": 1})
    dashboard = dashboards(name)
    dashboard.tabs.selected_index = 2
    assert "No metrics to plot yet" in dashboard.chart_message.value
    assert "No sweep here yet" in dashboard.sweep_message.value
    assert dashboard.chart_output.layout.display == "none" and dashboard.parallel_output.layout.display == "none"
    assert dashboard.sweep_choice.layout.display == "none"

    _run(client, experiment_id, "scored", 2, metrics={"accuracy": 0.5})
    dashboard.refresh()
    dashboard.expression.value = "accuracy > 0.9"  # nothing passes: the chart says why, not empty axes
    chart = dashboard.chart or dashboard.plot_metric()
    assert chart is not None and chart.series == () and "No run under this filter has logged accuracy" in chart.empty


# -- details, models -----------------------------------------------------------------------------------------


def test_run_details_draw_a_metric_series_as_a_curve(project, client, request, dashboards):
    name, ids = quickstart_like(client, request)
    dashboard = dashboards(name)
    dashboard.table.detail = ids["train"]  # its name, clicked
    html = dashboard.details.value
    assert "nbmlops-detail" in html and "<svg class='nbmlops-detail-curve'" in html
    points = re.search(r"<polyline [^>]*points='([^']+)'", html).group(1).split()
    assert len(points) == 6  # one per step of train_mse
    heights = [float(p.split(",")[1]) for p in points]
    assert heights == sorted(heights)  # falling values: the line goes down the picture (y grows downwards)
    assert "train_mse" in html and "6 steps" in html and "0.33" in html
    assert html.index(">C<") < html.index(">model.logisticregression__p00<")  # the user's params first
    dashboard.table.detail = ""
    assert dashboard.details.value == ""


def test_model_versions_show_their_source_runs_metrics(project, request, dashboards):
    from sklearn.dummy import DummyClassifier

    model_name = f"m-{uuid.uuid4().hex[:8]}"
    for accuracy in (0.81, 0.93):
        model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
        with nbmlops.track("train") as run:
            run.log_metrics({"accuracy": accuracy, "f1": accuracy - 0.1})
            nbmlops.register(model, model_name, timeout=120)
        nbmlops.flush(60)
    dashboard = dashboards(resolve_settings().experiment)
    dashboard.tabs.selected_index = 3
    dashboard.model_choice.value = model_name
    html = dashboard.versions_view.value
    assert _header(html, "nbmlops-versions-table")[:5] == ["version", "created", "aliases", "accuracy", "f1"]
    body = re.search(r"<table class='nbmlops-versions-table'>.*?<tbody>(.*?)</tbody>", html).group(1)
    assert re.findall(r"<tr><td>(\d+)</td><td>[^<]*</td><td>[^<]*</td><td>([\d.]+)</td>", body) == [
        ("2", "0.93"), ("1", "0.81")]


# -- the theme -----------------------------------------------------------------------------------------------


def test_styles_take_theme_colours_with_light_fallbacks_and_tints_for_marked_rows():
    backgrounds = re.findall(r"background:([^;}]+)", STYLE)
    colours = re.findall(r"(?<![-\w])color:([^;}]+)", STYLE)
    for value in backgrounds:
        assert value.startswith(("var(--jp-", "rgba(", "color-mix(", "none")), value
    for value in colours:
        assert value.startswith(("var(--jp-", "inherit", "#fff")), value
    assert "th{background:var(--jp-layout-color2,#f6f8fa);color:var(--jp-ui-font-color1,#1f2328)" in STYLE
    assert "fill:var(--jp-ui-font-color1" in STYLE  # plotly's text in the theme's colour


def test_charts_follow_a_change_of_experiment_while_they_are_looked_at(project, client, request, dashboards):
    name, _ = quickstart_like(client, request)
    empty = client.create_experiment(f"{name}-empty")
    _run(client, empty, "no metrics", 1)
    dashboard = dashboards(name)
    dashboard.tabs.selected_index = 2
    assert dashboard.chart is not None and dashboard.chart.series
    dashboard.table.detail = dashboard.runs.rows()[0].run_id
    dashboard.experiment_choice.value = empty
    assert "No metrics to plot yet" in dashboard.chart_message.value
    assert dashboard.chart_output.layout.display == "none" and dashboard.details.value == ""
