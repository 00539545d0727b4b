"""Item 6 of the trust issue: the first use of a fresh sqlite store, killed while the schema is made.

Real processes are SIGKILLed at varying moments while they create the store's tables (nbmlops' own first
delivery, and MLflow's own store creation); afterwards a delivery must work and the store must be complete
(every table MLflow defines, at its latest schema revision), with every run that was journaled.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    import nbmlops
    with nbmlops.track("first-init", params={"i": int(sys.argv[1])}) as run:
        nbmlops.log_metric("m", float(sys.argv[1]))
    nbmlops.flush(180)
    print("delivered", run.key)
""")
#: seconds after the store's lock is taken at which a process is killed: from the start of the schema to
#: its last migrations on a loaded machine
KILL_DELAYS = (0.1, 0.6, 1.2, 1.9, 2.7, 3.6, 0.3, 4.5)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    env["NBMLOPS_EXPERIMENT"] = "first-init"
    return env


def lock_is_held(lock: Path) -> bool:
    """True while a process holds the store's creation lock (it is opening the store)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_until(predicate, process: subprocess.Popen, timeout: float = 180) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true (True) or the process ended (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the process never started opening the store"
        time.sleep(0.005)
    return True


def assert_complete(db: Path) -> None:
    """The store has every table MLflow defines, at MLflow's latest schema revision (MLflow's own checks)."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _verify_schema
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401 - registers the tables

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    try:
        assert _all_tables_exist(engine)
        _verify_schema(engine)
    finally:
        engine.dispose()


def finished_runs(db: Path) -> dict[str, str]:
    """Param ``i`` -> status of every run of the experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("first-init")
    assert experiment is not None
    return {r.data.params["i"]: r.info.status for r in client.search_runs([experiment.experiment_id], max_results=100)}


def test_first_initialisation_killed_repeatedly_then_delivers_everything(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'first'\n")
    state = tmp_path / ".nbmlops"
    lock, db = state / "mlflow.db.lock", state / "mlflow.db"
    killed_while_creating = 0
    for i, delay in enumerate(KILL_DELAYS):
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(i)], cwd=tmp_path, env=environment(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            if wait_until(lambda: lock_is_held(lock), process):
                time.sleep(delay)
                if process.poll() is None and lock_is_held(lock):
                    killed_while_creating += 1
                process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.communicate(timeout=60)
    assert killed_while_creating >= 3, f"only {killed_while_creating} kills landed while the store was being made"

    last = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(len(KILL_DELAYS))], cwd=tmp_path, env=environment(),
        capture_output=True, text=True, timeout=600,
    )
    assert last.returncode == 0 and "delivered" in last.stdout, last.stdout + last.stderr
    sync = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "sync"], cwd=tmp_path, env=environment(),
        capture_output=True, text=True, timeout=600,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert_complete(db)
    assert finished_runs(db) == {str(i): "FINISHED" for i in range(len(KILL_DELAYS) + 1)}
    assert not list(state.glob("mlflow.db.building*")), "a killed build's leftovers were not cleared"


def test_store_left_half_built_by_a_killed_mlflow_is_rebuilt_and_delivers(tmp_path: Path) -> None:
    """MLflow itself killed while creating the tables leaves a store it cannot open again ("duplicate
    column", "table ... already exists"); nbmlops finds it half-built, holding no run, and rebuilds it."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'half'\n")
    db = tmp_path / ".nbmlops" / "mlflow.db"
    db.parent.mkdir()
    open_with_mlflow = f"from mlflow import MlflowClient; MlflowClient('sqlite:///{db}').search_experiments()"
    # how long MLflow takes to make the tables here, from the file's appearance: the kills land inside that
    process = subprocess.Popen([sys.executable, "-c", open_with_mlflow], cwd=tmp_path, env=environment(),
                               stderr=subprocess.DEVNULL)
    assert wait_until(db.exists, process)
    began = time.monotonic()
    assert process.wait(timeout=300) == 0
    making = time.monotonic() - began
    # the window that breaks it is narrow (the kill must land between the tables and the last migration): many tries
    fractions = [0.5 + sign * step / 40 for step in range(13) for sign in (1, -1)][1:]
    for fraction in fractions + fractions:
        delay = making * fraction
        for leftover in db.parent.glob("mlflow.db*"):
            leftover.unlink()
        process = subprocess.Popen(
            [sys.executable, "-c", open_with_mlflow], cwd=tmp_path, env=environment(), stderr=subprocess.DEVNULL
        )
        created = wait_until(db.exists, process)
        time.sleep(delay)
        process.kill()
        process.wait(timeout=60)
        if not created:
            continue
        again = subprocess.run(
            [sys.executable, "-c", open_with_mlflow], cwd=tmp_path, env=environment(),
            capture_output=True, text=True, timeout=300,
        )
        if again.returncode != 0:
            break  # a store MLflow cannot open any more
    else:
        raise AssertionError("no kill left a store that MLflow could not open again")

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "0"], cwd=tmp_path, env=environment(), capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "delivered" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert_complete(db)
    assert finished_runs(db) == {"0": "FINISHED"}


EXITING = textwrap.dedent("""
    import fcntl, os, time
    import nbmlops
    with nbmlops.track("first-init", params={"i": 0}) as run:
        nbmlops.log_metric("m", 0.0)
    # exit as soon as the writer (a daemon thread) has begun making the store
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            fd = os.open(".nbmlops/mlflow.db.lock", os.O_RDONLY)
        except FileNotFoundError:
            time.sleep(0.005)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            break
        finally:
            os.close(fd)
        time.sleep(0.005)
    time.sleep(0.2)
    print("exiting")
""")


def test_a_process_exiting_while_its_writer_makes_the_store_leaves_it_complete(tmp_path: Path) -> None:
    """Under load, the first process of a project exits (flush timeout 0) while its writer thread, a daemon,
    is making the store: the exit waits for the schema, so the store is complete, and a sync delivers the run.

    The load is real and bounded: the process shares one CPU, at a lower priority, with a busy loop.
    """
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'exiting'\n")
    db = tmp_path / ".nbmlops" / "mlflow.db"
    env = {**environment(), "NBMLOPS_FLUSH_TIMEOUT": "0"}
    cpu = min(os.sched_getaffinity(0))
    hog = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end: pass"]
    )
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        process = subprocess.Popen(
            [sys.executable, "-c", EXITING], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        os.sched_setaffinity(process.pid, {cpu})
        os.setpriority(os.PRIO_PROCESS, process.pid, 5)
        stdout, stderr = process.communicate(timeout=600)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        hog.kill()
        hog.wait()
    assert result.returncode == 0 and "exiting" in result.stdout, result.stdout + result.stderr
    assert_complete(db)  # before any other process opens it
    sync = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "sync"], cwd=tmp_path, env=environment(),
        capture_output=True, text=True, timeout=600,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert finished_runs(db) == {"0": "FINISHED"}


def test_an_empty_store_file_another_process_holds_open_is_made_in_place_never_replaced(tmp_path: Path) -> None:
    """A user's own MLflow (another process) opened the new store's path first, creating an empty file, and was
    slow to make its tables: nbmlops makes the schema in that very file, so the other process keeps seeing the
    store every later run goes to (a replaced file would leave it on a deleted copy)."""
    import sqlite3

    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    held = sqlite3.connect(store)
    held.execute("PRAGMA user_version").fetchone()  # the file exists, empty: no table yet
    inode = store.stat().st_ino
    past = time.time() - 60
    os.utime(store, (past, past))  # its maker is slow: nothing written for a while
    env = environment()
    env["NBMLOPS_TRACKING_URI"] = f"sqlite:///{store}"
    done = subprocess.run([sys.executable, "-c", SCRIPT, "7"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0 and "delivered" in done.stdout, done.stderr[-2000:]
    assert store.stat().st_ino == inode
    assert held.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    held.close()
