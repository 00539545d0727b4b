"""A local sqlite tracking store made safely when several processes open it at once.

Under an exclusive file lock (``<store>.lock``), a store that does not exist yet is built beside its path
(``<store>.building-<unique>``) by MLflow's own client and moved into place once complete, so that a process
killed while building it leaves no store; one left half-built (by an older version, or by MLflow itself) that
holds no run is rebuilt. The database uses WAL, so that concurrent writers wait for each other.

Whether a store is complete is read from MLflow's documented schema, not from MLflow's internals: its table
names and its ``alembic_version`` row are compared with what a store freshly built by this MLflow holds (kept
in ``<store>.schema-mlflow-<version>.json`` beside the lock, made once per MLflow release).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version as package_version
from pathlib import Path

from nbmlops.exceptions import StoreUnavailableError
from nbmlops.journal import make_durable

__all__ = ["SQLITE_WAIT_S", "ready"]

#: how long a local sqlite store waits for another local process (its lock, its schema creation)
SQLITE_WAIT_S = 60.0
#: how long an exiting process waits for a store it is opening (and perhaps making), so that short
#: processes do not each start the schema anew and never finish it
_OPEN_AT_EXIT_S = 120.0
#: a store whose files changed this recently is taken to be in the making by another process, and waited for
_BUILDING_QUIET_S = 5.0
_opened = threading.Condition()
_openings = 0
_references: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}  # MLflow release -> (tables, revisions)


@contextlib.contextmanager
def ready(path: Path, display_uri: str, artifact_root: str | None) -> Iterator[None]:
    """Hold the store's lock with its schema complete (built, or rebuilt when half-built and empty).

    Raises:
        StoreUnavailableError: it is half-built and holds runs (a user must back it up and upgrade it), or
            another process holds its lock for over a minute.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # schema creation and migration chatter (also from the registry's own store, made on first use)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    # MLflow logs a database error (a lock held past the busy timeout) with its whole traceback before it
    # raises it; nbmlops reports it in one line (store unavailable), so the traceback is only noise
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    with _file_lock(path.with_name(path.name + ".lock"), display_uri), _opening():
        state = _settled_schema_state(path)
        if state == "half-built" and _holds_records(path):
            raise StoreUnavailableError(
                display_uri,
                "its schema was left half-migrated and it holds runs: back it up, then run "
                f"`mlflow db upgrade {display_uri}`",
            )
        if state == "missing" and path.exists():
            _make_in_place(path, display_uri, artifact_root)
        elif state != "complete":
            _build(path, artifact_root)
        else:
            connection = sqlite3.connect(path, timeout=SQLITE_WAIT_S)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
            finally:
                connection.close()
        yield


def _make_in_place(path: Path, display_uri: str, artifact_root: str | None) -> None:
    """Make the schema in an existing store file that has no table yet: another process (a user's own MLflow)
    may hold it open, slow to make its tables, and a file replaced under it would leave it on a deleted copy.
    If that process makes the tables at the same moment, whichever is second finds them made."""
    try:
        _make_schema(path)
    except Exception:  # the other maker won a race on a table: read what it made
        if _settled_schema_state(path) != "complete":
            raise StoreUnavailableError(
                display_uri, "its schema could not be made: another process is making it, or it is damaged"
            ) from None
    _finish_schema(path, path, artifact_root)


def _finish_schema(database: Path, path: Path, artifact_root: str | None) -> None:
    """After MLflow made the schema in ``database`` (the store at ``path``, or a file beside it): the default
    experiment's artifacts under ours (as for every experiment nbmlops makes), WAL, the reference remembered,
    the file durable."""
    connection = sqlite3.connect(database, timeout=SQLITE_WAIT_S)
    try:
        if artifact_root:
            location = f"{Path(artifact_root).resolve().as_uri()}/0"
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,))
            connection.commit()
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    _remember_reference(path, _read_schema(database))
    make_durable(database)


def _build(path: Path, artifact_root: str | None) -> None:
    """Make the MLflow schema in ``<path>.building-<unique>``, then move it to ``path`` (replacing a store with
    no tables, or a half-built one that holds nothing). A process killed meanwhile leaves no store.

    The name is new at each build: MLflow keeps an engine per database URI for the life of the process.
    """
    for leftover in path.parent.glob(f"{glob.escape(path.name)}.building-*"):
        leftover.unlink(missing_ok=True)  # of a process killed while building: we hold the lock
    building = path.with_name(f"{path.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _make_schema(building)
    _finish_schema(building, path, artifact_root)
    if not path.exists():
        try:
            os.link(building, path)  # never over a store another process (MLflow itself) made meanwhile
        except FileExistsError:
            pass
        else:
            building.unlink()
            make_durable(path.parent)
            return
        if _settled_schema_state(path) == "complete":
            building.unlink()
            return
    if _held_open(path):  # never replace a file a live process has open: it would go on in a deleted copy
        building.unlink()
        raise StoreUnavailableError(
            f"sqlite:///{path}", "its schema is incomplete and another process has it open (making it?): try again"
        )
    for stale in _sqlite_files(path)[1:]:
        stale.unlink(missing_ok=True)  # the journal of the store being replaced, if any
    os.replace(building, path)
    make_durable(path.parent)


def _make_schema(database: Path) -> None:
    """Let MLflow's public client make its schema in a new sqlite file (it does on first use)."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments(max_results=1)


@contextlib.contextmanager
def _file_lock(path: Path, uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, waiting up to a minute for another process."""
    with open(path, "w") as lock:
        deadline = time.monotonic() + SQLITE_WAIT_S
        delay = 0.01
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        uri, f"another process has held {path.name} for over {SQLITE_WAIT_S:g} s (creating the store?)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield


def _read_schema(path: Path) -> tuple[frozenset[str], tuple[str, ...]]:
    """A sqlite file's table names and the revisions its ``alembic_version`` table holds."""
    connection = sqlite3.connect(path, timeout=SQLITE_WAIT_S)
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revisions = (
            tuple(sorted(v for (v,) in connection.execute("SELECT version_num FROM alembic_version")))
            if "alembic_version" in tables
            else ()
        )
    finally:
        connection.close()
    return frozenset(tables), revisions


def _schema_state(path: Path) -> str:
    """``missing`` (no file, or no table), ``complete`` (every table a fresh store of this MLflow has, at its
    schema revision) or ``half-built``."""
    if not path.exists():
        return "missing"
    tables, revisions = _read_schema(path)
    if not tables:
        return "missing"
    expected_tables, expected_revisions = _reference(path)
    return "complete" if expected_tables <= tables and revisions == expected_revisions else "half-built"


def _reference(path: Path) -> tuple[frozenset[str], tuple[str, ...]]:
    """What a store freshly built by this MLflow holds: remembered in this process, kept beside the store's lock,
    else built once in a temporary folder."""
    release = package_version("mlflow")
    if release in _references:
        return _references[release]
    kept = _reference_file(path, release)
    try:
        data = json.loads(kept.read_text())
        _references[release] = frozenset(data["tables"]), tuple(data["revisions"])
        return _references[release]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with tempfile.TemporaryDirectory(prefix="nbmlops-schema-") as tmp:
        fresh = Path(tmp, "reference.db")
        _make_schema(fresh)
        schema = _read_schema(fresh)
    _remember_reference(path, schema)
    return schema


def _remember_reference(path: Path, schema: tuple[frozenset[str], tuple[str, ...]]) -> None:
    release = package_version("mlflow")
    _references[release] = schema
    kept = _reference_file(path, release)
    temporary = kept.with_name(f"{kept.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"tables": sorted(schema[0]), "revisions": list(schema[1])}))
        os.replace(temporary, kept)
    except OSError:  # a read-only folder: remembered in this process only
        temporary.unlink(missing_ok=True)


def _reference_file(path: Path, release: str) -> Path:
    return path.with_name(f"{path.name}.schema-mlflow-{release}.json")


def _settled_schema_state(path: Path) -> str:
    """:func:`_schema_state`, waiting while an incomplete store is still being written: a store another process
    (MLflow itself, a user's client) is making right now is waited for, never rebuilt under its feet."""
    deadline = time.monotonic() + SQLITE_WAIT_S
    while True:
        state = _schema_state(path)
        if state == "complete" or time.monotonic() > deadline:
            return state
        if not _recently_written(path) and not _held_open(path):
            return state
        time.sleep(0.2)


def _held_open(path: Path) -> bool:
    """True when a process (this one included) has the database file open: someone (MLflow making its tables
    slowly, on a loaded machine) may be writing it. Read from ``/proc``; False where there is none."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    try:
        target = os.stat(path)
    except FileNotFoundError:
        return False
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue  # another user's process, or gone
        for entry in entries:
            try:
                found = os.stat(entry)
            except OSError:
                continue
            if (found.st_ino, found.st_dev) == (target.st_ino, target.st_dev):
                return True
    return False


def _recently_written(path: Path) -> bool:
    """True when the database (or its WAL) changed in the last few seconds: someone may be making it."""
    now = time.time()
    for file in _sqlite_files(path):
        try:
            if now - file.stat().st_mtime < _BUILDING_QUIET_S:
                return True
        except FileNotFoundError:
            continue
    return False


def _holds_records(path: Path) -> bool:
    """True when a store holds anything a user made: a run, a model, an experiment besides the default."""
    connection = sqlite3.connect(path, timeout=SQLITE_WAIT_S)
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        queries = [f"SELECT 1 FROM {t} LIMIT 1" for t in ("runs", "registered_models", "logged_models") if t in tables]
        if "experiments" in tables:
            queries.append("SELECT 1 FROM experiments WHERE experiment_id <> 0 LIMIT 1")
        return any(connection.execute(query).fetchone() for query in queries)
    finally:
        connection.close()


def _sqlite_files(path: Path) -> list[Path]:
    """A sqlite database and the files sqlite keeps beside it."""
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))]


@contextlib.contextmanager
def _opening() -> Iterator[None]:
    """Count this thread as opening a sqlite store (its schema may be in the making) until the block ends."""
    global _openings
    with _opened:
        _openings += 1
    try:
        yield
    finally:
        with _opened:
            _openings -= 1
            _opened.notify_all()


@atexit.register
def _finish_openings() -> None:
    """At exit, let a store that another thread (the writer's, a daemon) is opening, and perhaps making, be
    made: else every short process would start the schema anew and none would finish it."""
    with _opened:
        _opened.wait_for(lambda: _openings == 0, timeout=_OPEN_AT_EXIT_S)
