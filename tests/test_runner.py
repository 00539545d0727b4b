"""Headless runs: real papermill executions, read back from a real MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbmlops.runner import run_notebook
from nbmlops.runner.parameters import ParameterError
from tests.conftest import runs_of

PAPERMILL_NOTEBOOKS = Path(papermill.__file__).parent / "tests" / "notebooks"
REPO = Path(__file__).resolve().parents[1]


def notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    """Write a notebook: an optional cell tagged ``parameters``, then ``cells``."""
    nb = new_notebook()
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def kernels_of(pid: int | None = None) -> list[psutil.Process]:
    """The ipykernel processes below ``pid`` (default: this process); short-lived children that are already
    zombies or gone (a git call, say) are skipped."""
    kernels = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "ipykernel" in " ".join(child.cmdline()):
                kernels.append(child)
        except psutil.Error:
            continue
    return kernels


def kernels_of_this_process(grace: float = 30.0) -> list[psutil.Process]:
    """The kernels below this process that are still alive ``grace`` seconds from now at most: a kernel being shut
    down as the run returns (its process exiting) is no kernel left behind; one that never exits is."""
    _, alive = psutil.wait_procs(kernels_of(), timeout=grace)
    return alive


def test_unknown_or_malformed_parameters_are_refused_before_any_kernel_starts(project, client, request):
    path = notebook(project / "p.ipynb", "print(alpha)", parameters="alpha = 1\nbeta = 'x'")
    with pytest.raises(ParameterError) as caught:
        run_notebook(path, parameters={"alpha": 2, "gamma": 3, "not valid": 1}, progress_bar=False)
    assert caught.value.bad == ["gamma", "not valid"] and caught.value.declared == ["alpha", "beta"]
    assert "'gamma'" in str(caught.value) and "alpha, beta" in str(caught.value)
    assert runs_of(client, request.node.name) == []
    assert not (project / ".nbmlops" / "outputs").exists()


def test_notebook_run_is_a_parent_of_its_tracked_cells_with_metrics_rolled_up(project, client, request):
    path = notebook(
        project / "train.ipynb",
        "%load_ext nbmlops",
        "%%track --name fit\nscore = alpha * 2\nkind_of = type(label).__name__",
        "import nbmlops\nfor i in range(3):\n    nbmlops.log_metric('loss', 1.0 / (i + 1))",
        parameters="alpha = 0.1\nlabel = 'a'\nn = 3",
    )
    result = run_notebook(path, parameters={"alpha": 0.25, "label": "b"}, progress_bar=False)
    assert result.status == "FINISHED" and result.exit_code == 0, result.error
    assert result.parameters == {"alpha": 0.25, "label": "b", "n": 3}
    assert result.metrics == {"score": 0.5, "loss": pytest.approx(1 / 3)}
    runs = {r.info.run_name: r for r in runs_of(client, request.node.name)}
    assert set(runs) == {"train", "fit"}
    parent, child = runs["train"], runs["fit"]
    assert parent.info.run_id == result.run_id and parent.info.status == "FINISHED"
    assert parent.data.tags["nbmlops.kind"] == "notebook"
    assert parent.data.params == {"alpha": "0.25", "label": "b", "n": "3"}
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics == {"score": 0.5}
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "loss")] == pytest.approx([1, 0.5, 1 / 3])
    assert parent.data.metrics["score"] == 0.5
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "notebook")}
    assert {"notebook/train.ipynb", "notebook/train.html", "notebook/input"} <= artifacts
    executed = nbformat.read(client.download_artifacts(parent.info.run_id, "notebook/train.ipynb"), 4)
    assert "alpha = 0.25" in "".join(c.source for c in executed.cells)  # papermill's injected cell
    assert child.data.tags["mlflow.source.name"] == str(path.resolve())


def test_failing_cell_gives_failed_with_cell_index_and_the_partial_notebook(project, client, request):
    result = run_notebook(PAPERMILL_NOTEBOOKS / "broken1.ipynb", project / "out.ipynb", progress_bar=False)
    assert result.status == "FAILED" and result.exit_code == 1 and result.failure == "cell_error"
    assert "AssertionError" in result.error
    (run,) = runs_of(client, request.node.name)
    assert run.info.status == "FAILED"
    assert run.data.tags["nbmlops.failure"] == "cell_error"
    assert run.data.tags["nbmlops.failure.ename"] == "AssertionError"
    assert run.data.tags["nbmlops.failure.cell_index"].isdigit()
    executed = nbformat.read(project / "out.ipynb", 4)
    assert any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in executed.cells)


def test_cell_timeout_gives_timeout(project, client, request):
    path = notebook(project / "slow.ipynb", "import time\ntime.sleep(60)")
    result = run_notebook(path, timeout=2, progress_bar=False)
    assert result.status == "TIMEOUT" and result.exit_code == 1
    (run,) = runs_of(client, request.node.name)
    assert run.data.tags["nbmlops.status"] == "TIMEOUT" and run.info.status == "FAILED"
    assert kernels_of_this_process() == []


def test_dead_kernel_gives_failed_kernel_died_and_leaves_no_kernel(project, client, request):
    path = notebook(project / "dies.ipynb", "%load_ext nbmlops", "%%track\nimport os\nx = 1\nos._exit(1)")
    result = run_notebook(path, progress_bar=False)
    assert result.status == "FAILED" and result.failure == "kernel_died"
    assert kernels_of_this_process() == []
    runs = {r.data.tags.get("nbmlops.kind"): r for r in runs_of(client, request.node.name)}
    assert runs["notebook"].data.tags["nbmlops.failure"] == "kernel_died"
    assert runs["cell"].info.status == "FAILED"  # the cell's journal was replayed and its run closed
    assert runs["cell"].data.tags["nbmlops.failure"] == "kernel_died"


@pytest.mark.parametrize(
    "name, status", [("sysexit0.ipynb", "FINISHED"), ("systemexit.ipynb", "FINISHED"), ("sysexit1.ipynb", "FAILED")]
)
def test_sys_exit_counts_as_papermill_counts_it(project, client, name, status):
    result = run_notebook(PAPERMILL_NOTEBOOKS / name, project / "out.ipynb", progress_bar=False)
    assert result.status == status


def test_gates_pass_fail_and_are_recorded_as_tags(project, client, request):
    path = notebook(project / "g.ipynb", "%load_ext nbmlops", "%%track\naccuracy = 0.8 + 0.05")
    result = run_notebook(path, gates=["accuracy >= 0.8", "accuracy > 0.9", "f1 > 0.5"], progress_bar=False)
    assert result.status == "FINISHED" and result.exit_code == 3
    assert [g.passed for g in result.gates] == [True, False, False]
    assert "f1" in result.gates[2].message and "missing" in result.gates[2].message
    parent = next(r for r in runs_of(client, request.node.name) if r.data.tags["nbmlops.kind"] == "notebook")
    assert parent.data.tags["nbmlops.gates"] == "failed"
    assert parent.data.tags["nbmlops.gate.0.result"] == "passed"


def _cli(*args: str, cwd: Path, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300, **popen
    )


def test_cli_exit_codes_junit_and_github_summary(project, client, request, monkeypatch):
    path = notebook(project / "c.ipynb", "%load_ext nbmlops", "%%track\nacc = rate * 2", parameters="rate = 0.3")
    summary = project / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ok = _cli("run", str(path), "-p", "rate", "0.45", "--gate", "acc >= 0.9", "--junit", "r.xml", "--no-progress", cwd=project)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "acc=0.9" in ok.stdout
    gated = _cli("run", str(path), "-y", "rate: 0.1", "--gate", "acc >= 0.9", "--junit", "r.xml", "--no-progress", cwd=project)
    assert gated.returncode == 3
    import xml.etree.ElementTree as ET

    suite = ET.parse(project / "r.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("tests")) == 2 and int(suite.get("failures")) == 1
    assert summary.read_text().count("c.ipynb") >= 2
    bad = _cli("run", str(path), "-p", "nope", "1", cwd=project)
    assert bad.returncode == 2 and "nope" in bad.stderr
    worse = _cli("run", str(path), "--gate", "acc >> 1", cwd=project)
    assert worse.returncode == 2 and "acc >> 1" in worse.stderr
    failed = _cli("run", str(PAPERMILL_NOTEBOOKS / "sysexit1.ipynb"), "--no-progress", cwd=project)
    assert failed.returncode == 1


def test_interrupting_nbmlops_run_kills_the_run_and_its_kernel(project, client, request):
    process = subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli", "run", str(PAPERMILL_NOTEBOOKS / "keyboard_interrupt.ipynb"), "--no-progress"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not kernels_of(process.pid):
            time.sleep(0.2)
        time.sleep(2)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not runs_of(client, request.node.name):
        time.sleep(0.5)
    (run,) = runs_of(client, request.node.name)
    assert run.info.status == "KILLED"


def test_errors_in_cells_tagged_raises_exception_are_expected(project, client, request):
    nb = new_notebook(cells=[new_code_cell("1 / 0"), new_code_cell("done = True")])
    nb.cells[0].metadata["tags"] = ["raises-exception"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "expected.ipynb")
    result = run_notebook(project / "expected.ipynb", project / "out.ipynb", progress_bar=False)
    assert result.status == "FINISHED", result.error
    executed = nbformat.read(project / "out.ipynb", 4)
    assert [c.source for c in executed.cells] == ["1 / 0", "done = True"]  # no error banner
    assert executed.cells[1].execution_count is not None


def test_the_html_render_has_the_last_cell_output_or_after_an_error_the_error(project, client):
    ok = run_notebook(notebook(project / "ok.ipynb", "x = 1", "print('the-last-' + 'output')"), progress_bar=False)
    bad = run_notebook(notebook(project / "bad.ipynb", "print(1)", "raise ValueError('the-' + 'error')"), progress_bar=False)
    assert (ok.status, bad.status) == ("FINISHED", "FAILED")
    for result, name, marker in [(ok, "ok", "the-last-output"), (bad, "bad", "the-error")]:
        html = Path(client.download_artifacts(result.run_id, f"notebook/{name}.html")).read_text()
        assert marker in html
