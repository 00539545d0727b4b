"""The one rule for paths a request names: relative to the server's root, and staying inside it (and its
twin for the path of a run's artifact: relative to the run's artifacts, :func:`artifact_path`).

A path is refused (:class:`PathError`, HTTP 400) when it is empty or absolute, has a ``..`` component,
a backslash, a NUL or control character, still holds a ``%`` escape after the URL was decoded (double
encoding), passes through a symlink, names a hidden file or folder while the server hides them, or
resolves outside the root. A path that is well formed but names nothing is a :class:`PathNotFoundError`
(HTTP 404).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from nbmlops.exceptions import PathError, PathNotFoundError

__all__ = ["PathError", "PathNotFoundError", "artifact_path", "resolve_notebook", "resolve_path"]


def resolve_path(root: str | os.PathLike[str], path: str | None, *, allow_hidden: bool = True) -> tuple[str, Path]:
    """``(normalized relative path, absolute path)`` of an existing file or folder ``path`` under ``root``.

    The absolute path is built on the real path of ``root`` (the root itself may be reached through a
    symlink; nothing under it may be).
    """
    if not path:
        raise PathError("", "a path relative to the server's root is required")
    _check_characters(path)
    if path.startswith("/"):
        raise PathError(path, "is absolute; give a path relative to the server's root")
    parts = _parts(path)
    if not parts:
        raise PathError(path, "names the server's root, not a file")
    if not allow_hidden and any(part.startswith(".") for part in parts):
        raise PathError(path, "names a hidden file or folder, which this server does not serve")
    base = Path(os.path.realpath(root))
    here = base
    for part in parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            raise PathNotFoundError(path) from None
        except OSError as exc:
            raise PathError(path, f"cannot be read: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            raise PathError(path, f"passes through the symlink {'/'.join(here.relative_to(base).parts)!r}")
    if not Path(os.path.realpath(here)).is_relative_to(base):
        raise PathError(path, "resolves outside the server's root")
    return "/".join(parts), here


def resolve_notebook(root: str | os.PathLike[str], path: str | None, *, allow_hidden: bool = True) -> tuple[str, Path]:
    """:func:`resolve_path` for a notebook: it must also be a regular ``.ipynb`` file."""
    relative, absolute = resolve_path(root, path, allow_hidden=allow_hidden)
    if absolute.suffix != ".ipynb":
        raise PathError(relative, "is not a notebook (.ipynb)")
    if not absolute.is_file():
        raise PathError(relative, "is not a file")
    return relative, absolute


def artifact_path(path: str | None) -> str:
    """``path``, an artifact of a run (``figures/loss.png``), checked and normalized: relative, no ``..``
    component, no backslash, NUL, control character or leftover ``%`` escape (:class:`PathError`, HTTP 400).
    Which run's artifacts it may name is the store's to say: a path the run does not hold is a 404."""
    if not path:
        raise PathError("", "an artifact path is required (path=...)")
    _check_characters(path)
    if path.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path):
        raise PathError(path, "is absolute; give a path relative to the run's artifacts")
    parts = _parts(path)
    if not parts:
        raise PathError(path, "names the run's artifact folder, not a file")
    return "/".join(parts)


def _check_characters(path: str) -> None:
    """Refuse what no path a client means may hold: NUL and control characters, backslashes, ``%`` escapes left
    after decoding."""
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise PathError(path, "contains a NUL or control character")
    if "\\" in path:
        raise PathError(path, "contains a backslash; use '/' between folders")
    if "%" in path:
        raise PathError(path, "still contains a '%' escape after decoding (double encoding is refused)")


def _parts(path: str) -> list[str]:
    """The components of a relative ``path`` without empty and ``.`` ones; a ``..`` is refused."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathError(path, "has a '..' component")
    return parts
