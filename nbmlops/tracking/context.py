"""Where and on what a run happened: the git state of the code, the interpreter, the packages.

Git is asked through its command line, with a timeout on every call, stdin closed and
``GIT_OPTIONAL_LOCKS=0`` so that reading the state never takes a lock a user's own git command
could trip over. Nothing here raises on a machine without git or outside a repository.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import platform
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, cast

from nbmlops.config import git_remote
from nbmlops.redact import redact_uri

__all__ = [
    "DIFF_TRUNCATED_MARKER",
    "ENVIRONMENT_ALLOW_LIST",
    "GIT_TIMEOUT",
    "MAX_DIFF_BYTES",
    "GitState",
    "git_diff",
    "git_state",
    "installed_packages",
    "parse_packages",
    "python_environment",
]

GIT_TIMEOUT = 15.0
"""Seconds any one git command may take before it is killed: generous, git runs off the user's thread, and a busy
machine (a pip install beside tests in parallel) stalled a ``git status`` of a tiny repository past 5 s."""
MAX_DIFF_BYTES = 5 * 1024 * 1024
DIFF_TRUNCATED_MARKER = "\n[nbmlops: diff truncated at 5 MB]\n"
ENVIRONMENT_ALLOW_LIST = (
    "CUDA_VISIBLE_DEVICES",  # which GPUs the run could see
    "CUBLAS_WORKSPACE_CONFIG",  # required for deterministic cuBLAS results
    "OMP_NUM_THREADS",  # thread pools: change speed and, for some reductions, results
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",  # set iteration order, hence some "random" results
    "VIRTUAL_ENV",  # which environment the interpreter belongs to
    "CONDA_DEFAULT_ENV",
    "CONDA_PREFIX",
)
"""The only environment variables :func:`python_environment` reports (any other may be secret)."""

# Dropped from git's environment: set (by a git hook, say) they would point git at another
# repository than the one holding the path asked about.
_REPOSITORY_LOCATION_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
_PEP503_SEPARATORS = re.compile(r"[-_.]+")


@dataclass(frozen=True)
class GitState:
    """The state of the git work tree a run's code came from.

    Attributes:
        commit: the full hash of ``HEAD``.
        branch: the checked-out branch, or ``None`` when ``HEAD`` is detached.
        dirty: whether tracked files differ from ``HEAD`` or untracked (not ignored) files exist.
        remote: the URL of ``origin`` (else of the first remote), credentials removed; ``None``
            without remotes.
        root: the top directory of the work tree.
    """

    commit: str
    branch: str | None
    dirty: bool
    remote: str | None
    root: str


def git_state(path: str | os.PathLike[str]) -> GitState | None:
    """The :class:`GitState` of the repository holding ``path`` (a directory or a file).

    ``None`` when ``path`` is not inside a work tree, git is not installed or too slow, or the
    repository has no commit yet. Never raises. Git commands: ``status``, and ``rev-parse`` and ``config``
    the first time for a directory (again when its repository's config file changes).
    """
    directory = _directory(path)
    nearest = _nearest_git(directory)
    if nearest is None:
        return None  # no .git here or above: git would say so, at the cost of a process
    status = _git(directory, "status", "--porcelain=v2", "--branch", "--untracked-files=normal")
    if status is None:
        return None
    commit, branch, dirty = "", None, False
    for line in status.decode(errors="replace").splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split(" ", 2)[2]
        elif line.startswith("# branch.head "):
            head = line.split(" ", 2)[2]
            branch = None if head == "(detached)" else head
        elif not line.startswith("#"):
            dirty = True
    if not re.fullmatch(r"[0-9a-f]{40,64}", commit):  # "(initial)": no commit yet
        return None
    layout = _root_and_remote(directory, nearest)
    if layout is None:
        return None
    return GitState(commit=commit, branch=branch, dirty=dirty, remote=layout[1], root=layout[0])


def git_diff(path: str | os.PathLike[str]) -> str:
    """What the work tree holding ``path`` changes relative to ``HEAD``, as text.

    ``git diff HEAD`` (binary files are named, not shown), then an ``Untracked files:`` section
    naming each untracked, not ignored file (a wholly untracked directory is named once, with a
    trailing ``/``). ``""`` when the tree is clean or the state cannot be read; cut at
    :data:`MAX_DIFF_BYTES` with a marker line. The text is not redacted: pass it through a
    :class:`~nbmlops.redact.Redactor` before storing it.
    """
    directory = _directory(path)
    limit = MAX_DIFF_BYTES
    diff = _git(
        directory, "diff", "HEAD", "--no-color", "--no-ext-diff", "--no-textconv", limit=limit
    )
    if diff is None:
        return ""
    text = diff
    if len(text) <= limit:
        untracked = _git(
            directory, "ls-files", "-z", "--others", "--exclude-standard", "--directory",
            "--no-empty-directory", limit=limit,
        )  # fmt: skip
        names = [name for name in (untracked or b"").split(b"\0") if name]
        if names:
            text += b"\nUntracked files:\n" + b"".join(b"  " + name + b"\n" for name in names)
    if len(text) > limit:
        return text[:limit].decode(errors="replace") + DIFF_TRUNCATED_MARKER
    return text.decode(errors="replace")


def _directory(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.dirname(path) or "."
    return path


def _nearest_git(directory: str) -> str | None:
    """The nearest of ``directory`` and the folders above it that holds a ``.git``; None when none does."""
    here = os.path.abspath(directory)
    while True:
        if os.path.lexists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


#: (directory, its nearest ``.git`` holder, the state of that repository's config file) -> (root, remote):
#: what ``rev-parse --show-toplevel`` and ``config`` said, asked again when the config file changes
_layout: dict[tuple[str, str, int, int], tuple[str, str | None]] = {}


def _root_and_remote(directory: str, nearest: str | None) -> tuple[str, str | None] | None:
    """The top of the work tree holding ``directory`` and its remote URL (see :func:`_remote_url`)."""
    key: tuple[str, str, int, int] | None = None
    try:
        if nearest is not None:
            config = os.stat(os.path.join(nearest, ".git", "config"))
            key = (directory, nearest, config.st_mtime_ns, config.st_size)
    except OSError:  # ``.git`` is a file (a worktree, a submodule): ask git every time
        pass
    if key is not None and key in _layout:
        return _layout[key]
    root = _git(directory, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    found = (root.decode(errors="replace").strip(), _remote_url(directory))
    if key is not None:
        _layout[key] = found
    return found


def _remote_url(directory: str) -> str | None:
    """The URL of ``origin``, else of the first remote configured, credentials removed."""
    remote = git_remote(Path(directory))
    return redact_uri(remote[1]) if remote else None


def _git(directory: str, *args: str, limit: int | None = None) -> bytes | None:
    """The standard output of ``git -C directory args``, or ``None`` if it failed or timed out.

    With ``limit``, at most ``limit + 1`` bytes are read (the command is stopped there), so a
    result longer than ``limit`` means the output was cut.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in _REPOSITORY_LOCATION_VARIABLES
    }
    environment.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0")
    try:
        process = subprocess.Popen(
            ["git", "-C", directory, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
    except OSError:
        return None
    timer = threading.Timer(GIT_TIMEOUT, process.kill)
    timer.start()
    try:
        with process:
            output = cast(IO[bytes], process.stdout).read(-1 if limit is None else limit + 1)
            if limit is not None and len(output) > limit:
                process.kill()
                return output
    finally:
        timer.cancel()
    return output if process.returncode == 0 else None


def python_environment() -> dict[str, str]:
    """Facts about this interpreter and machine, for a run's tags.

    Keys: ``python_version``, ``python_implementation``, ``python_executable``, ``platform``,
    ``machine``, ``cpu_count``, ``hostname``, ``user`` (omitted when it cannot be determined),
    and ``env.<NAME>`` for each variable of :data:`ENVIRONMENT_ALLOW_LIST` that is set. No other
    environment variable is ever read into the result. Values pass through
    :func:`~nbmlops.redact.redact_uri`.
    """
    facts = {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count() or "unknown"),
        "hostname": socket.gethostname(),
    }
    with contextlib.suppress(OSError, KeyError, ImportError):  # no user name known: omit it
        facts["user"] = getpass.getuser()
    for name in ENVIRONMENT_ALLOW_LIST:
        value = os.environ.get(name)
        if value is not None:
            facts[f"env.{name}"] = value
    return {key: redact_uri(value) for key, value in facts.items()}


def installed_packages() -> list[str]:
    """Sorted ``name==version`` lines for the distributions importable by this interpreter.

    Names are normalised as in PEP 503 (``Foo_Bar`` -> ``foo-bar``); when a name is installed
    twice, the copy earlier on ``sys.path`` (the one ``import`` finds) wins. Computed once per
    process.
    """
    return list(_installed_packages())


def parse_packages(text: str | None) -> dict[str, str]:
    """The ``name==version`` lines of a requirements text (as :func:`installed_packages` writes it) as a
    mapping from the lower-cased name; a line without a version maps to ""; comments and blank lines are
    skipped."""
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        name, _, version = line.strip().partition("==")
        if name.strip() and not name.startswith("#"):
            found[name.strip().lower()] = version.strip()
    return found


@functools.cache
def _installed_packages() -> tuple[str, ...]:
    versions: dict[str, str] = {}
    for distribution in metadata.distributions():
        try:
            name, version = distribution.metadata["Name"], distribution.version
        except KeyError:  # metadata without a name or version: not a usable distribution
            continue
        if name and version:
            versions.setdefault(_PEP503_SEPARATORS.sub("-", name).lower(), version)
    return tuple(sorted(f"{name}=={version}" for name, version in versions.items()))
