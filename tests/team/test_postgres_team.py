"""Team mode on PostgreSQL: several users' processes tracking to one ``mlflow server`` at once, and a server that
dies with a run half delivered. Every count is read straight from PostgreSQL (past MLflow): nothing lost, nothing
duplicated.

The users are real processes, each with a project folder of its own (as on a machine of its own) and a real
IPython shell running ``%%track`` cells; the server is killed with SIGKILL and started again on the same port and
database, while a loopback proxy holds a run's params and metrics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability.faults import Fault, FaultProxy, clean_env, nbmlops_cli, project_folder, wait_for
from tests.team.servers import TeamServer, mlflow_team_server, new_database, query

#: a user's session: a real IPython shell runs ``cells`` tracked cells named ``<user>-<i>``, waiting for the file
#: ``go`` before the first and ``pause`` seconds between them; then, once the file ``release`` exists, flushes for
#: ``flush`` seconds and says how many records still wait
USER = """
import sys, time
from pathlib import Path
from IPython.core.interactiveshell import InteractiveShell
import nbmlops
from nbmlops.exceptions import FlushTimeoutError

user, cells, pause, flush = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
go, release = Path(sys.argv[5]), Path(sys.argv[6])
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "nbmlops")
print("ready", flush=True)
while not go.exists():
    time.sleep(0.02)
for i in range(cells):
    result = ip.run_cell(f"%%track --name {user}-{i}\\nalpha = {i}\\nacc = alpha * 2.0 + 0.5")
    if not result.success:
        raise SystemExit(f"cell {i} failed: {result.error_in_exec!r}")
    print("cell", i, flush=True)
    time.sleep(pause)
while not release.exists():
    time.sleep(0.02)
try:
    nbmlops.flush(flush)
    print("left 0", flush=True)
except FlushTimeoutError as waiting:
    print("left", waiting.pending, flush=True)
"""

#: the rows of the experiment's live runs: (name, status, params 'alpha', metric rows 'acc', acc's values)
RUN_ROWS = """
SELECT r.name, r.status,
       (SELECT count(*) FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = 'alpha'),
       (SELECT count(*) FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'acc'),
       (SELECT string_agg(m.value::text, ',') FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'acc'),
       (SELECT min(p.value) FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = 'alpha')
FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE e.name = %s AND r.lifecycle_stage = 'active'
ORDER BY r.name
"""


def _user_env(server: str, experiment: str, **extra: str) -> dict[str, str]:
    return clean_env(NBMLOPS_TRACKING_URI=server, NBMLOPS_EXPERIMENT=experiment, **extra)


def _start_user(folder: Path, env: dict[str, str], user: str, cells: int, go: Path, pause: float = 0.0,
                flush: float = 120, release: Path | None = None) -> subprocess.Popen:
    env = {**env, "IPYTHONDIR": str(folder / ".ipython")}
    return subprocess.Popen(
        [sys.executable, "-c", USER, user, str(cells), str(pause), str(flush), str(go), str(release or go)],
        cwd=folder, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"a user's process still ran after {timeout} s:\n{out}\n{err[-3000:]}") from None
    assert process.returncode == 0, f"{out}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    return out


def _expected(users: list[str], cells: int) -> list[tuple]:
    return sorted((f"{u}-{i}", "FINISHED", 1, 1, str(i * 2.0 + 0.5), str(i)) for u in users for i in range(cells))


def _rows(backend_uri: str, experiment: str) -> list[tuple]:
    return [tuple(row) for row in query(backend_uri, RUN_ROWS, experiment)]


def _runs_in_store(backend_uri: str, experiment: str) -> int:
    found = query(backend_uri, "SELECT count(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id"
                               " WHERE e.name = %s", experiment)
    return int(found[0][0])


def test_two_users_tracking_at_once_to_one_experiment_land_every_run_once_in_postgres(team_server, tmp_path, request):
    experiment = request.node.name
    go = tmp_path / "go"
    users = ["ada", "bob"]
    cells = 6
    processes = [
        _start_user(project_folder(tmp_path / user), _user_env(team_server.uri, experiment), user, cells, go)
        for user in users
    ]
    for process in processes:  # both loaded and waiting, then both start at once (the experiment is new to both)
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert line.strip() == "ready", line + (process.stderr.read() if process.poll() is not None else "")
    go.touch()
    outputs = [_finish(process) for process in processes]

    assert all(out.rstrip().endswith("left 0") for out in outputs), outputs
    assert query(team_server.backend_uri, "SELECT count(*) FROM experiments WHERE name = %s", experiment) == [(1,)]
    assert _rows(team_server.backend_uri, experiment) == _expected(users, cells)
    assert _runs_in_store(team_server.backend_uri, experiment) == len(users) * cells  # no deleted twin either


def _kill_mid_run(server: TeamServer, proxy: FaultProxy, backend: str, experiment: str,
                  user: subprocess.Popen) -> list[tuple]:
    """Once a few runs are in PostgreSQL, hold the next upload of a run's artifacts at the proxy (the run is
    created, its params and metrics are stored, it has not ended) and SIGKILL the server meanwhile; the names of
    the live runs still RUNNING in PostgreSQL at that moment."""
    wait_for(lambda: _runs_in_store(backend, experiment) >= 3 or user.poll() is not None, 240,
             "the first runs in PostgreSQL")
    proxy.add(Fault("hang", path="/mlflow-artifacts/artifacts/", method="PUT", times=1))
    wait_for(lambda: proxy.count("/mlflow-artifacts/artifacts/", action="hang") == 1 or user.poll() is not None, 240,
             "a run half delivered")
    assert user.poll() is None, "the user's session ended before the server was killed"
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=60)
    proxy.clear()
    return [tuple(row) for row in query(backend, HALF_RUNS, experiment)]


#: the live runs of an experiment that have not ended: (name,)
HALF_RUNS = """
SELECT r.name FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE e.name = %s AND r.lifecycle_stage = 'active' AND r.status = 'RUNNING'
"""


def test_server_killed_with_a_run_half_delivered_then_flush_after_restart_loses_and_duplicates_nothing(
    pg_uri, tmp_path, request
):
    """The user's kernel lives through the outage: its writer delivers the rest once the server is back, finishing
    the half-delivered run (whose id it knows) instead of creating it again."""
    experiment = request.node.name
    backend = new_database(pg_uri)
    folder, artifacts, go = tmp_path / "server", str(tmp_path / "artifacts"), tmp_path / "go"
    cells = 12
    with mlflow_team_server(folder, backend, artifacts, env=clean_env()) as server, FaultProxy(server.uri) as proxy:
        user = _start_user(project_folder(tmp_path / "ada"), _user_env(proxy.uri, experiment, NBMLOPS_CALL_TIMEOUT="3"),
                           "ada", cells, go, pause=0.4, flush=240)
        go.touch()
        half = _kill_mid_run(server, proxy, backend, experiment, user)
        time.sleep(3)  # cells keep running against the dead server
        with mlflow_team_server(folder, backend, artifacts, port=server.port, env=clean_env()):
            output = _finish(user)
            rows = _rows(backend, experiment)

    assert len(half) == 1, half  # the server died with a run created and not yet ended
    assert [line for line in output.splitlines() if line.startswith("cell")] == [f"cell {i}" for i in range(cells)]
    assert output.rstrip().endswith("left 0"), output
    assert rows == _expected(["ada"], cells)
    assert _runs_in_store(backend, experiment) == cells  # no deleted twin either


def test_server_killed_with_a_run_half_delivered_and_user_gone_then_sync_after_restart_loses_and_duplicates_nothing(
    pg_uri, tmp_path, request
):
    """The user's process ends while the server is down; ``nbmlops sync`` in the project delivers the rest: it
    finds the half-delivered run by its key instead of creating a twin."""
    experiment = request.node.name
    backend = new_database(pg_uri)
    folder, artifacts, go = tmp_path / "server", str(tmp_path / "artifacts"), tmp_path / "go"
    project = project_folder(tmp_path / "ada")
    cells = 10
    with mlflow_team_server(folder, backend, artifacts, env=clean_env()) as server, FaultProxy(server.uri) as proxy:
        env = _user_env(proxy.uri, experiment)
        user = _start_user(project, {**env, "NBMLOPS_CALL_TIMEOUT": "3", "NBMLOPS_FLUSH_TIMEOUT": "2"}, "ada", cells,
                           go, pause=0.3, flush=2, release=tmp_path / "release")
        go.touch()
        half = _kill_mid_run(server, proxy, backend, experiment, user)
        (tmp_path / "release").touch()  # its last flush and its exit while the server is down
        output = _finish(user)
        assert not output.rstrip().endswith("left 0"), "everything was delivered although the server was down"
        with mlflow_team_server(folder, backend, artifacts, port=server.port, env=clean_env()):
            synced = nbmlops_cli(project, "sync", env=env)
            rows = _rows(backend, experiment)
            again = nbmlops_cli(project, "sync", env=env)
            rows_again = _rows(backend, experiment)

    assert len(half) == 1, half
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert rows == _expected(["ada"], cells)
    assert _runs_in_store(backend, experiment) == cells  # no deleted twin either
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows_again == rows  # a second sync adds nothing
