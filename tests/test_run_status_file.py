"""`nbmlops run --status-file`: a real run's JSON status, read while it runs and after, against the real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SECRET = "Pw9StatusFileSecret"


def write_notebook(path: Path, *cells: str, parameters: str) -> Path:
    """A notebook: a markdown cell, a cell tagged ``parameters``, then ``cells``."""
    nb = new_notebook(cells=[new_markdown_cell("# a headless run"), new_code_cell(parameters, metadata={"tags": ["parameters"]})])
    nb.cells += [new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def start_run(project: Path, notebook: Path, status: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli", "run", str(notebook), "--status-file", str(status), "--no-progress",
         *args],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def follow(process: subprocess.Popen, status: Path, until=None, timeout: float = 300) -> list[dict]:
    """Read the status file every few milliseconds until the process ends (or ``until(status)`` holds); every
    read must be a whole JSON document. Returns the distinct statuses seen, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = process.poll() is not None
        if status.exists():
            current = json.loads(status.read_text())  # never half a file
            if not seen or current != seen[-1]:
                seen.append(current)
            if until is not None and until(current):
                return seen
        if ended:
            return seen
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"the run did not end in {timeout} s; statuses seen: {seen}")


def test_the_status_file_follows_a_run_cell_by_cell_to_the_stores_run_id(project, client, request):
    notebook = write_notebook(project / "train.ipynb", "import time\ntime.sleep(1.5)", "metric = alpha * 2",
                              parameters="alpha = 0.5")
    status = project / "status" / "train.json"
    status.parent.mkdir()
    process = start_run(project, notebook, status, "-p", "alpha", "2", "--output", "out/train.ipynb")
    seen = follow(process, status)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err

    final = seen[-1]
    assert seen[0]["state"] == "queued" and final["state"] == "finished"
    assert "running" in [s["state"] for s in seen]
    # papermill's cells: markdown, parameters, the injected parameters, the two code cells
    assert final["cells"] == {"done": 5, "total": 5, "current": 4}
    assert any(s["state"] == "running" and s["cells"]["current"] == 3 and s["cells"]["done"] == 3 for s in seen)
    assert final["notebook"] == str(notebook) and final["pid"] == process.pid and final["exit_code"] == 0
    assert final["error"] is None and final["started"] <= final["ended"]
    assert final["output"] == str(project / "out" / "train.ipynb") and Path(final["output"]).is_file()
    assert final["html"] == "notebook/train.html"
    assert "<html" in Path(client.download_artifacts(final["run_id"], final["html"], str(project))).read_text()
    run = client.get_run(final["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["alpha"] == "2"
    assert run.data.tags["nbmlops.notebook"] == str(notebook)
    assert client.get_experiment(run.info.experiment_id).name == final["experiment"] == request.node.name
    assert [p.name for p in status.parent.iterdir()] == ["train.json"]  # no temporary or lock file left


def test_a_failing_cell_is_state_failed_with_one_redacted_error_line(project, client):
    notebook = write_notebook(project / "bad.ipynb", "x = 1", "raise ValueError('cannot log in with ' + db_password)",
                              "print('never')", parameters="db_password = ''")
    status = project / "bad.status.json"
    process = start_run(project, notebook, status, "-p", "db_password", SECRET)
    final = follow(process, status)[-1]
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "cannot log in with ***" in out and SECRET not in out + err  # nor in the command's own summary
    assert final["state"] == "failed" and final["exit_code"] == 1
    assert final["error"] == "cell 4: ValueError: cannot log in with ***"  # one line, no traceback
    assert final["cells"]["total"] == 6 and final["cells"]["current"] == 4
    assert SECRET not in status.read_text()
    assert client.get_run(final["run_id"]).info.status == "FAILED"


def test_the_run_id_is_known_while_the_notebook_runs(project, client):
    notebook = write_notebook(project / "slow.ipynb", "import time\ntime.sleep(8)", parameters="n = 1")
    status = project / "slow.status.json"
    process = start_run(project, notebook, status)
    seen = follow(process, status, until=lambda s: s["run_id"] is not None)
    early = seen[-1]
    assert early["state"] == "running" and early["ended"] is None and process.poll() is None, early
    assert client.get_run(early["run_id"]).data.tags["nbmlops.kind"] == "notebook"
    assert client.get_run(early["run_id"]).info.experiment_id == early["experiment_id"]
    final = follow(process, status)[-1]
    process.communicate(timeout=60)
    assert final["state"] == "finished" and final["run_id"] == early["run_id"]


def test_sigint_cancels_the_run_and_its_status_says_cancelled(project, client):
    notebook = write_notebook(project / "slow.ipynb", "import time\ntime.sleep(120)", "print('never')", parameters="n = 1")
    status = project / "slow.status.json"
    process = start_run(project, notebook, status)
    try:
        seen = follow(process, status, until=lambda s: s["cells"]["current"] == 2 and s["run_id"] is not None)
        assert seen[-1]["state"] == "running", seen
        time.sleep(1)  # the cell is executing
        os.killpg(process.pid, signal.SIGINT)
        seen = follow(process, status, timeout=120)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    final = seen[-1]
    assert process.returncode == 130
    assert final["state"] == "cancelled" and final["exit_code"] == 130 and final["error"] is None
    assert final["ended"] >= final["started"]
    assert client.get_run(final["run_id"]).info.status == "KILLED"  # delivered before the runner exits


def test_a_cell_past_the_timeout_is_state_timeout_naming_the_cell(project):
    notebook = write_notebook(project / "slow.ipynb", "import time\ntime.sleep(60)", parameters="n = 1")
    status = project / "slow.status.json"
    process = start_run(project, notebook, status, "--timeout", "2")
    final = follow(process, status)[-1]
    process.communicate(timeout=60)
    assert process.returncode == 1
    assert final["state"] == "timeout" and final["exit_code"] == 1
    assert final["error"] == "cell 2 ran longer than 2 s" and final["run_id"]


def test_a_status_file_that_cannot_be_written_costs_the_status_not_the_run(project, client):
    notebook = write_notebook(project / "ok.ipynb", "x = n + 1", parameters="n = 1")
    (project / "not-a-folder").write_text("a file where the status file's folder should be")
    process = start_run(project, notebook, project / "not-a-folder" / "status.json")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert err.count("the status file") == 1 and "is not kept up to date" in err  # told once
    run_id = out.split("run: ")[1].split()[0]
    assert client.get_run(run_id).info.status == "FINISHED"
