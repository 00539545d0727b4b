"""The headless-run dialog, the jobs in the Runs tab and the Models tab as a person meets them, in the light and
the dark theme (one JupyterLab for the file): a notebook run headlessly with a gate and a timeout is seen running
(progress, elapsed time), then finished with its key metric, duration, gate outcome and links to its run; a gate
that does not parse is one line with a caret under the right character; a run past its timeout ends as timed
out; a model's versions show their source run's metrics and lineage, and one is promoted through the gates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.headless_helpers import (
    MODEL,
    assert_looks_like_a_link,
    caret_alignment,
    lab_with_models,
    widen_sidebar,
)
from tests.browser.lab import new_project, open_experiments, run_command, screenshot, use_theme
from tests.browser.looks import assert_readable

if TYPE_CHECKING:
    from tests.browser.lab import Lab

pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
from playwright.sync_api import Locator, Page, expect

NOTEBOOK = "train.ipynb"
JOBS = "#nbmlops-experiments .nbmlops-lab-job"
START_MS = 120_000  # a kernel on a busy 2-core machine, nbmlops' first import
HEADLESS_MS = 240_000  # the run's kernel, its cells, its records delivered
CARET_TOLERANCE_PX = 1.5


def notebook_cells() -> list[tuple[str, list[str]]]:
    """(source, tags): parameters, the extension, a tracked cell whose metrics follow ``alpha``, and a pause long
    enough to see the run running (and, made longer, to pass a timeout)."""
    return [
        ("alpha = 0.05\npause = 4.0", ["parameters"]),
        ("%load_ext nbmlops", []),
        ("%%track --name fit\naccuracy = round(0.8 + alpha, 4)\nf1 = round(0.4 + alpha, 4)", []),
        ("import time\ntime.sleep(pause)", []),
    ]


@pytest.fixture(scope="module")
def headless_lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """One JupyterLab for this file, on a project holding NOTEBOOK, with two versions of MODEL in its store."""
    base = tmp_path_factory.mktemp("headless-lab")
    root = new_project(base / "project", "headless-demo", {NOTEBOOK: notebook_cells()})
    with lab_with_models(root, base, request, MODEL) as lab:
        yield lab


def open_notebook(page: Page, lab: Lab) -> Locator:
    """The lab with NOTEBOOK open and the Experiments panel shown; the panel."""
    page.goto(lab.page_url(f"lab/tree/{NOTEBOOK}"))
    first_cell = page.locator(".jp-NotebookPanel .jp-Cell").first
    expect(first_cell).to_be_visible(timeout=START_MS)
    first_cell.locator(".jp-InputPrompt").click()  # the notebook is the current one (commands act on it)
    return open_experiments(page)


def start_dialog(page: Page) -> Locator:
    run_command(page, "Run Notebook Headlessly")
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Run Notebook Headlessly", timeout=30_000)  # after the notebook is saved
    expect(dialog.locator("#nbmlops-lab-gates")).to_be_visible()
    return dialog


def assert_gate_error(error: Locator, gate: str, position: int, expected: str, character: str,
                      one_row: bool = True) -> None:
    """One line naming the gate, what was expected and where (on one row of the page, where it is wide enough:
    ``one_row``); under it the gate and a caret that stands under ``character``, in a monospace font."""
    line = error.locator(".nbmlops-lab-gate-error-line")
    expect(line).to_have_text(f'gate "{gate}": expected {expected} at position {position}')
    assert "\n" not in line.inner_text()
    if one_row:
        box = line.bounding_box()
        line_height = float(line.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20"))
        assert box is not None and box["height"] < 1.6 * line_height, f"the error takes more than one row: {box}"
    found = caret_alignment(error)
    assert found["character"] == character, found
    assert abs(found["underX"] - found["caretX"]) <= CARET_TOLERANCE_PX, f"the caret is off its character: {found}"
    assert "mono" in found["font"].lower() and found["font"] != found["uiFont"], found


def test_run_headlessly_with_a_gate_and_a_timeout_see_it_run_then_finish(
    headless_lab: Lab, page: Page, artifacts_dir: Path
):
    panel = open_notebook(page, headless_lab)
    use_theme(page, dark=False)

    # the dialog: parameters, gates, timeout; a gate that does not parse comes back as one line and a caret
    dialog = start_dialog(page)
    expect(dialog.locator("#nbmlops-lab-param-alpha")).to_have_value("0.05")
    dialog.locator("#nbmlops-lab-param-alpha").fill("0.1")
    dialog.locator("#nbmlops-lab-gates").fill("f1 >> 0.45")
    dialog.locator("#nbmlops-lab-timeout").fill("120")
    dialog.get_by_role("button", name="Start").click()
    error = page.locator(".jp-Dialog .nbmlops-lab-gate-error")
    expect(error).to_be_visible()
    assert_gate_error(error, "f1 >> 0.45", 3, "one of >=, <=, >, <, ==, !=", ">")
    dialog = page.locator(".jp-Dialog")
    expect(dialog.locator("#nbmlops-lab-param-alpha")).to_have_value("0.1")  # what was typed is kept
    expect(dialog.locator("#nbmlops-lab-timeout")).to_have_value("120")
    expect(panel.locator(".nbmlops-lab-job")).to_have_count(0)  # nothing started
    screenshot(page, artifacts_dir, "lab-headless-dialog-light")

    dialog.locator("#nbmlops-lab-gates").fill("f1 >= 0.45")
    dialog.get_by_role("button", name="Start").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)

    # running: in the Runs tab with its progress and the time it has taken, counting
    expect(panel.locator(".nbmlops-lab-job")).to_have_count(1)
    first_id = panel.locator(".nbmlops-lab-job").first.get_attribute("data-job-id")
    job = panel.locator(f".nbmlops-lab-job[data-job-id='{first_id}']")
    expect(job).to_have_attribute("data-status", "running", timeout=START_MS)
    summary = job.locator(".nbmlops-lab-job-summary")
    expect(summary).to_have_text(re.compile(r"^running · cell \d+ of \d+ · \d+(\.\d)? s$|^running · \d"))
    expect(job.locator("progress")).to_be_visible()
    expect(job).to_contain_text("alpha=0.1")
    expect(job).to_contain_text("timeout 2 min")
    counted = summary.inner_text()
    expect(summary).not_to_have_text(counted)  # the elapsed time (or the cell) moves on by itself
    expect(panel).not_to_contain_text("No runs yet")

    # finished: its key metric (the gated one first), duration, the gate's outcome, links to its run
    try:
        expect(job).to_have_attribute("data-status", "finished", timeout=HEADLESS_MS)
    except AssertionError as exc:
        raise AssertionError(f"the headless run did not finish: {job.inner_text()}") from exc
    expect(summary).to_have_text(re.compile(r"^finished in \d+(\.\d)? s$|^finished in \d+ min \d+ s$"))
    metrics = job.locator(".nbmlops-lab-job-metric")
    expect(metrics.first).to_have_text("f1 0.5")
    expect(job.locator(".nbmlops-lab-job-metric[data-metric='accuracy']")).to_have_text("accuracy 0.9")
    expect(job.locator(".nbmlops-lab-job-gates .nbmlops-lab-check-passed")).to_have_text("\u2713 f1 >= 0.45")
    link = job.locator(".nbmlops-lab-job-run-link")
    expect(link).to_have_attribute("href", re.compile(r"#/experiments/\d+/runs/[0-9a-f]{32}$"))
    run_id = re.search(r"[0-9a-f]{32}$", link.get_attribute("href") or "").group(0)
    assert_looks_like_a_link(link)
    expect(job.locator(".nbmlops-lab-job-output")).to_contain_text(".ipynb")
    select = job.locator(".nbmlops-lab-job-select-run")
    expect(select).to_have_text(f"Run {run_id[:8]}")
    select.click()
    chosen = panel.locator(f".nbmlops-lab-run.nbmlops-lab-mod-selected[data-run-id='{run_id}']")
    expect(chosen).to_be_visible(timeout=30_000)  # the run list shows it selected, with its details
    expect(chosen.locator(".nbmlops-lab-details")).to_contain_text("0.5", timeout=30_000)
    job.scroll_into_view_if_needed()
    screenshot(page, artifacts_dir, "lab-headless-finished-light")

    # the dark theme: the finished job reads, nothing of it on a light background
    use_theme(page, dark=True)
    assert len(assert_readable(page.locator(JOBS), dark=True)) > 10
    screenshot(page, artifacts_dir, "lab-headless-finished-dark")

    # the dialog in the dark theme, a gate error with its caret; then a run stopped by its timeout
    dialog = start_dialog(page)
    dialog.locator("#nbmlops-lab-param-pause").fill("60")
    dialog.locator("#nbmlops-lab-gates").fill("accuracy >= 0.9 and")
    dialog.locator("#nbmlops-lab-timeout").fill("2")
    dialog.get_by_role("button", name="Start").click()
    error = page.locator(".jp-Dialog .nbmlops-lab-gate-error")
    expect(error).to_be_visible()
    assert_gate_error(error, "accuracy >= 0.9 and", 19, "a metric name or a number", "")
    assert len(assert_readable(page.locator(".jp-Dialog .nbmlops-lab-parameters"), dark=True)) > 10
    screenshot(page, artifacts_dir, "lab-headless-dialog-dark")

    dialog = page.locator(".jp-Dialog")
    dialog.locator("#nbmlops-lab-gates").fill("")
    dialog.get_by_role("button", name="Start").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)
    expect(panel.locator(".nbmlops-lab-job")).to_have_count(2)
    timed_out = panel.locator(".nbmlops-lab-job").first  # the newest first
    expect(timed_out).not_to_have_attribute("data-job-id", first_id or "")
    expect(timed_out).to_have_attribute("data-status", "running", timeout=START_MS)
    expect(timed_out.locator("progress")).to_be_visible()
    assert_readable(page.locator(JOBS), dark=True)  # its progress bar too
    try:
        expect(timed_out).to_have_attribute("data-status", "timeout", timeout=HEADLESS_MS)
    except AssertionError as exc:
        raise AssertionError(f"the headless run did not time out: {timed_out.inner_text()}") from exc
    expect(timed_out.locator(".nbmlops-lab-job-summary")).to_have_text(
        re.compile(r"^timed out after .+ \(limit 2 s a cell\)$")
    )
    assert_readable(page.locator(JOBS), dark=True)


def test_models_show_each_versions_metrics_and_promote_through_gates(
    headless_lab: Lab, page: Page, artifacts_dir: Path
):
    panel = open_notebook(page, headless_lab)
    use_theme(page, dark=False)
    panel.get_by_role("tab", name="Models").click()
    panel.locator(".nbmlops-lab-model-select").select_option(MODEL)

    # each version with the metrics of the run that registered it, its lineage and when it was created
    v2 = panel.locator(".nbmlops-lab-version[data-version='2']")
    v1 = panel.locator(".nbmlops-lab-version[data-version='1']")
    expect(v2.locator("[data-metric='accuracy']")).to_have_text("accuracy 0.82", timeout=30_000)
    expect(v2.locator("[data-metric='f1']")).to_have_text("f1 0.78")
    expect(v1.locator("[data-metric='accuracy']")).to_have_text("accuracy 0.95")
    expect(v1.locator(".nbmlops-lab-version-created")).to_have_text(re.compile(r"\d\d:\d\d"))
    lineage = panel.locator(".nbmlops-lab-version-lineage").first
    expect(lineage).to_contain_text("DummyClassifier")
    expect(lineage.locator(".nbmlops-lab-version-run")).to_have_attribute("href", re.compile(r"/runs/[0-9a-f]{32}$"))
    expect(lineage).to_contain_text("evaluated on")
    assert_looks_like_a_link(lineage.locator(".nbmlops-lab-version-run"))

    # promote v1 through a gate: accepted, every check shown
    form = panel.locator(".nbmlops-lab-promote")
    form.locator("select").select_option("1")
    form.locator("input:not([type='checkbox'])").fill("champion")
    form.locator("textarea").first.fill("accuracy >= 0.9")
    form.get_by_role("button", name="Promote").click()
    accepted = form.locator(".nbmlops-lab-promotion.nbmlops-lab-accepted")
    expect(accepted).to_contain_text("v1 is now @champion", timeout=60_000)
    expect(accepted.locator(".nbmlops-lab-check-passed", has_text="accuracy").first).to_be_visible()
    expect(accepted.locator(".nbmlops-lab-check-failed")).to_have_count(0)
    expect(v1).to_contain_text("@champion", timeout=30_000)

    # a gate that does not parse: one line and a caret under the right character
    form.locator("select").select_option("2")
    form.locator("textarea").first.fill("accuracy >== 0.9")
    form.get_by_role("button", name="Promote").click()
    error = form.locator(".nbmlops-lab-gate-error")
    expect(error).to_be_visible(timeout=30_000)
    assert_gate_error(error, "accuracy >== 0.9", 9, "one of >=, <=, >, <, ==, !=", ">", one_row=False)  # narrow

    # v2 does not beat the champion: refused, the failed checks say why, the registry unchanged
    form.locator("textarea").first.fill("accuracy >= 0.8")
    form.locator("textarea").nth(1).fill("champion:accuracy")
    form.get_by_role("button", name="Promote").click()
    refused = form.locator(".nbmlops-lab-promotion.nbmlops-lab-refused")
    expect(refused).to_contain_text("Refused", timeout=60_000)
    expect(refused.locator(".nbmlops-lab-check-failed")).to_contain_text("accuracy")
    expect(refused.locator(".nbmlops-lab-check-passed").first).to_be_visible()
    expect(v2).not_to_contain_text("@champion")
    widen_sidebar(page, 520)
    assert (panel.bounding_box() or {}).get("width", 0) > 450
    panel.locator(".nbmlops-lab-versions").scroll_into_view_if_needed()
    screenshot(page, artifacts_dir, "lab-models-light")

    use_theme(page, dark=True)
    assert len(assert_readable(page.locator("#nbmlops-experiments .nbmlops-lab-models"), dark=True)) > 30
    screenshot(page, artifacts_dir, "lab-models-dark")
    use_theme(page, dark=False)
