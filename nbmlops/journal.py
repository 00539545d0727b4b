"""The local append-only journal every record is written to before it goes to MLflow.

One journal file per process (per session), under ``<root>/.nbmlops/journal/``, named
``<creation time ns>-<host>-<pid>-<random>.journal``, or ``...-<random>@<tag>.journal`` for a process
that hands its records to a runner under a tag (see :class:`Claim`). Each record is a frame::

    b"NBJ1" | payload length (uint32 LE) | CRC-32 of payload (uint32 LE) | payload (UTF-8 JSON)

A process holds an exclusive ``flock`` on its journal while it lives, so another process that
can take the lock knows the owner is gone and may drain the journal. Next to each journal, a
``.cursor`` file (replaced atomically) remembers how far delivery got and which MLflow run each
local run key became, so a replay delivers every record exactly once. A runner that delivers the
journals of its hand-off tag while their processes still write them holds the tag's :class:`Claim`;
nobody else delivers them meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "Claim", "Cursor", "Damage", "Journal", "claimed", "journal_tag", "list_journals", "read_records", "try_lock",
]

MAGIC = b"NBJ1"
_HEADER = struct.Struct("<4sII")
MAX_RECORD = 256 * 1024 * 1024
SUFFIX = ".journal"
CLAIM_SUFFIX = ".claim"
_TAG = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class Damage:
    """A part of a journal that could not be read: where it is and why."""

    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.reason}"


@dataclass
class Cursor:
    """Delivery progress of one journal."""

    offset: int = 0
    runs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, journal_path: Path) -> "Cursor":
        """Read the cursor beside ``journal_path`` (a fresh one when there is none or it is unreadable)."""
        try:
            data = json.loads(_cursor_path(journal_path).read_text())
            return cls(offset=int(data["offset"]), runs=dict(data["runs"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def save(self, journal_path: Path) -> None:
        """Write the cursor atomically and durably."""
        path = _cursor_path(journal_path)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump({"offset": self.offset, "runs": self.runs}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _cursor_path(journal_path: Path) -> Path:
    return journal_path.with_suffix(".cursor")


def encode(record: dict[str, Any]) -> bytes:
    """Frame one record."""
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class Journal:
    """This process's journal: append-only, locked for as long as the process lives.

    ``tag`` (8 to 64 hex digits) names the runner the records are handed to, in the file name.
    """

    def __init__(self, directory: Path, tag: str | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if tag is not None and not _TAG.fullmatch(tag):
            raise ValueError(f"not a hand-off tag: {tag!r}")
        # the creation time leads the name, so journals sort in the order they were started
        suffix = f"@{tag}{SUFFIX}" if tag else SUFFIX
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
        self.path = directory / name
        hidden = directory / f".{name}.new"  # locked before it takes a name other processes look for
        self._fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self.path)
        self.size = 0

    def append(self, records: list[dict[str, Any]]) -> list[int]:
        """Append ``records`` in one write; returns each record's end offset.

        The write survives the death of this process at once; :meth:`sync` makes it survive the machine's.
        """
        frames = [encode(r) for r in records]
        ends = []
        for frame in frames:
            self.size += len(frame)
            ends.append(self.size)
        view = memoryview(b"".join(frames))
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        return ends

    def sync(self) -> None:
        """Make everything appended so far durable."""
        os.fdatasync(self._fd)

    def close(self, remove: bool) -> None:
        """Release the journal; ``remove`` deletes it and its cursor (everything was delivered)."""
        if self._fd < 0:
            return
        if remove:
            for path in (self.path, _cursor_path(self.path)):
                path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def try_lock(path: Path) -> int | None:
    """Take the lock of another process's journal; a descriptor when its owner is gone, else None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def journal_tag(path: Path) -> str | None:
    """The hand-off tag in a journal's name, if it has one."""
    _, at, tag = path.name[: -len(SUFFIX)].rpartition("@")
    return tag if at and _TAG.fullmatch(tag) else None


class Claim:
    """A runner's claim on the journals named with ``tag``: while it lives, only the runner delivers them.

    A lock file ``<tag>.claim`` beside the journals, held (``flock``) until :meth:`release` or the
    runner's death; taken before the processes that write those journals start.
    """

    def __init__(self, directory: Path, tag: str) -> None:
        if not _TAG.fullmatch(tag):
            raise ValueError(f"not a hand-off tag: {tag!r}")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{tag}{CLAIM_SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        """Give the journals back to whoever syncs the folder (``nbmlops sync``, a kernel's recovery)."""
        if self._fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def claimed(directory: Path, tag: str) -> bool:
    """True while a live runner holds the claim on the journals named with ``tag``."""
    fd = try_lock(directory / f"{tag}{CLAIM_SUFFIX}")
    if fd is None:
        return (directory / f"{tag}{CLAIM_SUFFIX}").exists()
    os.close(fd)
    return False


def list_journals(directory: Path) -> list[Path]:
    """Every journal file in ``directory``, in the order they were started (a run's parent first)."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.name)


def read_records(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any] | Damage]]:
    """Yield ``(end_offset, record)`` for each frame from ``start``; damaged parts yield a :class:`Damage`.

    After damage, reading resumes at the next frame marker, so every valid record is still delivered.
    """
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read()
    return _frames(data, str(path), start)


def _frames(data: bytes, path: str, base: int) -> Iterator[tuple[int, dict[str, Any] | Damage]]:
    """The frames of ``data``, read from offset ``base`` of the journal at ``path``."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEADER.size:
            yield base + len(data), Damage(path, base + pos, "truncated record header (the writer stopped mid-record)")
            return
        magic, length, crc = _HEADER.unpack_from(data, pos)
        problem = None
        if magic != MAGIC:
            problem = "no record marker"
        elif length > MAX_RECORD:
            problem = f"impossible record length {length}"
        elif pos + _HEADER.size + length > len(data):
            problem = f"truncated record (needs {length} bytes, {len(data) - pos - _HEADER.size} present)"
        else:
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if zlib.crc32(payload) != crc:
                problem = "checksum mismatch"
            else:
                try:
                    record = json.loads(payload)
                except ValueError:
                    problem = "checksum ok but payload is not JSON"
                else:
                    pos += _HEADER.size + length
                    yield base + pos, record
                    continue
        resume = data.find(MAGIC, pos + 1)
        end = resume if resume != -1 else len(data)
        yield base + end, Damage(path, base + pos, problem)
        pos = end
