"""The ``%%track`` summary as a person reads it: plain HTML (no widget), metrics first with coloured deltas
(never ``+0``), params with the changed ones flagged against the previous run of the same cell, curves for
series, "+N more" in a ``<details>``, every user string escaped; updated in place in a real kernel once its run
is in the store (its link; after a restart, the previous run from the store); and, in a notebook executed by
``nbmlops run``, rewritten with its final state once the runner has delivered it."""

from __future__ import annotations

import json
import math
import queue
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbmlops.tracking.scraps import MIME_TYPE
from nbmlops.tracking.series import MetricSeries, thin
from nbmlops.tracking.summary import MAX_ITEMS, Summary, sparkline
from nbmlops.tracking.values import lower_is_better
from tests.conftest import free_port
from tests.test_kernel import KERNEL_TIMEOUT, Kernel, kernel_env

EVIL = "<img src=x onerror=alert(1)>"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: the elements the summary is made of: anything else in its HTML came from a user string
SUMMARY_TAGS = {"div", "b", "span", "a", "table", "tbody", "tr", "th", "td", "details", "summary", "svg", "path",
                "circle"}


class _Elements(HTMLParser):
    """The tags and attribute names of an HTML text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)


def elements(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    return parser


def summary(**fields: Any) -> Summary:
    return Summary(**{"name": "train", "experiment": "exp", "status": "FINISHED", "duration_s": 0.5, **fields})


def curve_points(page: str) -> list[int]:
    """How many points each curve of the page is drawn with."""
    return [len(re.findall(r"[ML]-?[\d.]+ -?[\d.]+", d)) for d in re.findall(r"<path d='([^']*)'", page)]


# -- HTML and text -------------------------------------------------------------------------------------------


def test_hostile_names_and_values_are_escaped_everywhere_in_the_html():
    hostile = summary(
        name=EVIL, experiment=EVIL, status=EVIL, params={EVIL: EVIL, "C": EVIL}, metrics={EVIL: 1.0, "loss": 0.5},
        series={EVIL: [1.0, 0.5]}, steps={EVIL: 2}, previous={EVIL: 2.0}, previous_params={"C": EVIL + "2"},
        datasets={EVIL: EVIL}, outputs={EVIL: "0" * 32}, nondeterministic=[EVIL], registered=EVIL,
        url="http://x/'\"><script>alert(1)</script>",
    )
    page = hostile.to_html()
    found = elements(page)
    assert set(found.tags) <= SUMMARY_TAGS, set(found.tags) - SUMMARY_TAGS
    assert not any(name.startswith("on") for name in found.attributes), found.attributes
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert EVIL in hostile.to_text()  # the text form is text: shown as is


def test_a_changed_param_is_flagged_old_to_new_and_unchanged_ones_are_not():
    shown = summary(params={"C": "0.05", "max_iter": "200", "solver": "saga"},
                    previous_params={"C": "0.5", "max_iter": "200", "penalty": "l2"})
    page = shown.to_html()
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page)
    [changed] = [row for row in rows if "nbmlops-changed" in row]
    assert ">C<" in changed and re.search(r"line-through[^>]*>0\.5</span> &#8594; <b[^>]*>0\.05</b>", changed), changed
    [unchanged] = [row for row in rows if ">max_iter<" in row]
    assert "nbmlops-changed" not in unchanged and "nbmlops-param-new" not in unchanged
    assert "nbmlops-param-new" in next(row for row in rows if ">solver<" in row)
    assert "nbmlops-param-removed" in next(row for row in rows if ">penalty<" in row)
    text = shown.to_text()
    assert "C=0.05 (was 0.5)" in text and "max_iter=200," in text and "solver=saga (new)" in text
    assert "removed: penalty (was l2)" in text
    # with no previous run there is nothing to flag
    assert "nbmlops-changed" not in summary(params={"C": "0.05"}).to_html()


def test_cell_params_come_before_estimator_params_and_a_changed_one_is_never_cut():
    params = {f"model.p{i}": str(i) for i in range(20)} | {"C": "0.05", "epochs": "30"}
    previous = dict(params, **{"model.p19": "old", "C": "0.05"})
    shown = summary(params=params, previous_params=previous)
    names = re.findall(r"<td style='[^']*'>([\w.]+)</td>", shown.to_html())
    assert names[:2] == ["C", "epochs"] and names[2] == "model.p0"
    visible = shown.to_html().split("<details")[0]
    assert ">model.p19<" in visible and "nbmlops-changed" in visible  # past the cut, but changed: shown
    text = shown.to_text()
    assert text.index("C=0.05") < text.index("model.p0=") and "model.p19=19 (was old)" in text


def test_deltas_are_coloured_by_direction_and_never_plus_zero():
    shown = summary(
        metrics={"acc": 0.9, "val_loss": 0.2, "rmse": 1.5, "neg_mean_squared_error": -0.1, "same": 3.0, "fresh": 1.0},
        previous={"acc": 0.8, "val_loss": 0.3, "rmse": 1.0, "neg_mean_squared_error": -0.2, "same": 3.0},
    )
    page = shown.to_html()
    rows = {re.search(r">([\w.]+)</td>", row).group(1): row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page)
            if "</td>" in row}
    assert "nbmlops-delta-better" in rows["acc"] and "&#9650;" in rows["acc"]  # higher accuracy: better, up
    assert "nbmlops-delta-better" in rows["val_loss"] and "&#9660;" in rows["val_loss"]  # lower loss: better
    assert "nbmlops-delta-worse" in rows["rmse"]
    assert "nbmlops-delta-better" in rows["neg_mean_squared_error"]  # a negated error: higher is better
    assert "nbmlops-delta" not in rows["same"] and "nbmlops-delta" not in rows["fresh"]
    assert "var(--jp-success-color1" in rows["acc"] and "var(--jp-error-color1" in rows["rmse"]
    text = shown.to_text()
    assert "acc=0.9 (+0.1)" in text and "same=3," in text and "+0)" not in text and "(+0" not in page
    assert "nbmlops-delta" not in summary(metrics={"acc": 0.9}).to_html()  # no previous run: no delta


@pytest.mark.parametrize("name, lower", [
    ("loss", True), ("val_loss", True), ("train_mse", True), ("test_RMSE", True), ("mae", True), ("fit_time", True),
    ("logloss", True), ("trainError", True), ("neg_log_loss", False), ("accuracy", False), ("f1", False),
    ("r2", False), ("auc", False), ("precision", False),
])
def test_which_metrics_improve_downwards(name: str, lower: bool):
    assert lower_is_better(name) is lower


def test_long_lists_show_the_rest_in_a_details_element():
    shown = summary(metrics={f"m{i:02}": float(i) for i in range(MAX_ITEMS + 5)},
                    params={f"p{i:02}": str(i) for i in range(MAX_ITEMS + 2)})
    page = shown.to_html()
    metrics_part = page[page.index("nbmlops-summary-metrics"):page.index("nbmlops-summary-params")]
    before, details = metrics_part.split("<details", 1)
    assert before.count("<tr style=") == MAX_ITEMS and details.count("<tr style=") == 5
    assert ">+5 more metrics</summary>" in details and "m16" in details and "m16" not in before
    assert ">+2 more params</summary>" in page
    text = shown.to_text()
    assert f"m{MAX_ITEMS - 1:02}=" in text and f"m{MAX_ITEMS:02}=" not in text and "+5 more" in text


def test_a_series_is_a_curve_with_its_first_last_and_lowest_values():
    values = [1.0 / (i + 1) + (0.2 if i > 20 else 0.0) for i in range(30)]  # lowest at step 20, then up
    shown = summary(metrics={"val_mse": values[-1], "acc": 0.9}, series={"val_mse": values}, steps={"val_mse": 30})
    page = shown.to_html()
    row = next(row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page) if ">val_mse<" in row)
    assert "<svg class='nbmlops-curve'" in row and curve_points(row) == [30]
    assert "1 &#8594; 0.233333" in row and "min 0.047619" in row and "30 steps" in row
    assert "<svg" not in next(row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page) if ">acc<" in row)
    assert "stroke:var(--jp-brand-color1" in row
    text = shown.to_text()
    assert f"val_mse=1 .. 0.233333 (30 steps, min 0.047619) {sparkline(values)}" in text
    # a long series is drawn with at most a curve's points; gaps where a value is not finite
    long = [math.sin(i / 50) for i in range(10_000)]
    assert max(curve_points(summary(metrics={"s": 0.0}, series={"s": long}).to_html())) <= 96
    gappy = summary(metrics={"s": 1.0}, series={"s": [1.0, math.nan, 2.0, 3.0]}).to_html()
    assert re.search(r"d='M[\d.]+ [\d.]+ M[\d.]+ [\d.]+ L", gappy), gappy
    assert "<svg" not in summary(metrics={"s": 1.0}, series={"s": [math.nan, math.nan]}).to_html()


def test_the_html_is_plain_self_styled_and_follows_the_theme():
    page = summary(params={"a": "1", "b": "2"}, metrics={"m": 1.0}, url="http://127.0.0.1:5000/#/experiments/1/runs/x").to_html()
    bundle = summary(run_key="0" * 32).mimebundle()
    assert set(bundle) == {"text/plain", "text/html", MIME_TYPE} and WIDGET_VIEW not in bundle
    assert "<style" not in page and "<script" not in page and "class='nbmlops-summary'" in page
    assert re.search(r"<td style='padding:1px 8px;line-height:16px", page)
    for variable in ("--jp-ui-font-color1", "--jp-border-color2", "--jp-rendermime-table-row-background",
                     "--jp-success-color1", "--jp-content-link-color", "--jp-code-font-family"):
        assert f"var({variable}, " in page, variable  # a theme variable, with a fallback outside JupyterLab
    assert "open in MLflow" in page and "href='http://127.0.0.1:5000/#/experiments/1/runs/x'" in page


def test_a_handed_off_summary_travels_in_its_payload_and_comes_back_in_order_through_a_notebook_file(tmp_path):
    shown = summary(
        params={"zeta": "1", "alpha": "2"}, metrics={"z_loss": 0.5, "acc": math.inf},
        series={"z_loss": [1.0, 0.5]}, steps={"z_loss": 2}, previous_params={"zeta": "0"},
        datasets={"df": "a" * 32}, run_key="1" * 32, handed_off=True,
    )
    notebook = new_notebook()
    notebook.cells.append(new_code_cell("x", outputs=[nbformat.v4.new_output("display_data", data=shown.mimebundle())]))
    nbformat.write(notebook, tmp_path / "n.ipynb")  # notebook files sort keys
    payload = nbformat.read(tmp_path / "n.ipynb", as_version=4).cells[0].outputs[0].data[MIME_TYPE]
    back = Summary.from_dict(payload["summary"])
    assert list(back.params) == ["zeta", "alpha"] and list(back.metrics) == ["z_loss", "acc"]
    assert back.metrics["acc"] == math.inf and back.to_html() == shown.to_html() and back.to_text() == shown.to_text()
    assert "summary" not in summary(run_key="1" * 32).mimebundle()[MIME_TYPE]  # only a headless run's carries it
    with pytest.raises(ValueError):
        Summary.from_dict({"name": "x", "experiment": "e", "status": "FINISHED", "duration_s": 1,
                           "metrics": [["a", "not a number"]]})


def test_a_metric_series_stays_bounded_and_keeps_its_ends_and_extremes():
    series = MetricSeries()
    values = [math.sin(i / 300) * (1 + i / 1e5) for i in range(100_000)]
    for value in values:
        series.add(value)
    assert series.count == 100_000 and len(series.values) <= MetricSeries.LIMIT
    assert series.values[0] == values[0] and series.values[-1] == values[-1]
    assert min(series.values) == min(values) and max(series.values) == max(values)
    assert thin([3.0, 1.0, 2.0], 10, float) == [3.0, 1.0, 2.0]


# -- in a real IPython shell ---------------------------------------------------------------------------------

LOOP_CELL = """%%track --name loop
import nbmlops
C = {C}
for epoch in range(30):
    nbmlops.log_metric("train_mse", 1 / (epoch + 1))
    nbmlops.log_metric("val_mse", 1.2 / (epoch + 1) + 0.01 * epoch)
"""


def test_a_tracked_loop_shows_curves_and_the_changed_param_of_the_second_run(shell, capsys):
    shell.run_cell(LOOP_CELL.format(C=0.5))
    shell.run_cell(LOOP_CELL.format(C=0.05))
    second = capsys.readouterr().out.split("nbmlops run 'loop'")[-1]
    assert "C=0.05 (was 0.5)" in second
    assert re.search(r"train_mse=1 \.\. 0\.0333333 \(30 steps\) [\u2581-\u2588]+", second), second
    assert "val_mse=1.2 .. 0.33 (30 steps, min 0.209091)" in second and "(+0" not in second


# -- in a real kernel ----------------------------------------------------------------------------------------


def until(kernel: Kernel, predicate, what: str, timeout: float = KERNEL_TIMEOUT) -> list[dict[str, Any]]:
    """Every iopub message (whatever request it answers) until one satisfies ``predicate``."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not (messages and predicate(messages[-1])):
        assert time.monotonic() < deadline, f"no {what} in {[m['msg_type'] for m in messages]}"
        try:
            messages.append(kernel.kc.get_iopub_msg(timeout=1))
        except queue.Empty:
            continue
    return messages


def idle(msg_id: str):
    return lambda m: (m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
                      and m["content"]["execution_state"] == "idle")


def show_and_update(kernel: Kernel, code: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``code`` (a tracked cell) and then another cell; return the summary as first displayed and the
    update that brings its link, which must answer the tracked cell's request (where JupyterLab applies it)."""
    cell = kernel.kc.execute(code)
    messages = until(kernel, idle(cell), "end of the tracked cell")
    later = kernel.kc.execute("import time; time.sleep(0.5)")
    messages += until(kernel, idle(later), "end of the next cell")
    [shown] = [m for m in messages if m["msg_type"] == "display_data" and MIME_TYPE in m["content"]["data"]]
    assert not [m for m in messages if m["msg_type"].startswith("comm_")], "the summary opened a widget"
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    if not updates:
        updates = until(kernel, lambda m: m["msg_type"] == "update_display_data", "update of the summary")[-1:]
    [update] = updates
    assert update["parent_header"]["msg_id"] == cell
    assert update["content"]["transient"]["display_id"] == shown["content"]["transient"]["display_id"]
    return shown["content"], update["content"]


def test_in_a_kernel_the_summary_is_plain_html_updated_in_place_with_its_link_and_after_a_restart_the_previous_run(
    tmp_path: Path, store_uri: str
):
    from mlflow import MlflowClient

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'summary-kernel'\n")
    experiment = "summary-in-a-kernel"
    kernel = Kernel(tmp_path, kernel_env(store_uri, NBMLOPS_EXPERIMENT=experiment))
    try:
        kernel.ok("%load_ext nbmlops")
        shown, update = show_and_update(kernel, LOOP_CELL.format(C=0.5))
        assert WIDGET_VIEW not in shown["data"] and set(shown["data"]) == {"text/plain", "text/html", MIME_TYPE}
        assert "syncing to the tracking store" in shown["data"]["text/html"]
        assert "nbmlops-curve" in shown["data"]["text/html"]
        [run] = MlflowClient(store_uri).search_runs([MlflowClient(store_uri).get_experiment_by_name(experiment).experiment_id])
        link = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        assert link in update["data"]["text/html"] and "open in MLflow" in update["data"]["text/html"]
        assert link in update["data"]["text/plain"] and WIDGET_VIEW not in update["data"]
        kernel.ok("import nbmlops\nnbmlops.flush(60)")

        kernel.km.restart_kernel(now=True)  # the kernel forgets the previous run: the store remembers it
        kernel.kc.wait_for_ready(timeout=KERNEL_TIMEOUT)
        kernel.ok("%load_ext nbmlops")
        shown, update = show_and_update(kernel, LOOP_CELL.format(C=0.05))
        assert "nbmlops-changed" not in shown["data"]["text/html"]
        assert "nbmlops-changed" in update["data"]["text/html"] and "C=0.05 (was 0.5)" in update["data"]["text/plain"]
    finally:
        kernel.close()


# -- in a notebook executed by `nbmlops run` -------------------------------------------------------------------


def headless_notebook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text("[project]\nname = 'summary-headless'\n")
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = new_code_cell("C = 0.5")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, new_code_cell("%load_ext nbmlops"),
                      new_code_cell(LOOP_CELL.replace("C = {C}", "acc = round(0.9 - C / 10, 4)"))]
    nbformat.write(notebook, folder / "small.ipynb")
    return folder / "small.ipynb"


def nbmlops_run(notebook: Path, output: str, store: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in kernel_env(store).items()}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "run", str(notebook), "--output", output, "--no-progress", *args],
        cwd=notebook.parent, env=environment, capture_output=True, text=True, timeout=600,
    )


def summary_output(path: Path) -> dict[str, Any]:
    [output] = [o for cell in nbformat.read(path, as_version=4).cells for o in cell.get("outputs", [])
                if MIME_TYPE in o.get("data", {}) and o["data"][MIME_TYPE].get("kind") == "run"]
    return output["data"]


def test_nbmlops_run_rewrites_the_executed_notebooks_summaries_with_their_links_once_delivered(tmp_path: Path):
    from mlflow import MlflowClient

    notebook = headless_notebook(tmp_path / "summary-headless")
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    first = nbmlops_run(notebook, "first.ipynb", store, "-p", "C", "0.5")
    assert first.returncode == 0, first.stderr
    second = nbmlops_run(notebook, "second.ipynb", store, "-p", "C", "0.25")
    assert second.returncode == 0, second.stderr
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("summary-headless/small")
    cells = {r.data.tags["nbmlops.run_key"]: r for r in client.search_runs([experiment.experiment_id])
             if r.data.tags.get("nbmlops.kind") == "cell"}
    for name in ("first.ipynb", "second.ipynb"):
        data = summary_output(notebook.parent / name)
        run = cells[data[MIME_TYPE]["run_key"]]
        link = f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
        assert "journaled" not in data["text/plain"] + data["text/html"]
        assert link in data["text/html"] and link in data["text/plain"] and "open in MLflow" in data["text/html"]
        assert "summary" not in data[MIME_TYPE]  # shown for good
    second_text = summary_output(notebook.parent / "second.ipynb")["text/plain"]
    assert "acc=0.875 (+0.025)" in second_text  # compared with the first run of the same cell, from the store
    assert json.loads(json.dumps(summary_output(notebook.parent / "second.ipynb")[MIME_TYPE]))["status"] == "FINISHED"


def test_nbmlops_run_against_a_dead_store_says_the_summaries_wait_for_sync(tmp_path: Path):
    notebook = headless_notebook(tmp_path / "summary-headless")
    dead = f"http://127.0.0.1:{free_port()}"
    result = nbmlops_run(notebook, "out.ipynb", dead, NBMLOPS_CALL_TIMEOUT="1", NBMLOPS_FLUSH_TIMEOUT="1")
    assert "Traceback" not in result.stderr, result.stderr
    data = summary_output(notebook.parent / "out.ipynb")
    assert "journaled" not in data["text/plain"] and "nbmlops sync" in data["text/plain"]
    assert "nbmlops sync" in data["text/html"] and "open in MLflow" not in data["text/html"]
