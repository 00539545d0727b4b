"""The version a serving process answers with, and the thread that follows the alias.

A :class:`Served` is immutable: the version, its MLflow ``PyFuncModel`` and MLflow's scoring app for it. A
:class:`Follower` holds the one serving now in :attr:`Follower.current`; a request reads that attribute once, at
its start, and is answered by that version to its end. Every ``poll`` seconds the follower asks the registry
where the alias points; when it moved, the new version is downloaded, checked (:mod:`nbmlops.registry.safe_load`:
the same rules as ``nbmlops monitor``), loaded and made to answer its own input example in the follower's thread,
its signature compared with the serving one (:func:`nbmlops.backend.scoring.incompatibility`), and it is swapped in
with one assignment. A version that fails to load, fails on its own example or does not fit is refused (one line
on stderr, and the ``on_refused`` callback) and is not tried again until the alias moves to another version; the
old version keeps serving. A store that does not answer is said once on stderr, and asked again at the next poll.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbmlops.backend.models import download_model
from nbmlops.backend.scoring import incompatibility, input_schema, mlflow_app, warm_up
from nbmlops.config import Settings
from nbmlops.exceptions import ModelNotServableError, NbmlopsError
from nbmlops.journal import try_lock
from nbmlops.registry.models import ModelReference, ModelVersionInfo, get_version
from nbmlops.registry.safe_load import check_model

__all__ = ["Follower", "Served", "load_version", "remove_orphan_downloads"]


@dataclass(frozen=True)
class Served:
    """One loaded version, as requests use it.

    Attributes:
        version: the registered version number.
        model: MLflow's ``PyFuncModel`` of it.
        schema: its input schema (None without a signature).
        app: MLflow's scoring app answering with it.
        since: when it started serving here (ISO 8601, UTC).
        notes: what the caller trusted explicitly to load it.
    """

    version: int
    model: Any
    schema: Any
    app: Any
    since: str
    notes: tuple[str, ...] = ()

    def started_now(self) -> Served:
        """The same version, serving from now on."""
        return dataclasses.replace(self, since=_now())


def load_version(version: ModelVersionInfo, *, client: Any, settings: Settings, trusted: bool) -> Served:
    """Download ``version``, check that it loads safely, load it as MLflow's ``PyFuncModel`` and have it answer
    its own input example once (:func:`nbmlops.backend.scoring.warm_up`).

    Raises:
        UnsafeModelError: nbmlops refuses to load it (see :func:`nbmlops.registry.safe_load.check_model`).
        ModelNotServableError: it loads but fails to answer its own input example.
        RegistryError: its library is missing, or it cannot be read.
    """
    remove_orphan_downloads()
    files, owner = _owned_folder(f"{_DOWNLOADS}{version.version}-")
    try:
        local = download_model(client, version.name, version.version, files, settings.tracking_uri)
        checked = check_model(local, version, trusted=trusted)
        model = checked.load_pyfunc()
        app = mlflow_app(model)
        failure = warm_up(app, local)
        if failure is not None:
            raise ModelNotServableError(
                f"version {version.version} of {version.name} does not answer its own input example: "
                f"{' '.join(failure.split())[:300]}"
            )
    except BaseException:
        _remove(files, owner)
        raise
    # the files stay while the model lives (a trusted pyfunc model may read its artifacts when it predicts)
    weakref.finalize(model, _remove, files, owner)
    return Served(version.version, model, input_schema(model), app, _now(), checked.notes)


#: the prefix of the temporary folders versions are downloaded into
_DOWNLOADS = "nbmlops-serve-v"
#: the lock file in such a folder, held (``flock``) by the process that serves from it while it lives
_OWNER = ".owner"


def _owned_folder(prefix: str) -> tuple[Path, int]:
    """A new temporary folder and the descriptor of its owner lock, taken before the lock file has its name (so
    that :func:`remove_orphan_downloads` never finds it unlocked)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(folder / f"{_OWNER}.new", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(folder / f"{_OWNER}.new", folder / _OWNER)
    return folder, fd


def _remove(folder: Path, owner: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(owner)


def remove_orphan_downloads() -> list[Path]:
    """Remove the downloaded versions of serving processes that died without removing them (SIGKILL, out of
    memory): folders whose owner lock nobody holds. Returns the folders removed."""
    removed = []
    for owner in Path(tempfile.gettempdir()).glob(f"{_DOWNLOADS}*/{_OWNER}"):
        fd = try_lock(owner)  # None: its process lives (or the folder is another user's)
        if fd is not None:
            shutil.rmtree(owner.parent, ignore_errors=True)
            os.close(fd)
            removed.append(owner.parent)
    return removed


class Follower:
    """Follows ``name@alias``: :attr:`current` is the version serving now.

    Args:
        name, alias: the registered model and the alias to follow.
        served: the version serving at the start.
        client, settings: the registry client and settings to load versions with.
        trusted: the model is trusted explicitly (``--trust-pickle``, ``trusted_models``).
        poll: seconds between two questions to the registry.
        check_signature: refuse a version whose signature does not fit the serving one's (the shadow model,
            whose answers no client reads, is not checked).
        on_swap: called with the old and the new :class:`Served` after each swap.
        on_refused: called with a refused version number and the reason.
    """

    def __init__(self, name: str, alias: str, served: Served, *, client: Any, settings: Settings, trusted: bool,
                 poll: float, check_signature: bool = True,
                 on_swap: Callable[[Served, Served], None] | None = None,
                 on_refused: Callable[[int, str], None] | None = None) -> None:
        self.name = name
        self.alias = alias
        #: the version serving now: read once per request, replaced whole by a swap
        self.current = served
        self.client = client
        self.settings = settings
        self.trusted = trusted
        self.poll = poll
        self.check_signature = check_signature
        self.on_swap = on_swap
        self.on_refused = on_refused
        self._refused: int | None = None
        self._store_problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following in a daemon thread."""
        self._thread = threading.Thread(target=self._follow, name=f"nbmlops-follow-{self.alias}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following (a version being loaded is finished first, within ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check()
            except Exception as exc:  # the thread never dies: the old version keeps serving
                _say(f"following {self.name}@{self.alias} failed: {type(exc).__name__}: {_one_line(exc)}")

    def check(self) -> bool:
        """Ask the registry once; load, check and swap in the version the alias points to if it moved. True
        when a new version was swapped in."""
        try:
            found = get_version(ModelReference(self.name, alias=self.alias), client=self.client)
        except NbmlopsError as exc:
            problem = _one_line(exc)
            if problem != self._store_problem:
                _say(f"cannot ask the registry where {self.name}@{self.alias} points (still serving version "
                     f"{self.current.version}; asking again every {self.poll:g} s): {problem}")
            self._store_problem = problem
            return False
        self._store_problem = None
        serving = self.current
        if found.version == serving.version:
            self._refused = None  # the alias came back: a version refused before is tried again when it moves on
            return False
        if found.version == self._refused:
            return False
        try:
            new = load_version(found, client=self.client, settings=self.settings, trusted=self.trusted)
        except Exception as exc:
            self._refuse(found.version, f"it cannot be loaded: {_one_line(exc)}")
            return False
        reason = incompatibility(serving.model, new.model) if self.check_signature else None
        if reason is not None:
            self._refuse(found.version, f"its signature does not fit: {reason}")
            return False
        self.current = new.started_now()  # the swap: requests that started before finish on `serving`
        self._refused = None
        _say(f"{self.name}@{self.alias} moved: now serving version {new.version} (was {serving.version})")
        if self.on_swap is not None:
            self.on_swap(serving, self.current)
        return True

    def _refuse(self, version: int, reason: str) -> None:
        self._refused = version
        _say(f"refused version {version} of {self.name}@{self.alias} (still serving version "
             f"{self.current.version}): {reason}")
        if self.on_refused is not None:
            self.on_refused(version, reason)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _say(line: str) -> None:
    try:
        print(f"nbmlops serve: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # no stderr to tell
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
