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


def test_delivery_commits_with_synchronous_normal_and_the_users_own_mlflow_calls_with_full(
    shell, store_uri: str, commit_levels: list[tuple[str, str, int]], request
) -> None:
    import mlflow

    import nbmlops

    assert shell.run_cell(TRIVIAL, store_history=True).success  # opens the store (and its engine)
    nbmlops.flush(120)
    commit_levels.clear()
    for _ in range(3):
        assert shell.run_cell(TRIVIAL, store_history=True).success
    nbmlops.flush(120)
    # the user's own fluent MLflow calls in the kernel's thread, on the same store (MLflow's cached engine)
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_experiment(request.node.name[:200] + "-by-hand")
    with mlflow.start_run():
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("acc", 1.0)
    mlflow.set_tracking_uri(None)
    path = os.path.realpath(_db(store_uri))
    mine = [(thread, level) for thread, file, level in commit_levels if file == path]
    users = {level for thread, level in mine if thread == threading.main_thread().name}
    background = [level for thread, level in mine if thread != threading.main_thread().name]
    assert users == {2}, mine  # FULL: MLflow's default durability for the user's own calls
    # the three runs' creations, batches and ends (at least 3 x 3 commits) went with NORMAL
    assert background.count(1) >= 9, mine


def test_wal_is_fsynced_before_each_cursor_save(shell, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbmlops

    assert shell.run_cell(TRIVIAL, store_history=True).success  # the store is open, its WAL made
    nbmlops.flush(120)
    synced: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def logged(real):
        def sync(fd) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            synced.append(os.readlink(f"/proc/self/fd/{number}"))
            real(fd)

        return sync

    monkeypatch.setattr(os, "fsync", logged(real_fsync))
    monkeypatch.setattr(os, "fdatasync", logged(real_fdatasync))
    for _ in range(3):
        assert shell.run_cell(TRIVIAL, store_history=True).success
        nbmlops.flush(120)
    monkeypatch.undo()
    wal = os.path.realpath(_db(store_uri)) + "-wal"
    cursor_saves = [i for i, path in enumerate(synced) if path.endswith(f".tmp{os.getpid()}")]  # Cursor.save
    assert len(cursor_saves) >= 3, synced
    previous = -1
    for index in cursor_saves:
        assert wal in synced[previous + 1 : index], (index, synced)  # this batch's commits made durable first
        previous = index
