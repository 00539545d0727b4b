"""Tracked datasets are snapshotted: %%track in a real IPython shell, the Python API, a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.config import configure, resolve_settings
from nbmlops.data import SnapshotStore, fingerprint
from nbmlops.runner import run_notebook
from nbmlops.tracking.query import child_runs, load_run
from nbmlops.tracking.run import snapshot_state
from nbmlops.tracking.session import close_session
from tests.conftest import mlflow_server, runs_of
from tests.test_runner import notebook


@pytest.fixture(autouse=True)
def snapshot_settings(monkeypatch: pytest.MonkeyPatch):
    for name in ("NBMLOPS_SNAPSHOT_MAX_BYTES", "NBMLOPS_DATA_STORE"):
        monkeypatch.delenv(name, raising=False)
    yield
    configure(snapshot_max_bytes=None, data_store=None)


def _only_run(client, request):
    nbmlops.flush(60)
    (run,) = runs_of(client, request.node.name)
    return run


def _state(run, name: str, output: bool = False) -> tuple[str, str | None]:
    """The fingerprint of dataset ``name`` (the input, or the ``output``) and what the run says about its snapshot."""
    (digest,) = [
        d.dataset.digest
        for d in run.inputs.dataset_inputs
        if d.dataset.name == name and (d.tags[0].value == "output") == output
    ]
    return digest, snapshot_state(run.data.tags, digest)


def test_an_input_read_by_a_tracked_cell_is_snapshotted_and_loads_back_equal(shell, client, request):
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1.5, 2.5], 'k': ['a', 'b']})")
    shell.run_cell_magic("track", "", "total = float(df['x'].sum())")
    digest, state = _state(_only_run(client, request), "df")
    assert state == "stored"
    back = SnapshotStore().load(digest)
    pd.testing.assert_frame_equal(back, shell.user_ns["df"], check_index_type=False)
    assert SnapshotStore().root == resolve_settings().state_dir / "data"


def test_the_python_api_snapshots_arrays_and_files(project, client, request):
    values = np.arange(12.0).reshape(3, 4)
    (project / "raw.csv").write_text("x\n1\n")
    with nbmlops.track("api"):
        digest = nbmlops.log_dataset(values, "values")
        file_digest = nbmlops.log_dataset("raw.csv", "raw")
    run = _only_run(client, request)
    assert _state(run, "values") == (digest, "stored") and _state(run, "raw") == (file_digest, "stored")
    np.testing.assert_array_equal(nbmlops.data.load(digest), values)
    assert nbmlops.data.load(file_digest) == b"x\n1\n"


def test_objects_over_the_size_limit_are_fingerprinted_and_profiled_only_and_say_how_to_store_them(
    shell, client, request, capfd
):
    configure(snapshot_max_bytes="100B")
    shell.run_cell("import numpy as np\nsmall = np.arange(4)\nbig = np.arange(1000)")
    shell.run_cell_magic("track", "", "total = float(small.sum() + big.sum())")
    shell.run_cell_magic("track", "", "total = float(small.sum() + big.sum())")  # said once, not per cell
    nbmlops.flush(60)
    first, second = runs_of(client, request.node.name)
    run = first
    big, state = _state(run, "big")
    (logged,) = [d.dataset for d in run.inputs.dataset_inputs if d.dataset.name == "big"]
    assert json.loads(logged.profile)["columns"][0]["max"] == 999  # profiled all the same
    notes = [line for line in capfd.readouterr().err.splitlines() if "snapshot_max_bytes" in line]
    assert notes == [f"nbmlops: big not snapshotted: {state[len('not snapshotted: '):]}"]
    assert _state(second, "big") == (big, state)
    assert state == (
        "not snapshotted: larger than snapshot_max_bytes (100 bytes): fingerprinted and profiled only; to snapshot "
        "it, raise the limit (%nbmlops config snapshot_max_bytes=2GiB, or NBMLOPS_SNAPSHOT_MAX_BYTES)"
    )
    assert big not in SnapshotStore()
    assert _state(run, "small")[1] == "stored"


def test_a_frame_over_the_default_limit_of_256_mib_is_fingerprinted_only(project, client, request):
    big = pd.DataFrame({"x": np.zeros((256 << 20) // 8 + 1)})  # calloc'd: reading it maps no memory
    with nbmlops.track("api"):
        digest = nbmlops.log_dataset(big, "big")
    assert resolve_settings().snapshot_max_bytes == 256 << 20
    digest_logged, state = _state(_only_run(client, request), "big")
    assert digest_logged == digest and state.startswith("not snapshotted: larger than snapshot_max_bytes (256 MiB)")
    assert digest not in SnapshotStore()


def test_a_zero_limit_means_fingerprints_only(project, client, request, monkeypatch):
    monkeypatch.setenv("NBMLOPS_SNAPSHOT_MAX_BYTES", "0")
    with nbmlops.track("api"):
        digest = nbmlops.log_dataset(np.arange(3), "values")
    assert _state(_only_run(client, request), "values") == (digest, "not snapshotted: snapshot_max_bytes is 0")
    assert not (project / ".nbmlops" / "data").exists()


def test_an_input_the_cell_changes_in_place_is_not_stored_under_its_old_fingerprint(
    shell, client, request, capfd
):
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3]})")
    before = fingerprint(shell.user_ns["df"])
    shell.run_cell_magic("track", "", "df.loc[0, 'x'] = 100\ntotal = float(df['x'].sum())")
    run = _only_run(client, request)
    digest, state = _state(run, "df")
    assert digest == before
    assert state.startswith("not snapshotted: changed in place after it was fingerprinted")
    after, after_state = _state(run, "df", output=True)  # what the cell made of it is its output
    assert after == fingerprint(shell.user_ns["df"]) != before and after_state == "stored"
    assert before not in SnapshotStore() and [s.fingerprint for s in SnapshotStore().list()] == [after]
    assert "snapshot" not in capfd.readouterr().err


def test_data_that_does_not_round_trip_is_recorded_as_not_snapshotted_quietly(shell, client, request, capfd):
    shell.run_cell("import pandas as pd\nmixed = pd.DataFrame({'m': [1, 'a', 2.5]})")
    shell.run_cell_magic("track", "", "n = float(len(mixed))")
    digest, state = _state(_only_run(client, request), "mixed")
    assert state.startswith("not snapshotted: cannot convert to Arrow")
    assert digest not in SnapshotStore()
    assert "nbmlops" not in capfd.readouterr().err


def test_a_team_shares_snapshots_through_the_mlflow_server(tmp_path, monkeypatch, request):
    """Client A runs a notebook (its parameter names a file; a tracked cell reads a frame) against a
    server; client B, in another empty project, loads both snapshots, verified, from the server."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (one / "data.csv").write_text("x\n1\n2\n3\n")
    path = notebook(
        one / "train.ipynb",
        "%load_ext nbmlops",
        "import pandas as pd\ndf = pd.read_csv(data_path)",
        "%%track --name fit\ntotal = float(df['x'].sum())",
        parameters="data_path = 'missing.csv'",
    )
    monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT", raising=False)  # a server keeps its own artifacts
    with mlflow_server(tmp_path / "server") as uri:
        close_session()
        monkeypatch.chdir(one)
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        assert resolve_settings().data_store == "mlflow"
        result = run_notebook(path, parameters={"data_path": "data.csv"}, progress_bar=False)
        assert result.status == "FINISHED" and result.run_id, result.error
        parent = load_run(uri, result.run_id)
        (cell,) = child_runs(uri, result.run_id)
        file_fp = {n: d for n, d, _ in parent.datasets}["data_path"]
        frame_fp = {n: d for n, d, _ in cell.datasets}["df"]
        assert snapshot_state(parent.tags, file_fp) == snapshot_state(cell.tags, frame_fp) == "stored"
        close_session()

        script = (
            "import sys, nbmlops.data as d\n"
            "sys.stdout.buffer.write(d.load(sys.argv[1]))\n"
            "print(); print(d.load(sys.argv[2])['x'].sum())\n"
        )
        env = {**os.environ, "NBMLOPS_TRACKING_URI": uri}
        out = subprocess.run(
            [sys.executable, "-c", script, file_fp, frame_fp], cwd=two, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n") == ["x", "1", "2", "3", "", "6", ""]
    stored = {p.name for p in (two / ".nbmlops" / "data").rglob("*") if p.is_file()}
    assert stored == {f"{file_fp}.bin", f"{file_fp}.json", f"{frame_fp}.parquet", f"{frame_fp}.json"}


def test_nbmlops_data_load_works_after_a_plain_import_of_nbmlops(project):
    """The README's `nbmlops.data.load(fp)` raised AttributeError after `import nbmlops` alone."""
    script = (
        "import sys, nbmlops\n"
        "assert 'nbmlops.data' not in sys.modules  # importing nbmlops stays cheap\n"
        "print(nbmlops.data.load.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nbmlops.data.snapshots"
