"""Group commit on a local sqlite store: the store is in WAL mode, nbmlops' deliveries commit with
``synchronous=NORMAL`` while the user's own MLflow calls on the same store keep ``FULL``, and the WAL is fsync'd
before the journal's cursor moves (the real fsync calls of this process, logged in order by wrapping ``os.fsync``
and ``os.fdatasync``: sqlite's own fsyncs happen in C and do not show)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

TRIVIAL = "%%track\nalpha = 0.5\nacc = alpha * 2"


def _db(store_uri: str) -> Path:
    return Path(store_uri[len("sqlite:///") :])


def test_store_file_is_in_wal_mode_after_nbmlops_opened_it(shell, store_uri: str) -> None:
    import nbmlops

    assert shell.run_cell(TRIVIAL, store_history=True).success
    nbmlops.flush(120)
    connection = sqlite3.connect(_db(store_uri))
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()


@pytest.fixture
def commit_levels():
    """``(thread name, PRAGMA synchronous)`` of every commit any SQLAlchemy engine makes to a sqlite file, read
    from the real connection as it commits."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen: list[tuple[str, str, int]] = []

    def on_commit(connection) -> None:
        raw = connection.connection.dbapi_connection
        if isinstance(raw, sqlite3.Connection):
            file = next(f for _, name, f in raw.execute("PRAGMA database_list") if name == "main")
            level = raw.execute("PRAGMA synchronous").fetchone()[0]
            seen.append((threading.current_thread().name, os.path.realpath(file), level))

    event.listen(Engine, "commit", on_commit)
    yield seen
    event.remove(Engine, "commit", on_commit)


def _records(experiment: str, runs: int) -> list[dict]:
    """The records of ``runs`` trivial runs, as a journal holds them."""
    import time
    import uuid

    now = int(time.time() * 1000)
    records: list[dict] = []
    for _ in range(runs):
        key = uuid.uuid4().hex
        records += [
            {"t": "start", "run": key, "experiment": experiment, "ts": now, "tags": {"nbmlops.kind": "cell"}},
            {"t": "params", "run": key, "params": {"alpha": "0.5"}},
            {"t": "metrics", "run": key, "metrics": [["acc", 1.0, 0, now]]},
            {"t": "end", "run": key, "status": "FINISHED", "ts": now},
        ]
    return records


def test_delivery_commits_with_synchronous_normal_and_the_users_own_mlflow_calls_with_full(
    project, store_uri: str, commit_levels: list[tuple[str, str, int]], request
) -> None:
    """What the delivery process runs (``Store.deliver``, here in a thread of this process, where the commits
    can be watched) commits with NORMAL; the user's own fluent MLflow calls on the same store keep FULL."""
    import mlflow

    from nbmlops.backend.store import open_store

    store = open_store(store_uri, os.environ["NBMLOPS_ARTIFACT_ROOT"])
    store.experiment_id(request.node.name[:200])  # the store open (and in WAL mode) before commits are watched
    commit_levels.clear()
    worker = threading.Thread(
        target=store.deliver, args=(_records(request.node.name[:200], 3), {}, False), name="nbmlops-delivery"
    )
    worker.start()
    worker.join()
    # the user's own fluent MLflow calls in the main thread, on the same store (MLflow's cached engine)
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_experiment(request.node.name[:200] + "-by-hand")
    with mlflow.start_run():
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("acc", 1.0)
    mlflow.set_tracking_uri(None)
    path = os.path.realpath(_db(store_uri))
    mine = [(thread, level) for thread, file, level in commit_levels if file == path]
    users = {level for thread, level in mine if thread == threading.main_thread().name}
    delivery = [level for thread, level in mine if thread == "nbmlops-delivery"]
    assert users == {2}, mine  # FULL: MLflow's default durability for the user's own calls
    # the three runs' creations, batches and ends (at least 3 x 3 commits) went with NORMAL, and only with it
    assert delivery.count(1) >= 9 and set(delivery) == {1}, mine


def test_live_delivery_settles_the_store_before_each_cursor_save(
    shell, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live writer's records are applied by the delivery process; its settle (the WAL's fsync, there)
    is answered before the journal's cursor is saved, every time."""
    import nbmlops
    from nbmlops.backend.delivery_process import RemoteStore, delivery_process

    assert shell.run_cell(TRIVIAL, store_history=True).success  # the store is open, its WAL made
    nbmlops.flush(120)
    assert delivery_process().pid not in (None, os.getpid())
    events: list[str] = []
    real_fsync, real_settle = os.fsync, RemoteStore.settle

    def fsync(fd) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        events.append("fsync " + os.readlink(f"/proc/self/fd/{number}"))
        real_fsync(fd)

    def settle(self) -> None:
        real_settle(self)
        events.append("settled")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(RemoteStore, "settle", settle)
    for _ in range(3):
        assert shell.run_cell(TRIVIAL, store_history=True).success
        nbmlops.flush(120)
    monkeypatch.undo()
    cursor_saves = [i for i, event in enumerate(events) if event.endswith(f".tmp{os.getpid()}")]  # Cursor.save
    assert len(cursor_saves) >= 3, events
    previous = -1
    for index in cursor_saves:
        assert "settled" in events[previous + 1 : index], (index, events)  # this batch made durable first
        previous = index


CHILD = """
import time
import nbmlops
with nbmlops.track("left-behind", experiment="sync-settles"):
    nbmlops.log_metric("m", 1.0)
print("journaled", flush=True)
time.sleep(600)
"""


def test_sync_fsyncs_the_wal_before_it_removes_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import subprocess
    import sys

    from nbmlops.backend.addresses import StoreAddresses
    from nbmlops.tracking.delivery import sync_journals

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'sync-settles'\n")
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be: the process cannot deliver")
    store = f"sqlite:///{blocker / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JPY_"))}
    env["NBMLOPS_TRACKING_URI"] = store
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=project, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "journaled"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()
    journal_dir = project / ".nbmlops" / "journal"
    (journal,) = journal_dir.glob("*.journal")
    blocker.unlink()

    events: list[str] = []
    real_fsync, real_fdatasync, real_unlink = os.fsync, os.fdatasync, os.unlink

    def logged(real):
        def sync(fd) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            events.append("fsync " + os.readlink(f"/proc/self/fd/{number}"))
            real(fd)

        return sync

    def unlink(path, *args, **kwargs) -> None:
        events.append(f"unlink {os.path.realpath(path)}")
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", logged(real_fsync))
    monkeypatch.setattr(os, "fdatasync", logged(real_fdatasync))
    monkeypatch.setattr(os, "unlink", unlink)
    report = sync_journals(journal_dir, addresses=StoreAddresses.from_environment(store))
    monkeypatch.undo()
    assert report.ok, report.problems()
    assert report.delivered >= 3 and not journal.exists()
    wal = os.path.realpath(blocker / "mlflow.db") + "-wal"
    removed = events.index(f"unlink {os.path.realpath(journal)}")
    assert f"fsync {wal}" in events[:removed], events  # the store's WAL durable before the journal lets go
