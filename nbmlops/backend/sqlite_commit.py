"""Group commit on a local sqlite store: nbmlops' deliveries commit without an fsync each, then one fsync makes
a whole delivered batch durable before the journal lets go of it.

A store nbmlops opens is in WAL mode (:mod:`nbmlops.backend.sqlite_schema`). Each connection of any SQLAlchemy
engine on such a store is set, at every checkout from its pool, to ``PRAGMA synchronous=NORMAL`` when the
checking-out thread is inside :func:`delivering`, else to ``FULL`` (sqlite's default: what MLflow's own client
gets, also when the user's ``mlflow.log_metric`` shares the engine). With WAL and NORMAL a crashed process loses
no commit; a power cut may lose the latest commits, never corrupt the database. Those commits are still in
nbmlops' journal until :func:`settle` has fsync'd the WAL: the journal's cursor moves, and a journal is removed,
only after that.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbmlops.journal import make_durable

__all__ = ["delivering", "group_commit", "settle"]

_NORMAL, _FULL = 1, 2
_local = threading.local()
_paths: set[str] = set()  # the sqlite stores nbmlops opened in this process (real paths)
_lock = threading.Lock()
_listening = False
_settled_wal: dict[str, tuple[int, int]] = {}  # store path -> (device, inode) of the WAL whose folder was synced


def group_commit(path: Path) -> None:
    """Let nbmlops' deliveries to the sqlite store at ``path`` commit without an fsync each (see the module);
    every other use of it keeps sqlite's ``synchronous=FULL``."""
    global _listening
    with _lock:
        _paths.add(os.path.realpath(path))
        if _listening:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "checkout", _on_checkout)
        _listening = True


@contextlib.contextmanager
def delivering() -> Iterator[None]:
    """Within the block, this thread's sqlite connections to the stores of :func:`group_commit` commit with
    ``synchronous=NORMAL``."""
    outer, _local.delivering = getattr(_local, "delivering", False), True
    try:
        yield
    finally:
        _local.delivering = outer


def settle(path: Path) -> None:
    """Make every commit to the sqlite store at ``path`` durable: fsync its WAL (and its folder, the first time
    this WAL file is seen); without a WAL (every commit is in the database file), fsync the database.

    Raises:
        OSError: the disk refused (the journal then keeps the records).
    """
    wal = path.with_name(path.name + "-wal")
    try:
        fd = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        make_durable(path)
        return
    try:
        os.fsync(fd)
        status = os.fstat(fd)
    finally:
        os.close(fd)
    seen = (status.st_dev, status.st_ino)
    if _settled_wal.get(str(path)) != seen:
        make_durable(path.parent)
        _settled_wal[str(path)] = seen


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """SQLAlchemy's pool checkout hook: set ``synchronous`` on connections to our stores."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    if "nbmlops_store" not in record.info:
        record.info["nbmlops_store"] = _main_file(dbapi_connection) if _in_wal(dbapi_connection) else None
    if record.info["nbmlops_store"] not in _paths:
        return  # not our store, or not in WAL mode (where NORMAL could corrupt it on a power cut): left alone
    level = _NORMAL if getattr(_local, "delivering", False) else _FULL
    dbapi_connection.execute(f"PRAGMA synchronous={level}")  # microseconds, no I/O


def _in_wal(connection: sqlite3.Connection) -> bool:
    """True when the connection's database is in WAL mode."""
    return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def _main_file(connection: sqlite3.Connection) -> str | None:
    """The real path of the database file a sqlite connection opened (None for an in-memory one)."""
    for _, name, file in connection.execute("PRAGMA database_list"):
        if name == "main":
            return os.path.realpath(file) if file else None
    return None
