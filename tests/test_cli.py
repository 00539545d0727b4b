"""The nbmlops command: the main job end to end, the UI, exit codes."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def nbmlops(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("NBMLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBMLOPS_EXPERIMENT", "NBMLOPS_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return tmp_path


def test_run_quickstart_end_to_end_on_the_embedded_store(fresh: Path) -> None:
    shutil.copytree(REPO / "examples", fresh / "examples")
    result = nbmlops("run", "examples/quickstart.ipynb", cwd=fresh, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED: quickstart.ipynb" in result.stdout
    assert f"sqlite:///{fresh.resolve()}/.nbmlops/mlflow.db" in result.stdout
    assert f"in experiment {fresh.name}/examples/quickstart" in result.stdout  # <project>/<path>
    assert "nbmlops ui" in result.stdout
    assert "model: wine-classifier version 1" in result.stdout

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{fresh.resolve()}/.nbmlops/mlflow.db")
    experiment = client.get_experiment_by_name(f"{fresh.name}/examples/quickstart")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"quickstart", "split", "train", "regularisation-path"}
    parent = runs["quickstart"]
    assert parent.data.tags["nbmlops.kind"] == "notebook"
    assert all(runs[name].data.tags["mlflow.parentRunId"] == parent.info.run_id for name in ("split", "train"))
    assert parent.data.metrics["accuracy"] == runs["train"].data.metrics["accuracy"]
    train = runs["train"]
    assert train.info.status == "FINISHED"
    assert train.data.tags["mlflow.source.name"] == str((fresh / "examples" / "quickstart.ipynb").resolve())
    assert train.data.params["C"] == "0.5" and train.data.params["model.logisticregression__C"] == "0.5"
    assert 0.8 < train.data.metrics["accuracy"] <= 1.0
    assert {d.dataset.name for d in train.inputs.dataset_inputs} >= {"X_train", "y_train", "X_test", "y_test"}
    assert [a.path for a in client.list_artifacts(train.info.run_id, "figures")]
    [version] = client.search_model_versions("name = 'wine-classifier'")
    assert version.run_id == train.info.run_id and version.tags["nbmlops.data.features"]
    assert len(client.get_metric_history(runs["regularisation-path"].info.run_id, "path_accuracy")) == 4

    # the closing hint is a command that runs as printed (it once ended in a literal "--gate ...": exit 2)
    [hint] = [line.split("promote:", 1)[1] for line in result.stdout.splitlines() if "promote:" in line]
    program, *words = shlex.split(hint)
    assert program == "nbmlops" and "--gate" in words, hint
    promoted = nbmlops(*words, cwd=fresh)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert str(client.get_model_version_by_alias("wine-classifier", "champion").version) == "1"


def test_failing_notebook_exits_1(fresh: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("%load_ext nbmlops"), new_code_cell("%%track\nx = 1\nraise ValueError('nope')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, fresh / "bad.ipynb")
    result = nbmlops("run", "bad.ipynb", "--output", "out.ipynb", cwd=fresh, timeout=300)
    assert result.returncode == 1
    assert "ValueError: nope" in result.stdout and (fresh / "out.ipynb").exists()


def test_usage_errors_exit_2_and_help_explains_exit_codes(fresh: Path) -> None:
    assert nbmlops("--bogus", cwd=fresh).returncode == 2
    assert nbmlops("run", "missing.ipynb", cwd=fresh).returncode == 2
    assert nbmlops(cwd=fresh).returncode == 2
    unknown = nbmlops("reproduce", "0" * 32, cwd=fresh)
    assert unknown.returncode == 2 and "0" * 32 in unknown.stderr
    bad = nbmlops("config", cwd=fresh, env={"NBMLOPS_FLUSH_TIMEOUT": "soon"})
    assert bad.returncode == 2 and "flush_timeout" in bad.stderr
    helped = nbmlops("--help", cwd=fresh)
    assert helped.returncode == 0 and "Exit codes" in helped.stdout


def test_config_shows_each_setting_with_its_source_and_hides_credentials(fresh: Path) -> None:
    result = nbmlops("config", cwd=fresh, env={"MLFLOW_TRACKING_URI": "https://bob:hunter2hunter2@mlflow.example"})
    assert result.returncode == 0
    assert "hunter2hunter2" not in result.stdout
    assert "(environment)" in result.stdout and "mlflow.example" in result.stdout


def test_ui_serves_the_mlflow_ui_on_loopback(fresh: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli", "ui", "--port", str(port)],
        cwd=fresh,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        answer = None
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    answer = response.read()
                    break
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.5)
        assert answer == b"OK", process.stdout.read() if process.poll() is not None else "no answer"
        with pytest.raises(OSError):
            external = socket.gethostbyname(socket.gethostname())
            if external.startswith("127."):
                raise OSError("host name resolves to loopback; binding checked by --host default only")
            urllib.request.urlopen(f"http://{external}:{port}/health", timeout=2)
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_sweep_command_ranks_runs_and_names_the_best(fresh: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell("alpha = 1.0")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_code_cell("%load_ext nbmlops"), params, new_code_cell("%%track\nloss = (alpha - 2) ** 2")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, fresh / "s.ipynb")
    result = nbmlops(
        "sweep", "s.ipynb", "--grid", "alpha=1,2,4", "--workers", "2", "--objective", "loss", "--no-progress",
        "--junit", "sweep.xml", cwd=fresh, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best: #1 alpha=2" in result.stdout  # loss is minimized: alpha=2 gives 0
    assert (fresh / "sweep.xml").read_text().count("<testcase") == 3


def test_data_commands_list_show_diff_and_get_snapshots(fresh: Path) -> None:
    import pandas as pd

    from nbmlops.data import SnapshotStore

    store = SnapshotStore(fresh / ".nbmlops" / "data")
    before = store.save(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}))
    after = store.save(pd.DataFrame({"x": [10.0, 20.0, 30.0, 40.0], "z": [1, 2, 3, 4]}))
    listed = nbmlops("data", "list", cwd=fresh)
    assert listed.returncode == 0 and before.fingerprint in listed.stdout and after.fingerprint in listed.stdout
    shown = nbmlops("data", "show", before.fingerprint, cwd=fresh)
    assert shown.returncode == 0 and '"kind": "DataFrame"' in shown.stdout
    diff = nbmlops("data", "diff", before.fingerprint, after.fingerprint, cwd=fresh)
    assert diff.returncode == 0 and "y" in diff.stdout and "z" in diff.stdout
    got = nbmlops("data", "get", after.fingerprint, "out.csv", cwd=fresh)
    assert got.returncode == 0 and (fresh / "out.csv").read_text().splitlines()[0].endswith("x,z")
    missing = nbmlops("data", "show", "0" * 32, cwd=fresh)
    assert missing.returncode == 2
