"""A notebook and the project files it needs, packed to run on a machine that shares nothing but the tracking
server (a Dask worker), and unpacked there into a private working directory.

What travels (:func:`pack_workspace`, on the submitting machine), from the notebook's project (the nearest
ancestor of the notebook's folder holding ``.nbmlops/``, ``.git`` or ``pyproject.toml``):

- the notebook itself, and the project's ``pyproject.toml`` (its ``[tool.nbmlops]`` settings);
- every existing file under the project that a string parameter (fixed or swept) or a string literal in the
  notebook's code names, relative to the notebook's folder (``data/train.csv``, ``../shared/x.csv``) or as an
  absolute path under the project; a parameter given as such an absolute path is passed on relative to the
  notebook's folder, so that it names the shipped copy;
- the files and folders named by ``ship`` (relative to the working directory, or absolute), which must be
  under the project.

A file travels under the name it is reached by (a symlink under its own name, not its target's), if its target
is under the project too: a link to a file outside it is left behind, said on stderr. Folders that never travel:
``.nbmlops``, ``.git``, caches, virtual environments (``.venv``, ``venv``) and ``node_modules``. Paths outside the
project, and names of files that do not exist when the sweep starts (outputs), are left as they are: a worker
reads or writes them at the same path, if it has one. A file of at most :data:`INLINE_MAX_BYTES` travels inside
the task while the task's inline files stay within :data:`INLINE_TOTAL_BYTES`; a larger one is stored as a data
snapshot in the tracking server's artifact store (content-addressed, verified by fingerprint on download) and
fetched from there by each worker, which keeps it in its cache. A file larger than ``snapshot_max_bytes`` cannot
travel: the sweep is refused before it starts. A file that only a string literal of the code names (which may be
no path at all) travels inside the task or not at all, never refusing the sweep nor reaching the store, and never
if its name looks like a secret's (:data:`_SECRET_NAMES`): one left behind is said on stderr, ``ship`` sends it.

On the worker (:func:`open_workspace`), the files are laid out in a new private directory as they are under
the project, and the kernel runs in the notebook's folder there, as Jupyter runs it. The worker's own state
(``.nbmlops/``: journals, data snapshots) lives in one worker-wide folder, :func:`worker_home`, never in the
worker's working directory; the private directory is removed after the run unless ``NBMLOPS_KEEP_WORKSPACE=1``.
A run holds a lock on its private directory: one left by a worker that died is removed by the next run on that
machine.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import fnmatch
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from nbmlops.config import Settings, find_root
from nbmlops.exceptions import SweepError

__all__ = [
    "INLINE_MAX_BYTES",
    "INLINE_TOTAL_BYTES",
    "KEEP_ENV",
    "WORKER_DIR_ENV",
    "Placed",
    "Workspace",
    "open_workspace",
    "pack_workspace",
    "worker_home",
]

#: the largest file that travels inside the task (larger ones go through the snapshot store)
INLINE_MAX_BYTES = 256 << 10
#: the most bytes of files one task carries inside itself
INLINE_TOTAL_BYTES = 1 << 20
#: the worker-wide folder of a worker's state (default ``$XDG_CACHE_HOME/nbmlops/worker``)
WORKER_DIR_ENV = "NBMLOPS_WORKER_DIR"
#: set to 1 on a worker to keep each run's private directory (under ``<worker dir>/workspaces``) for debugging
KEEP_ENV = "NBMLOPS_KEEP_WORKSPACE"
#: never shipped: nbmlops' and git's own state, caches
_SKIPPED_PARTS = frozenset(
    {".nbmlops", ".git", "__pycache__", ".ipynb_checkpoints", ".venv", "venv", "node_modules"}
)
#: files found only through the notebook's code that are never shipped (``ship`` sends them): secrets' names
_SECRET_NAMES = (".env", ".env.*", "*.pem", "*.key", "credentials*", "*secret*", "id_rsa*", ".netrc", ".pypirc")
_MAX_PATH_TEXT = 4096
#: a private directory younger than this is never taken for abandoned (its run may not hold its lock yet)
_ABANDONED_AFTER_S = 60.0


@dataclass(frozen=True)
class Workspace:
    """A notebook and the project files it needs, as plain picklable data; paths are relative to the project
    root, in POSIX form."""

    notebook: str
    notebook_text: str
    files: Mapping[str, bytes] = field(default_factory=dict)
    #: files fetched from the tracking server's snapshot store: path -> fingerprint
    snapshots: Mapping[str, str] = field(default_factory=dict)


class Placed(NamedTuple):
    """Where a workspace was unpacked: the notebook, the kernel's working directory, the executed notebook."""

    notebook: Path
    cwd: Path
    output: Path


def pack_workspace(
    source: Path, parameters: Iterable[Mapping[str, Any]], ship: Sequence[str | os.PathLike[str]], settings: Settings
) -> tuple[Workspace, dict[str, str]]:
    """Pack the notebook ``source`` with the project files that ``parameters`` (every combination's), the
    notebook's code and ``ship`` name (see the module docstring).

    Returns the workspace and the rewrites of parameter values (an absolute path under the project -> the same
    path relative to the notebook's folder). What is left behind on purpose (a file named only in the code that
    is too large or looks like a secret, a link to a file outside the project) is said on stderr, one line each.

    Raises:
        SweepError: a ``ship`` path that does not exist, is outside the project or in a folder that never
            travels, a file too large to travel, or one that cannot be read any more; SnapshotError when a large
            file cannot be stored in the tracking server's artifact store.
    """
    root = find_root(source.parent)
    folder = source.parent
    outside: set[str] = set()  # links under the project to files outside it
    named: dict[str, Path] = {}  # by a parameter, ship, or the project itself: inline or through the store
    rewrites: dict[str, str] = {}
    for values in parameters:
        for value in values.values():
            name = _project_file(value, folder, root, outside)
            if name is not None:
                named[name] = root / name
                if Path(value).is_absolute():
                    rewrites[value] = os.path.relpath(root / name, folder)
    for item in ship:
        named.update((name, root / name) for name in _shipped(Path(item), root, outside))
    if (root / "pyproject.toml").is_file():
        named.setdefault("pyproject.toml", root / "pyproject.toml")
    text = source.read_text(encoding="utf-8")
    from_code: dict[str, Path] = {}  # by the code only: inline, or left behind
    for literal in _code_literals(text):
        name = _project_file(literal, folder, root, outside)
        if name is None or name in named:
            continue
        if _secret(root / name):
            _warn(f"not shipped: {name}, named in the notebook's code, looks like a secret "
                  f"(--ship {_shown(root / name)} sends it)")
        else:
            from_code[name] = root / name
    if outside:
        _warn(f"not shipped: {len(outside)} link(s) under the project to files outside it ({_some(outside)}); "
              "workers read paths outside the project as they are")
    notebook = source.relative_to(root).as_posix()
    named.pop(notebook, None)
    from_code.pop(notebook, None)
    files, snapshots = _split(named, from_code, settings)
    return Workspace(notebook, text, files, snapshots), rewrites


def worker_home() -> Path:
    """The worker-wide folder of this machine's sweep workers: ``$NBMLOPS_WORKER_DIR``, else
    ``$XDG_CACHE_HOME/nbmlops/worker`` (``~/.cache/nbmlops/worker``). Its ``.nbmlops/`` holds the journals of the
    runs (``nbmlops sync`` there delivers what a dead worker left) and the data snapshots fetched."""
    configured = os.environ.get(WORKER_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache) / "nbmlops" / "worker").resolve()


@contextlib.contextmanager
def open_workspace(workspace: Workspace, tracking_uri: str, artifact_root: str | None) -> Iterator[Placed]:
    """Unpack ``workspace`` into a new private directory under :func:`worker_home`, with the worker's ``.nbmlops``
    as its project state; yields where the notebook, the kernel's working directory and the executed notebook
    are. The directory is removed afterwards unless ``NBMLOPS_KEEP_WORKSPACE=1``.

    Raises:
        SnapshotError: a large file could not be fetched from the tracking server's snapshot store.
    """
    home = worker_home()
    state = home / ".nbmlops"
    (home / "workspaces").mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(home / "workspaces")
    private = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=home / "workspaces"))
    lock = os.open(private, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        project = private / "project"
        project.mkdir()
        (project / ".nbmlops").symlink_to(state, target_is_directory=True)  # the project's state: the worker's
        for name, content in workspace.files.items():
            _write(project, name, content)
        if workspace.snapshots:
            _fetch(project, workspace.snapshots, state / "data", tracking_uri, artifact_root)
        notebook = _write(project, workspace.notebook, workspace.notebook_text.encode("utf-8"))
        yield Placed(notebook, notebook.parent, private / "executed.ipynb")
    finally:
        if os.environ.get(KEEP_ENV, "") in ("", "0"):
            shutil.rmtree(private, ignore_errors=True)
        else:
            (private / "kept").touch()
            sys.stderr.write(f"nbmlops: kept the workspace {private} ({KEEP_ENV})\n")
        os.close(lock)


def _remove_abandoned(workspaces: Path) -> None:
    """Remove the private directories that no run holds (their worker died), except those kept on purpose."""
    for folder in workspaces.iterdir():
        try:
            if (folder / "kept").exists() or time.time() - folder.stat().st_mtime < _ABANDONED_AFTER_S:
                continue
            lock = os.open(folder, os.O_RDONLY)
        except OSError:  # gone meanwhile, or not a directory of ours
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live run holds it
            continue
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(lock)


def _project_file(value: Any, folder: Path, root: Path, outside: set[str]) -> str | None:
    """The name under ``root`` (see :func:`_member`) of the existing file that ``value`` names, relative to
    ``folder`` or absolute; else None."""
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_PATH_TEXT or "\n" in value:
        return None
    try:
        return _member(folder / value, root, outside)
    except (OSError, ValueError):  # not a path (a NUL byte, a label)
        return None


def _member(path: Path, root: Path, outside: set[str]) -> str | None:
    """The name under ``root`` of the file ``path``, as written (a symlink keeps its own name, ``..`` is folded),
    in POSIX form; None when it is no file, is outside ``root``, or it or its target is in a folder that never
    travels. A symlink to a file outside ``root`` is added to ``outside``."""
    name = _lexical(path, root)
    if name is None or _SKIPPED_PARTS & set(name.parts) or not path.is_file():
        return None
    try:
        target = path.resolve().relative_to(root)
    except ValueError:
        outside.add(name.as_posix())
        return None
    return None if _SKIPPED_PARTS & set(target.parts) else name.as_posix()


def _lexical(path: Path, root: Path) -> PurePosixPath | None:
    """``path`` relative to ``root`` without resolving its symlinks (only its folder's when ``root`` is reached
    through a link, such as ``/tmp`` on macOS); None when it is outside."""
    absolute = Path(os.path.normpath(path.expanduser().absolute()))
    for candidate in (absolute, absolute.parent.resolve() / absolute.name):
        with contextlib.suppress(ValueError):
            return PurePosixPath(candidate.relative_to(root).as_posix())
    return None


def _secret(path: Path) -> bool:
    """Whether ``path`` or its target has a name that secrets usually have."""
    names = {path.name.lower(), path.resolve().name.lower()}
    return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in _SECRET_NAMES)


def _code_literals(text: str) -> set[str]:
    """The string literals of the notebook's code cells (magics turned into Python first, as IPython does)."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    transformer = TransformerManager()
    found: set[str] = set()
    for cell in nbformat.reads(text, as_version=4).cells:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(transformer.transform_cell(cell.source))
        except (SyntaxError, ValueError):  # a cell that does not parse names no file we can see
            continue
        found.update(node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str))
    return found


def _shipped(item: Path, root: Path, outside: set[str]) -> list[str]:
    """The names under ``root`` (see :func:`_member`) of the files of ``item`` (a file, or a folder's files at
    any depth), which must be under ``root`` and in no folder that never travels."""
    if not item.expanduser().exists():
        raise SweepError(f"cannot ship {item}: no such file or folder")
    name = _lexical(item, root)
    try:
        item.expanduser().resolve().relative_to(root)
    except ValueError:
        name = None
    if name is None:
        raise SweepError(
            f"cannot ship {item}: it is outside the project {root} (workers read paths outside the project as "
            "they are: give them as absolute paths every worker can read)"
        )
    if _SKIPPED_PARTS & set(name.parts):
        raise SweepError(f"cannot ship {item}: {', '.join(sorted(_SKIPPED_PARTS))} never travel")
    start = root.joinpath(*name.parts)
    if start.is_file():
        return [name.as_posix()]
    names: list[str] = []
    for here, folders, files in os.walk(start):
        folders[:] = sorted(f for f in folders if f not in _SKIPPED_PARTS)
        for file in sorted(files):
            member = _member(Path(here, file), root, outside)
            if member is not None:
                names.append(member)
    return names


def _split(
    named: Mapping[str, Path], from_code: Mapping[str, Path], settings: Settings
) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files that travel inside the task, smallest first within the task's budget, those named only by the
    notebook's code first (they travel inline or not at all: one left behind is said on stderr); the others
    ``named`` are stored as snapshots."""
    files: dict[str, bytes] = {}
    large: dict[str, Path] = {}
    total = 0
    for group in (from_code, named):
        sizes = {name: _size(name, path) for name, path in group.items()}
        for name in sorted(group, key=lambda n: (sizes[n], n)):
            if sizes[name] <= INLINE_MAX_BYTES and total + sizes[name] <= INLINE_TOTAL_BYTES:
                files[name] = _read(name, group[name])
                total += len(files[name])
            elif group is named:
                large[name] = group[name]
            else:
                _warn(
                    f"not shipped: {name} ({sizes[name]} bytes), named in the notebook's code, does not fit in the "
                    f"task (files of up to {INLINE_MAX_BYTES >> 10} KiB, {INLINE_TOTAL_BYTES >> 10} KiB in all); "
                    f"--ship {_shown(group[name])} sends it"
                )
    return files, (_store_snapshots(large, settings) if large else {})


def _size(name: str, path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise _unreadable(name, exc) from None


def _read(name: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _unreadable(name, exc) from None


def _unreadable(name: str, exc: OSError) -> SweepError:
    return SweepError(f"cannot ship {name}: {exc.strerror or exc} (did it change while the sweep started?)")


def _shown(path: Path) -> str:
    """``path`` as to give it to ``--ship``: relative to the working directory when under it."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def _some(names: Iterable[str], shown: int = 3) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def _warn(message: str) -> None:
    sys.stderr.write(f"nbmlops: {message}\n")


def _store_snapshots(large: Mapping[str, Path], settings: Settings) -> dict[str, str]:
    """Store each file as a snapshot and share it through the tracking server's artifact store."""
    from nbmlops.backend.snapshot_remote import MlflowSnapshotRemote
    from nbmlops.data.snapshots import SnapshotStore

    store = SnapshotStore(settings.data_dir, remote=MlflowSnapshotRemote(settings.tracking_uri, settings.artifact_root))
    stored: dict[str, str] = {}
    for name, path in large.items():
        try:
            snapshot = store.save(path, settings.snapshot_max_bytes)
        except OSError as exc:
            raise _unreadable(name, exc) from None
        if snapshot is None:
            raise SweepError(
                f"cannot ship {name} ({_size(name, path)} bytes) to the workers: it is larger than "
                f"snapshot_max_bytes ({settings.snapshot_max_bytes}); raise it (NBMLOPS_SNAPSHOT_MAX_BYTES) or pass "
                "the file as an absolute path every worker can read"
            )
        store.push(snapshot.fingerprint)
        stored[name] = snapshot.fingerprint
    return stored


def _write(project: Path, name: str, content: bytes) -> Path:
    """Write a shipped file at its place under ``project``.

    Raises:
        SweepError: a name that would leave ``project`` or land in a folder that never travels (``.nbmlops``,
            the link to the worker's own state, ``.git``, ...).
    """
    relative = PurePosixPath(name)
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise SweepError(f"refusing to unpack {name!r}: outside the workspace")
    if _SKIPPED_PARTS & set(relative.parts):
        raise SweepError(f"refusing to unpack {name!r}: {', '.join(sorted(_SKIPPED_PARTS))} never travel")
    target = project.joinpath(*relative.parts)
    if not target.parent.resolve().is_relative_to(project.resolve()):
        raise SweepError(f"refusing to unpack {name!r}: it leads outside the workspace")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


def _fetch(
    project: Path, snapshots: Mapping[str, str], cache: Path, tracking_uri: str, artifact_root: str | None
) -> None:
    """Write each snapshot at its place under ``project``, from the worker's cache or the tracking server."""
    from nbmlops.backend.snapshot_remote import MlflowSnapshotRemote
    from nbmlops.data.snapshots import SnapshotStore

    store = SnapshotStore(cache, remote=MlflowSnapshotRemote(tracking_uri, artifact_root))
    for name, fingerprint in snapshots.items():
        target = _write(project, name, b"")
        store.get(fingerprint, target)
