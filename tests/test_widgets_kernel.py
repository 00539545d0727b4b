"""Widgets in a real Jupyter kernel: ``%nbmlops dashboard`` answers with the app and its static HTML, and its
controls and cell list follow from a background thread."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from tests.test_kernel import Kernel, kernel_env

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel(tmp_path: Path, store_uri: str):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'widget-kernel'\n")
    started = Kernel(tmp_path, kernel_env(store_uri, NBMLOPS_EXPERIMENT="widgets-in-a-kernel"))
    try:
        yield started
    finally:
        started.close()


def _data(outputs: list[dict], *kinds: str) -> list[dict]:
    return [m["content"]["data"] for m in outputs if m["msg_type"] in kinds and "data" in m["content"]]


def test_dashboard_opens_with_the_runs_of_this_notebook(kernel):
    kernel.ok("%load_ext nbmlops")
    kernel.ok("%%track --name widget-run\nalpha = 0.25\nacc = alpha * 2")
    kernel.ok("import nbmlops\nnbmlops.flush(60)")
    [app] = _data(kernel.ok("%nbmlops dashboard"), "execute_result")
    assert WIDGET_VIEW in app and "nbmlops-runs-table" in app["text/html"] and "widget-run" in app["text/html"]
    assert app["text/plain"] == "nbmlops dashboard: experiment 'widgets-in-a-kernel', 1 run"


def test_dashboard_in_a_kernel_sends_the_first_page_then_its_controls_and_cell_list(kernel):
    kernel.ok("%load_ext nbmlops")
    kernel.ok("%%track --name cell-one\nacc = 0.5")
    kernel.ok("import nbmlops\nnbmlops.flush(60)")

    def cell_options(messages: list[dict]) -> list[str]:
        """Every label the cell dropdown's model was given, in the comm messages seen so far."""
        states = [(m["content"]["comm_id"], m["content"]["data"].get("state", {})) for m in messages
                  if m["msg_type"] in ("comm_open", "comm_msg")]
        dropdowns = {comm for comm, state in states if "nbmlops-cell" in state.get("_dom_classes", ())}
        return [label for comm, state in states if comm in dropdowns for label in state.get("_options_labels", ())]

    # the controls and the cell list come from the dashboard's loader thread, during or after the cell's
    # execution: read every iopub message until the dropdown has the cell's label (bounded)
    msg_id = kernel.kc.execute("%nbmlops dashboard")
    messages: list[dict] = []
    deadline = time.monotonic() + 120
    idle = False
    while not (idle and any(label.startswith("cell-one") for label in cell_options(messages))):
        assert time.monotonic() < deadline, [m["msg_type"] for m in messages]
        try:
            message = kernel.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        messages.append(message)
        idle = idle or (message["msg_type"] == "status" and message["parent_header"].get("msg_id") == msg_id
                        and message["content"]["execution_state"] == "idle")
    [app] = _data([m for m in messages if m["parent_header"].get("msg_id") == msg_id], "execute_result")
    assert WIDGET_VIEW in app and "nbmlops-runs-table" in app["text/html"] and "cell-one" in app["text/html"]
    assert not [m for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]

    # the app opened holding the first page only (error line, count, table); its children became the header and
    # the tabs later, and the table is the same widget in the Runs tab
    opened = {m["content"]["comm_id"]: m["content"]["data"]["state"] for m in messages if m["msg_type"] == "comm_open"}
    current = {comm: dict(state) for comm, state in opened.items()}  # each model's state after every update
    for m in messages:
        if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] in current:
            current[m["content"]["comm_id"]].update(m["content"]["data"].get("state", {}))
    app_id = app[WIDGET_VIEW]["model_id"]

    def model(reference: str) -> dict:
        return current[reference.removeprefix("IPY_MODEL_")]

    first = [model(child)["_dom_classes"] for child in opened[app_id]["children"]]
    assert first == [["nbmlops-error"], ["nbmlops-count"], ["nbmlops-runs"]]
    table = opened[app_id]["children"][2]
    header, tabs = map(model, current[app_id]["children"])
    assert header["_model_name"] == "HBoxModel" and tabs["_model_name"] == "TabModel"
    assert table in model(tabs["children"][0])["children"]  # the same table widget, now in the Runs tab
