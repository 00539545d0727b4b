"""Removing the data snapshots nothing needs any more (``nbmlops data gc``, as ``dvc gc`` does for DVC).

:func:`gc` keeps a snapshot when

- ``needed()`` names its fingerprint, with the reason (a run logged it, a registered model version was trained
  on it, ...: the caller knows; ``nbmlops data gc`` asks the tracking store, see
  :mod:`nbmlops.backend.snapshot_refs`), or
- it was stored or last re-used less than ``keep_days`` before gc started (and, whatever ``keep_days``,
  within the last hour: a run that has just stored or re-used it may not have recorded so yet): a save
  of data that is stored already marks the snapshot as used (its sidecar's modification time), so data
  a running notebook logs again counts as young.

Everything else is deleted, from the local store and, when one is given, from the remote; so are partial
writes that a killed process left behind (temporary files older than a day and than the retention window).

Safe against writers running at the same time: gc notes when it starts *before* it asks ``needed()``, and
a snapshot written or re-used after that moment is younger than any retention window. A snapshot is
deleted by first renaming its sidecar and data file aside, then checking that the sidecar was not marked
as used since it was listed (if it was, both are put back); a writer marks the sidecar before it looks for
the data file, so it either sees the snapshot kept or finds it gone and writes it again. A file being
written is a temporary file until it is complete, and gc leaves young temporary files alone.

Limits: the remote (the MLflow artifact store) cannot be marked as used; a snapshot there is judged by its
local copy's use when this machine has one, else by when it was stored (its sidecar). A machine that
re-uses such a snapshot while gc deletes it keeps its own copy, and uploads it again when it logs that
data next.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from nbmlops.data.snapshots import SnapshotStore

__all__ = ["GcReport", "RemoteSnapshots", "gc"]

DEFAULT_KEEP_DAYS = 30.0
_DATA_FILE = re.compile(r"([0-9a-f]{32})\.(parquet|bin|json)")
_PARTIAL_AGE = 86_400.0  # seconds: a temporary file older than this (and the window) was abandoned
_DAY = 86_400.0
_GRACE = 3_600.0  # seconds: snapshots used this recently are kept whatever the window


class RemoteSnapshots(Protocol):
    """The snapshots of a shared remote, as gc sees them (nbmlops' own: the MLflow artifact store)."""

    def sizes(self) -> dict[str, int]:
        """Every complete snapshot on the remote: fingerprint -> bytes (data file and sidecar)."""

    def created(self, fingerprint: str) -> datetime | None:
        """When the snapshot was stored (from its sidecar); None when that cannot be read."""

    def delete(self, fingerprint: str) -> None:
        """Delete the snapshot's files from the remote (the sidecar first)."""


@dataclass
class GcReport:
    """What :func:`gc` freed and kept (``dry_run``: what it would free).

    ``kept`` counts the snapshots kept per reason; ``remote_*`` describe the remote, when there is one.
    """

    dry_run: bool
    keep_days: float
    freed: int = 0
    freed_bytes: int = 0
    partial: int = 0  # abandoned temporary files removed (their bytes are in freed_bytes)
    kept: dict[str, int] = field(default_factory=dict)
    kept_bytes: int = 0
    remote: str | None = None
    remote_freed: int = 0
    remote_freed_bytes: int = 0
    remote_kept: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        """The report as a few lines of text."""
        verb = "would free" if self.dry_run else "freed"
        lines = [f"{verb} {self.freed} snapshot(s), {_size(self.freed_bytes)}"
                 + (f" (and {self.partial} abandoned partial write(s))" if self.partial else "")]
        lines.append(f"kept {sum(self.kept.values())} snapshot(s), {_size(self.kept_bytes)}"
                     + _reasons(self.kept))
        if self.remote is not None:
            lines.append(f"{self.remote}: {verb} {self.remote_freed} snapshot(s), {_size(self.remote_freed_bytes)}; "
                         f"kept {sum(self.remote_kept.values())}" + _reasons(self.remote_kept))
        if self.dry_run:
            lines.append("dry run: nothing was deleted")
        return "\n".join(lines)


def gc(
    store: SnapshotStore,
    needed: Callable[[], Mapping[str, str]],
    *,
    keep_days: float = DEFAULT_KEEP_DAYS,
    dry_run: bool = False,
    remote: RemoteSnapshots | None = None,
) -> GcReport:
    """Delete the snapshots of ``store`` (and of ``remote``) that nothing needs; see the module docstring.

    ``needed()`` returns the fingerprints to keep, each with why (``"needed by runs"``, ``"needed by
    registered model versions"``, ...); it is called after gc notes its start. ``keep_days``: snapshots stored or re-used
    within this many days before the start are kept. ``dry_run``: delete nothing, report what would go.

    Raises:
        ValueError: ``keep_days`` is negative.
        whatever ``needed()`` raises (nothing is deleted then).
    """
    if keep_days < 0:
        raise ValueError(f"keep_days must be 0 or more, not {keep_days}")
    started = _filesystem_now(store.root)
    references = dict(needed())
    cutoff = started - max(keep_days * _DAY, _GRACE)
    young = f"younger than {keep_days:g} day(s)" if keep_days * _DAY >= _GRACE else "used within the last hour"
    report = GcReport(dry_run=dry_run, keep_days=keep_days)
    local_use: dict[str, float] = {}
    for fingerprint, files in _stored(store.root).items():
        stats = {path: path.stat() for path in files if path.exists()}
        if not stats:
            continue
        size = sum(s.st_size for s in stats.values())
        last_used = max(s.st_mtime for s in stats.values())
        local_use[fingerprint] = last_used
        reason = references.get(fingerprint) or (young if last_used >= cutoff else None)
        if reason is None and (dry_run or _delete(stats)):
            report.freed += 1
            report.freed_bytes += size
            continue
        reason = reason or "re-used while gc ran"
        report.kept[reason] = report.kept.get(reason, 0) + 1
        report.kept_bytes += size
    for partial in _abandoned(store.root, min(cutoff, started - _PARTIAL_AGE)):
        report.partial += 1
        report.freed_bytes += partial.stat().st_size
        if not dry_run:
            partial.unlink(missing_ok=True)
    if remote is not None:
        _collect_remote(remote, references, local_use, cutoff, young, report)
    return report


def _filesystem_now(root: Path) -> float:
    """Now, by the clock that stamps files in ``root`` (a shared drive's server's; coarser than
    ``time.time()`` on Linux): the modification time of a file made there for the purpose."""
    try:
        fd, name = tempfile.mkstemp(dir=root, prefix=".gc-start-", suffix=".tmp")
    except OSError:  # no store yet, or one this process cannot write to: allow for a coarse clock
        return time.time() - 1.0
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(name)


def _stored(root: Path) -> dict[str, list[Path]]:
    """The files of each stored snapshot: fingerprint -> its data file and sidecar."""
    found: dict[str, list[Path]] = {}
    for path in root.glob("??/*"):
        match = _DATA_FILE.fullmatch(path.name)
        if match and path.parent.name == match.group(1)[:2]:
            found.setdefault(match.group(1), []).append(path)
    return found


def _abandoned(root: Path, before: float) -> list[Path]:
    """Temporary files of writes, and of gc runs, that ended long ago without finishing (a killed process's)."""
    found = [*root.glob("??/.*.tmp"), *root.glob("??/.gc-*"), *root.glob(".gc-start-*.tmp")]
    return [p for p in found if p.is_file() and p.stat().st_mtime < before]


def _delete(listed: Mapping[Path, os.stat_result]) -> bool:
    """Delete a snapshot's files unless it was re-used since they were listed; whether it was deleted."""
    aside: list[tuple[Path, Path]] = []
    for path in sorted(listed, key=lambda p: p.suffix != ".json"):  # the sidecar first: a writer marks it
        moved = path.with_name(f".gc-{path.name}")
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            continue
        aside.append((path, moved))
    reused = any(
        path.suffix == ".json" and moved.stat().st_mtime != listed[path].st_mtime for path, moved in aside
    )
    for path, moved in aside:
        if reused:
            try:
                os.link(moved, path)  # back, unless a writer has stored it again meanwhile
            except FileExistsError:
                pass
        moved.unlink()
    return not reused


def _collect_remote(
    remote: RemoteSnapshots,
    references: Mapping[str, str],
    local_use: Mapping[str, float],
    cutoff: float,
    young: str,
    report: GcReport,
) -> None:
    report.remote = str(remote)
    for fingerprint, size in sorted(remote.sizes().items()):
        reason = references.get(fingerprint)
        if reason is None:
            when = local_use.get(fingerprint)
            if when is None:
                created = remote.created(fingerprint)
                when = created.timestamp() if created is not None else None
            reason = "age unknown" if when is None else young if when >= cutoff else None
        if reason is None:
            if not report.dry_run:
                remote.delete(fingerprint)
            report.remote_freed += 1
            report.remote_freed_bytes += size
        else:
            report.remote_kept[reason] = report.remote_kept.get(reason, 0) + 1


def _reasons(counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    return ": " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"
