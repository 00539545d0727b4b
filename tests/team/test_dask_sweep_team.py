"""Sweeps on Dask workers that share nothing with the submitter but the tracking server (issue 13).

A real ``dask scheduler`` and two real ``dask worker --nthreads 1`` processes (no nanny: a killed worker stays
dead, as a lost machine does), started in temporary directories unrelated to the project, each with a worker
folder of its own (``NBMLOPS_WORKER_DIR``) and no ``NBMLOPS_*``/``MLFLOW_*`` setting; a real ``mlflow server``
storing the artifacts; ``nbmlops sweep --dask`` run as a process from the project root on a notebook in a
subfolder that reads ``data/train.csv`` (a code literal, relative to itself), ``../shared/weights.csv`` (a
parameter) and ``data/big.bin`` (shipped with ``--ship``, too large to travel inside the task: fetched from the
snapshot store).

The notebooks wait at a barrier (a ``go`` file outside the project) once the sweep has submitted them: the first
test then moves the project away, so that a worker reading the submitter's paths would fail; the second SIGKILLs
worker ``a`` during its first notebook.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.conftest import runs_of
from tests.reliability.faults import clean_env
from tests.reliability.test_dask_retry import _stat, dask_cluster
from tests.team.servers import TeamServer, query
from tests.test_runner import notebook

ALPHAS = [1, 2, 3, 4]
TRAIN = "x\n" + "\n".join(str(i) for i in range(1, 11)) + "\n"  # sum 55
WEIGHTS = "w\n2\n3\n"  # sum 5
BIG = bytes(range(256)) * 1200  # 300 KiB: above the inline limit, it travels as a snapshot

BARRIER = """\
import os, pathlib, time
pathlib.Path(ready, str(os.getpid())).touch()
deadline = time.monotonic() + 600
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.1)"""

READ = """\
import pandas as pd
train = pd.read_csv("data/train.csv")
w = pd.read_csv(weights)
big = open("data/big.bin", "rb").read()
assert sum(big) == big_sum, "data/big.bin is not the submitter's"
print("kernel cwd:", os.getcwd())"""


def _expected_score(alpha: int) -> float:
    return alpha * 55 + 5 + len(BIG)


#: the experiment's active runs as PostgreSQL holds them: (kind, status, sweep index)
PG_RUNS = """
    SELECT k.value, r.status, i.value FROM runs r
    JOIN experiments e ON e.experiment_id = r.experiment_id
    JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'nbmlops.kind'
    LEFT JOIN tags i ON i.run_uuid = r.run_uuid AND i.key = 'nbmlops.sweep.index'
    WHERE e.name = %s AND r.lifecycle_stage = 'active' AND k.value IN ('sweep', 'notebook')
"""


@pytest.fixture
def layout(project: Path) -> Path:
    """The project: ``sub/train.ipynb`` with its ``sub/data/``, and ``shared/weights.csv`` beside ``sub``."""
    (project / "sub" / "data").mkdir(parents=True)
    (project / "shared").mkdir()
    (project / "sub" / "data" / "train.csv").write_text(TRAIN)
    (project / "sub" / "data" / "big.bin").write_bytes(BIG)
    (project / "shared" / "weights.csv").write_text(WEIGHTS)
    return notebook(
        project / "sub" / "train.ipynb",
        "%load_ext nbmlops",
        BARRIER,
        READ,
        "%%track --name fit\nscore = alpha * int(train['x'].sum()) + int(w['w'].sum()) + len(big)",
        parameters="alpha = 1\nweights = '../shared/weights.csv'\nready = ''\ngo = ''\nbig_sum = 0",
    )


@pytest.fixture
def server(project: Path, monkeypatch: pytest.MonkeyPatch, team_server: TeamServer) -> Iterator[str]:
    """The team's ``mlflow server`` (PostgreSQL, artifacts proxied) that the submitter tracks to; yields its URI."""
    monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT")
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", team_server.uri)
    yield team_server.uri


@pytest.fixture
def machines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Per worker: the directory it is started in and its worker folder, both outside the project."""
    return {
        name: {"cwd": tmp_path_factory.mktemp(f"worker-{name}-cwd"), "home": tmp_path_factory.mktemp(f"worker-{name}-home")}
        for name in ("a", "b")
    }


@contextlib.contextmanager
def _cluster(machines: dict[str, dict[str, Path]], folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    workers = {
        name: (where["cwd"], clean_env(NBMLOPS_WORKER_DIR=str(where["home"]))) for name, where in machines.items()
    }
    with dask_cluster(folder, workers) as cluster:
        yield cluster


def _start_sweep(project: Path, address: str, ready: Path, go: Path, outputs: Path) -> subprocess.Popen:
    """``nbmlops sweep --dask`` from the project root, as a process of its own."""
    command = [
        str(Path(sys.executable).with_name("nbmlops")), "sweep", "sub/train.ipynb",
        "--grid", f"alpha={','.join(map(str, ALPHAS))}",
        "-p", "ready", str(ready), "-p", "go", str(go), "-p", "big_sum", str(sum(BIG)),
        "--dask", address, "--ship", "sub/data/big.bin", "--objective", "score", "--output-dir", str(outputs), "--no-progress",
    ]
    return subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_kernels(ready: Path, sweep: subprocess.Popen) -> list[int]:
    """The pids of the kernels waiting at the barrier, once one is."""
    deadline = time.monotonic() + 600
    while not (found := list(ready.iterdir())):
        assert sweep.poll() is None, f"the sweep ended before any notebook ran:\n{sweep.communicate()[0]}"
        assert time.monotonic() < deadline, "no notebook reached the barrier"
        time.sleep(0.2)
    return [int(p.name) for p in found]


def _finished(sweep: subprocess.Popen) -> str:
    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output
    assert "4 run(s), 0 failed" in output, output
    return output


def _notebook_runs(uri: str, experiment: str) -> list[Any]:
    from mlflow import MlflowClient

    return [run for run in runs_of(MlflowClient(uri), experiment) if run.data.tags["nbmlops.kind"] == "notebook"]


def _check_live_runs(uri: str, experiment: str, source: Path) -> list[Any]:
    """One FINISHED run per combination, children of the sweep run, with the metric the shipped data give; the
    runs name the submitter's notebook. Returns every notebook run."""
    from mlflow import MlflowClient

    runs = _notebook_runs(uri, experiment)
    live = [run for run in runs if run.info.status != "KILLED"]
    assert sorted(int(run.data.tags["nbmlops.sweep.index"]) for run in live) == list(range(len(ALPHAS)))
    (sweep,) = [r for r in runs_of(MlflowClient(uri), experiment) if r.data.tags["nbmlops.kind"] == "sweep"]
    for run in live:
        alpha = ALPHAS[int(run.data.tags["nbmlops.sweep.index"])]
        assert run.info.status == "FINISHED", run.data.tags.get("nbmlops.error.message")
        assert run.data.metrics["score"] == _expected_score(alpha)
        assert run.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        assert run.data.tags["nbmlops.notebook"] == str(source)
    assert sweep.data.metrics["best_score"] == _expected_score(ALPHAS[-1])
    return runs


def _check_outputs(outputs: Path, project: Path, machines: dict[str, dict[str, Path]]) -> None:
    """The executed notebooks are written here; their kernels ran in the workers' private directories."""
    assert sorted(p.name for p in outputs.iterdir()) == [f"{i}.ipynb" for i in range(len(ALPHAS))]
    homes = [str(where["home"].resolve()) for where in machines.values()]
    for path in outputs.iterdir():
        executed = nbformat.read(path, as_version=4)
        printed = "".join(o.get("text", "") for cell in executed.cells for o in cell.get("outputs", []))
        cwd = printed.split("kernel cwd: ", 1)[1].split()[0]
        assert any(cwd.startswith(home) for home in homes) and not cwd.startswith(str(project)), cwd
        assert cwd.endswith("/project/sub")
    for where in machines.values():
        assert not (where["cwd"] / ".nbmlops").exists()  # nothing in the directory a worker was started in
        assert (where["home"] / ".nbmlops" / "journal").is_dir()
        assert list((where["home"] / "workspaces").iterdir()) == []  # private directories removed after the run


def test_dask_sweep_runs_from_shipped_files_on_workers_that_share_only_the_tracking_server(
    project: Path, layout: Path, server: str, machines: dict[str, dict[str, Path]],
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
):
    outside = tmp_path_factory.mktemp("outside")
    ready, go, outputs, moved = outside / "ready", outside / "go", outside / "outputs", project.with_name("moved")
    ready.mkdir()
    with _cluster(machines, outside) as (address, _):
        sweep = _start_sweep(project, address, ready, go, outputs)
        try:
            _wait_for_kernels(ready, sweep)
            project.rename(moved)  # from now on, no worker can read the submitter's files
            go.touch()
            _finished(sweep)
        finally:
            if sweep.poll() is None:
                sweep.kill()
            if moved.exists():
                moved.rename(project)
    _check_live_runs(server, request.node.name, layout)
    assert all(run.info.status == "FINISHED" for run in _notebook_runs(server, request.node.name))
    _check_outputs(outputs, project, machines)


def test_dask_sweep_completes_without_duplicates_when_a_worker_is_killed_mid_sweep(
    project: Path, layout: Path, server: str, team_server: TeamServer, machines: dict[str, dict[str, Path]],
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
):
    from mlflow import MlflowClient

    outside = tmp_path_factory.mktemp("outside")
    ready, go, outputs = outside / "ready", outside / "go", outside / "outputs"
    ready.mkdir()
    client = MlflowClient(server)
    with _cluster(machines, outside) as (address, workers):
        sweep = _start_sweep(project, address, ready, go, outputs)
        try:
            deadline = time.monotonic() + 600
            while not (on_a := [k for k in _wait_for_kernels(ready, sweep) if int(_stat(k)[1]) == workers["a"].pid]):
                assert time.monotonic() < deadline, "worker a ran no notebook"
                time.sleep(0.2)
            while not (  # the attempt on a is in the store when a dies
                (experiment := client.get_experiment_by_name(request.node.name)) is not None
                and client.search_runs(
                    [experiment.experiment_id],
                    f"tags.`nbmlops.pid` = '{workers['a'].pid}' and attributes.status = 'RUNNING'",
                )
            ):
                assert time.monotonic() < deadline, "worker a's run never reached the store"
                time.sleep(0.2)
            os.kill(workers["a"].pid, signal.SIGKILL)
            assert workers["a"].wait(timeout=30) == -signal.SIGKILL
            go.touch()
            _finished(sweep)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(on_a[0], signal.SIGKILL)  # the dead worker's kernel, still at the barrier or past it
    runs = _check_live_runs(server, request.node.name, layout)
    killed = [run for run in runs if run.info.status == "KILLED"]
    assert len(runs) == len(ALPHAS) + 1 and len(killed) == 1, [(r.data.tags["nbmlops.sweep.index"], r.info.status)
                                                                for r in runs]
    successor = client.get_run(killed[0].data.tags["nbmlops.superseded_by"])
    assert successor.data.tags["nbmlops.sweep.index"] == killed[0].data.tags["nbmlops.sweep.index"]
    assert successor.info.status == "FINISHED" and successor.data.tags["nbmlops.pid"] == str(workers["b"].pid)
    assert sorted(p.name for p in outputs.iterdir()) == [f"{i}.ipynb" for i in range(len(ALPHAS))]
    # counted in PostgreSQL itself: one sweep run, one live FINISHED run per combination, the dead attempt KILLED
    rows = query(team_server.backend_uri, PG_RUNS, request.node.name)
    assert sorted(rows) == sorted([("sweep", "FINISHED", None)] + [("notebook", "FINISHED", str(i)) for i in
                                  range(len(ALPHAS))] + [("notebook", "KILLED", killed[0].data.tags["nbmlops.sweep.index"])]), rows
    for where in machines.values():
        assert not (where["cwd"] / ".nbmlops").exists()
    # the dead worker's journal waits in its worker folder, for `nbmlops sync` there (or its next run)
    assert list((machines["a"]["home"] / ".nbmlops" / "journal").iterdir())


# -- what travels, and the private directory (no cluster) -------------------------------------------------------


def test_files_named_by_parameters_or_code_under_the_project_travel_and_paths_outside_it_do_not(
    project: Path, layout: Path, tmp_path_factory: pytest.TempPathFactory
):
    from nbmlops.config import resolve_settings
    from nbmlops.runner.workspace import pack_workspace

    (project / "other").mkdir()
    (project / "other" / "o.csv").write_text("o\n1\n")
    (project / ".nbmlops").mkdir(exist_ok=True)
    (project / ".nbmlops" / "secret.txt").write_text("state")
    outside = tmp_path_factory.mktemp("elsewhere") / "far.csv"
    outside.write_text("far\n")
    (project / "sub" / "data" / "big.bin").write_bytes(b"small now")  # all inline: no store needed
    values = [{"weights": "../shared/weights.csv", "o": str(project / "other" / "o.csv"), "far": str(outside),
               "out": "results/new.csv", "label": "fast", "state": "../.nbmlops/secret.txt"}]
    workspace, rewrites = pack_workspace(layout, values, [], resolve_settings())
    assert workspace.notebook == "sub/train.ipynb" and "read_csv" in workspace.notebook_text
    assert sorted(workspace.files) == ["other/o.csv", "pyproject.toml", "shared/weights.csv", "sub/data/big.bin",
                                       "sub/data/train.csv"]
    assert workspace.files["sub/data/train.csv"] == TRAIN.encode() and workspace.snapshots == {}
    assert rewrites == {str(project / "other" / "o.csv"): "../other/o.csv"}  # names the shipped copy


def test_shipping_a_path_outside_the_project_or_a_missing_one_is_refused(
    project: Path, layout: Path, tmp_path_factory: pytest.TempPathFactory
):
    from nbmlops.config import resolve_settings
    from nbmlops.exceptions import SweepError
    from nbmlops.runner.workspace import pack_workspace

    outside = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(SweepError, match="outside the project"):
        pack_workspace(layout, [], [outside], resolve_settings())
    with pytest.raises(SweepError, match="no such file"):
        pack_workspace(layout, [], [project / "missing"], resolve_settings())
    (project / "extra" / "deep").mkdir(parents=True)
    (project / "extra" / "deep" / "e.txt").write_text("e")
    workspace, _ = pack_workspace(layout, [], [project / "extra"], resolve_settings())
    assert "extra/deep/e.txt" in workspace.files


def test_private_directory_mirrors_the_project_is_removed_after_and_abandoned_ones_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from nbmlops.runner.workspace import Workspace, open_workspace

    home = tmp_path / "home"
    monkeypatch.setenv("NBMLOPS_WORKER_DIR", str(home))
    abandoned = home / "workspaces" / "1-dead"
    abandoned.mkdir(parents=True)
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))
    workspace = Workspace("sub/train.ipynb", "{}", {"sub/data/train.csv": b"x\n1\n", "shared/w.csv": b"w\n"})
    with open_workspace(workspace, "http://127.0.0.1:1", None) as placed:
        assert not abandoned.exists()  # no run held it: its worker died
        assert placed.cwd == placed.notebook.parent and placed.notebook.read_text() == "{}"
        assert (placed.cwd / "data" / "train.csv").read_bytes() == b"x\n1\n"
        assert (placed.cwd / ".." / "shared" / "w.csv").read_bytes() == b"w\n"
        assert (placed.cwd.parent / ".nbmlops").resolve() == (home / ".nbmlops").resolve()
        private = placed.cwd.parent.parent
        os.utime(private, (time.time() - 3600, time.time() - 3600))
        with open_workspace(workspace, "http://127.0.0.1:1", None):
            assert private.exists()  # held by its live run
    assert list((home / "workspaces").iterdir()) == [] and (home / ".nbmlops").is_dir()


def test_unpacking_refuses_names_that_reach_the_worker_state_or_leave_the_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from nbmlops.exceptions import SweepError
    from nbmlops.runner.workspace import Workspace, _write, open_workspace

    home = tmp_path / "home"
    monkeypatch.setenv("NBMLOPS_WORKER_DIR", str(home))
    for name in (".nbmlops/journal/x.journal", "sub/.nbmlops/data/ab12", ".git/config", "../x", ""):
        workspace = Workspace("sub/train.ipynb", "{}", {name: b"planted"})
        with pytest.raises(SweepError, match="refusing to unpack"):
            with open_workspace(workspace, "http://127.0.0.1:1", None):
                pass
    with pytest.raises(SweepError, match="refusing to unpack"):
        with open_workspace(Workspace(".nbmlops/journal/n.ipynb", "{}"), "http://127.0.0.1:1", None):
            pass
    assert not (home / ".nbmlops" / "journal").exists() and not list((home / ".nbmlops").iterdir())
    assert not (home / "x").exists()
    # whatever the name, nothing is written through a link that leaves the directory
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SweepError, match="refusing to unpack"):
        _write(project, "linked/deep/x.csv", b"planted")
    assert list(elsewhere.iterdir()) == []


def test_symlinks_travel_under_their_own_names_and_links_leaving_the_project_are_skipped_with_a_warning(
    project: Path, layout: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
):
    from nbmlops.config import resolve_settings
    from nbmlops.runner.workspace import pack_workspace

    far = tmp_path_factory.mktemp("elsewhere") / "far.csv"
    far.write_text("far\n")
    (project / "sub" / "data" / "big.bin").write_bytes(b"small now")
    data = project / "sub" / "data"
    (data / "link.csv").symlink_to("train.csv")
    (data / "far.csv").symlink_to(far)
    (data / "state.csv").symlink_to(project / ".nbmlops" / "x")
    (project / ".nbmlops").mkdir(exist_ok=True)
    (project / ".nbmlops" / "x").write_text("state")
    notebook(project / "sub" / "train.ipynb", "open('data/link.csv').read()")
    workspace, _ = pack_workspace(layout, [], [], resolve_settings())
    assert sorted(workspace.files) == ["pyproject.toml", "sub/data/link.csv"]  # the code names the link
    assert workspace.files["sub/data/link.csv"] == TRAIN.encode()
    capsys.readouterr()
    every = [{"f": "data/far.csv", "alpha": alpha} for alpha in (1, 2)]  # a fixed value is in every combination
    workspace, _ = pack_workspace(layout, every, [data], resolve_settings())
    assert sorted(workspace.files) == [
        "pyproject.toml", "sub/data/big.bin", "sub/data/link.csv", "sub/data/train.csv"
    ]
    (warning,) = capsys.readouterr().err.splitlines()
    assert "1 link(s)" in warning and "sub/data/far.csv" in warning and "outside" in warning, warning


def test_files_named_only_in_the_code_travel_inline_or_not_at_all_and_secrets_need_ship(
    project: Path, layout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from nbmlops.config import resolve_settings
    from nbmlops.exceptions import SweepError
    from nbmlops.runner.workspace import pack_workspace

    monkeypatch.setenv("NBMLOPS_SNAPSHOT_MAX_BYTES", "1000")  # big.bin could not even be stored: no refusal
    secrets = [".env", "keys/server.pem", "tls.key", "credentials.json", "my_secret.txt", "id_rsa", ".netrc",
               ".pypirc"]
    for name in secrets:
        (project / "sub" / name).parent.mkdir(exist_ok=True)
        (project / "sub" / name).write_text("hush")
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "lib" / "site.py").write_text("")
    (project / "node_modules").mkdir()
    (project / "node_modules" / "m.js").write_text("")
    notebook(layout, "\n".join(f"open({name!r})" for name in [*secrets, "data/big.bin", "data/train.csv"]))
    workspace, _ = pack_workspace(layout, [], [], resolve_settings())
    assert sorted(workspace.files) == ["pyproject.toml", "sub/data/train.csv"] and workspace.snapshots == {}
    err = capsys.readouterr().err
    (big,) = [line for line in err.splitlines() if "big.bin" in line]
    assert "--ship sub/data/big.bin" in big
    assert "hush" not in err
    (project / "sub" / "data" / "big.bin").write_bytes(b"small now")  # shipped on purpose, it would be refused
    workspace, _ = pack_workspace(layout, [], [project / "sub" / ".env", project], resolve_settings())
    assert "sub/.env" in workspace.files  # shipped on purpose
    assert not [name for name in workspace.files if name.startswith((".venv/", "node_modules/"))]
    with pytest.raises(SweepError, match="never travel"):
        pack_workspace(layout, [], [project / ".venv" / "lib"], resolve_settings())


def test_a_file_that_vanishes_or_turns_into_a_folder_while_packing_is_a_one_line_sweep_error(project: Path):
    from nbmlops.config import resolve_settings
    from nbmlops.exceptions import SweepError
    from nbmlops.runner.workspace import _split

    gone, folder = project / "gone.csv", project / "folder.csv"
    folder.mkdir()
    with pytest.raises(SweepError, match=r"cannot ship gone\.csv") as caught:
        _split({"gone.csv": gone}, {}, resolve_settings())
    assert "\n" not in str(caught.value)
    with pytest.raises(SweepError, match=r"cannot ship folder\.csv"):
        _split({}, {"folder.csv": folder}, resolve_settings())
