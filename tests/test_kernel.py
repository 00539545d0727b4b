"""``%%track`` in a real Jupyter kernel (ipykernel of this virtualenv, driven by jupyter_client),
and recovery of the runs of a kernel killed with SIGKILL in the middle of a cell."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import KernelManager

from nbmlops.tracking.query import kernel_history

KERNEL_TIMEOUT = 120


@pytest.fixture(scope="module")
def kernel_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh sqlite store shared by this module's kernels (each test uses its own experiments)."""
    return f"sqlite:///{tmp_path_factory.mktemp('kernel-store') / 'mlflow.db'}"


@pytest.fixture
def kernel_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "nb").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'kernel-demo'\n")
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(), project / "nb" / "demo.ipynb")
    return project


def kernel_env(store: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JPY_"))}
    env["NBMLOPS_TRACKING_URI"] = store
    env.update(extra)
    return env


class Kernel:
    """A real kernel process and a blocking client on it."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=KERNEL_TIMEOUT)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def run(self, code: str, timeout: float = KERNEL_TIMEOUT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Execute ``code``; return the reply content and the iopub messages it produced."""
        outputs: list[dict[str, Any]] = []
        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
        return reply["content"], outputs

    def ok(self, code: str, timeout: float = KERNEL_TIMEOUT) -> list[dict[str, Any]]:
        content, outputs = self.run(code, timeout)
        assert content["status"] == "ok", (content.get("ename"), content.get("evalue"), content.get("traceback"))
        return outputs

    def ok_all(self, code: str, timeout: float = KERNEL_TIMEOUT) -> list[dict[str, Any]]:
        """Execute ``code``; return every iopub message until it is done, also those answering earlier requests
        (a display update a background thread sends for the cell that showed the display)."""
        msg_id = self.kc.execute(code)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not any(m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
                      and m["content"]["execution_state"] == "idle" for m in messages):
            assert time.monotonic() < deadline, [m["msg_type"] for m in messages]
            try:
                messages.append(self.kc.get_iopub_msg(timeout=1))
            except queue.Empty:
                continue
        reply = self.kc.get_shell_msg(timeout=timeout)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok", reply["content"]
        return messages

    def stdout(self, code: str) -> str:
        outputs = self.ok(code)
        return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    def kill(self) -> None:
        """SIGKILL the kernel process and reap it (a zombie would still look alive to ``kill -0``)."""
        process = self.km.provisioner.process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernels() -> Iterator[list[Kernel]]:
    """Start kernels with ``kernels.append(Kernel(...))``; all are shut down however the test ends."""
    started: list[Kernel] = []
    yield started
    problems = []
    for kernel in started:
        try:
            kernel.close()
        except Exception as exc:
            problems.append(repr(exc))
    assert not problems, problems


def wait_for_run(client, experiment: str, status: str | None = None, timeout: float = 60.0):
    """The single run of ``experiment`` once it is in the store (with ``status``, if given); bounded polling."""
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        if runs and (status is None or runs[0].info.status == status):
            assert len(runs) == 1, [r.info.run_id for r in runs]
            return runs[0]
        time.sleep(0.2)
    pytest.fail(f"no run of {experiment!r} with status {status} after {timeout} s; saw {[r.info for r in runs]}")


def test_tracked_cell_in_a_real_kernel_records_params_metrics_data_code_and_shows_summary(
    kernel_project: Path, kernel_store: str, kernels: list[Kernel]
) -> None:
    from mlflow import MlflowClient

    notebook = kernel_project / "nb" / "demo.ipynb"
    kernel = Kernel(kernel_project, kernel_env(kernel_store, NBMLOPS_NOTEBOOK=str(notebook)))
    kernels.append(kernel)
    assert Path(kernel.stdout("import sys; print(sys.executable)").strip()).parent == Path(sys.executable).parent

    kernel.ok("%load_ext nbmlops")
    kernel.ok("import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3, 4], 'y': [0.5, 1.5, 2.5, 3.5]})")
    outputs = kernel.ok("%%track\nalpha = 0.1\nscore = alpha * 3\nrows = len(df)")
    summaries = [
        m["content"]["data"]["text/plain"]
        for m in outputs
        if m["msg_type"] in ("display_data", "update_display_data", "execute_result")
        and "text/plain" in m["content"].get("data", {})
    ]
    assert any("FINISHED" in text and "alpha=0.1" in text for text in summaries), summaries
    flushed = kernel.ok_all("import nbmlops\nnbmlops.flush(60)")
    digest = kernel.stdout("print(nbmlops.fingerprint(df))").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", digest), digest

    client = MlflowClient(kernel_store)
    experiment = client.get_experiment_by_name("project/nb/demo")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    run = client.get_run(found.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["alpha"] == "0.1"
    assert run.data.metrics["score"] == pytest.approx(0.3)
    assert run.data.metrics["rows"] == 4
    assert run.data.tags["mlflow.source.name"].endswith("demo.ipynb")
    assert run.data.tags["mlflow.source.type"] == "NOTEBOOK"
    assert run.data.tags["nbmlops.pid"] == str(kernel.pid)
    datasets = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"df"}
    assert datasets["df"].digest == digest
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "code")}
    assert {"code/cell.py", "code/history.json"} <= artifacts
    updates = [m["content"] for m in outputs + flushed if m["msg_type"] == "update_display_data"]
    link = f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    assert any(link in u["data"]["text/plain"] and link in u["data"]["text/html"] for u in updates), updates
    cell_py = Path(client.download_artifacts(run.info.run_id, "code/cell.py", str(kernel_project)))
    assert "score = alpha * 3" in cell_py.read_text()
    history = kernel_history(kernel_store, run.info.run_id)
    assert history is not None and any("pd.DataFrame" in entry["source"] for entry in history)


SLEEPING_CELL = "%%track\nimport time\ntime.sleep(60)\n"


def start_sleeping_run(project: Path, store: str, experiment: str, kernels: list[Kernel]):
    """A kernel in the middle of a tracked cell, once its run is RUNNING in the store."""
    from mlflow import MlflowClient

    kernel = Kernel(project, kernel_env(store, NBMLOPS_EXPERIMENT=experiment))
    kernels.append(kernel)
    kernel.ok("%load_ext nbmlops")
    kernel.kc.execute(SLEEPING_CELL)
    client = MlflowClient(store)
    run = wait_for_run(client, experiment, "RUNNING")
    assert run.data.tags["nbmlops.pid"] == str(kernel.pid)
    return kernel, client, run


def test_kernel_killed_mid_cell_run_is_marked_failed_by_next_kernel(
    kernel_project: Path, kernel_store: str, kernels: list[Kernel]
) -> None:
    killed, client, run = start_sleeping_run(kernel_project, kernel_store, "crash-next-kernel", kernels)
    killed.kill()
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # nobody is left to end it
    journals = list((kernel_project / ".nbmlops" / "journal").glob("*.journal"))
    assert len(journals) == 1

    successor = Kernel(kernel_project, kernel_env(kernel_store, NBMLOPS_EXPERIMENT="crash-next-kernel"))
    kernels.append(successor)
    successor.ok("%load_ext nbmlops")
    successor.ok("import nbmlops\nnbmlops.flush(60)")

    failed = wait_for_run(client, "crash-next-kernel", "FAILED")
    assert failed.info.run_id == run.info.run_id
    assert failed.data.tags["nbmlops.failure"] == "kernel_died"
    assert failed.data.tags["nbmlops.failure_reason"]
    assert failed.info.end_time is not None
    assert not journals[0].exists()  # replayed once, then removed


def test_kernel_killed_mid_cell_run_is_marked_failed_by_runs_reap(
    kernel_project: Path, kernel_store: str, kernels: list[Kernel], tmp_path: Path
) -> None:
    killed, client, run = start_sleeping_run(kernel_project, kernel_store, "crash-reap", kernels)
    pid = killed.pid
    killed.kill()
    env = kernel_env(kernel_store)

    # from another project, the journal is out of reach: the store's RUNNING run whose pid is gone is found
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pyproject.toml").write_text("[project]\nname = 'elsewhere'\n")
    reaped = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "runs", "reap"], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )
    assert reaped.returncode == 0, reaped.stderr
    assert "marked 1 run(s) of dead processes FAILED" in reaped.stdout, reaped.stdout
    failed = client.get_run(run.info.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["nbmlops.failure"] == "kernel_died"
    assert f"process {pid} is gone" in failed.data.tags["nbmlops.failure_reason"]

    # in the kernel's own project, reap also drains the dead kernel's journal, without a second run
    drained = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "runs", "reap"], cwd=kernel_project, env=env, capture_output=True,
        text=True, timeout=180, check=False,
    )
    assert drained.returncode == 0, drained.stderr
    assert list((kernel_project / ".nbmlops" / "journal").glob("*.journal")) == []
    final = wait_for_run(client, "crash-reap", "FAILED")
    assert final.info.run_id == run.info.run_id
