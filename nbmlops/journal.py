"""The local append-only journal every record is written to before it goes to MLflow.

One journal file per process (per session), under ``<root>/.nbmlops/journal/``, named
``<creation time ns>-<host>-<pid>-<random>.journal``, or ``...-<random>@<tag>.journal`` for a process
that hands its records to a runner under a tag (see :class:`Claim`). Each record is a frame::

    b"NBJ1" | payload length (uint32 LE) | CRC-32 of payload (uint32 LE) | payload (UTF-8 JSON)

An artifact's payload over :data:`SPILL_BYTES` is not framed: it goes to a file in the folder beside the
journal named after it (``<name>.payloads/``), written and fsync'd before the frame that names it (by its
path relative to the journal's folder, so a moved project still delivers it) with its SHA-256; delivery
streams it from there, and the folder goes with the journal. A record whose frame would pass
:data:`MAX_RECORD` is never written (:class:`RecordTooLarge`), nor is a frame torn by a full disk left
behind: an append that fails is cut back off the file.

A process holds an exclusive ``flock`` on its journal while it lives, so another process that
can take the lock knows the owner is gone and may drain the journal. Next to each journal, a
``.cursor`` file (replaced atomically) remembers how far delivery got and which MLflow run each
local run key became, so a replay delivers every record exactly once. A runner that delivers the
journals of its hand-off tag while their processes still write them holds the tag's :class:`Claim`;
nobody else delivers them meanwhile.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.exceptions import RecordTooLarge

__all__ = [
    "Claim", "Cursor", "Damage", "Journal", "RecordTooLarge", "claimed", "inline", "journal_tag", "list_journals",
    "make_durable", "payload_dir", "read_records", "remove_journal", "try_lock",
]

MAGIC = b"NBJ1"
_HEADER = struct.Struct("<4sII")
#: the largest record payload a frame may hold; a bigger record is refused, never written
MAX_RECORD = 256 * 1024 * 1024
#: an artifact whose payload (``data`` bytes or ``text``) is larger goes to a file beside the journal
SPILL_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
SUFFIX = ".journal"
CLAIM_SUFFIX = ".claim"
PAYLOADS_SUFFIX = ".payloads"
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
    def load(cls, journal_path: Path) -> Cursor:
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


def payload_dir(journal_path: Path) -> Path:
    """The folder beside a journal that holds its large payloads (named after it, so it outlives a rename
    of the journal to ``.damaged``)."""
    return journal_path.with_suffix(PAYLOADS_SUFFIX)


def inline(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as JSON can hold it: an artifact's raw ``data`` bytes become ``b64``."""
    if record.get("t") != "artifact" or "data" not in record:
        return record
    framed = {k: v for k, v in record.items() if k != "data"}
    framed["b64"] = base64.b64encode(record["data"]).decode()
    return framed


def remove_journal(path: Path) -> None:
    """Delete a delivered journal, its cursor and its payloads."""
    for gone in (path, _cursor_path(path)):
        gone.unlink(missing_ok=True)
    shutil.rmtree(payload_dir(path), ignore_errors=True)


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
        self.payloads = payload_dir(self.path)
        hidden = directory / f".{name}.new"  # locked before it takes a name other processes look for
        self._fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, self.path)
        except OSError:
            os.close(self._fd)
            hidden.unlink(missing_ok=True)
            raise
        self.size = 0
        self._spilled = 0

    def prepare(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` as it is journaled: an artifact's payload over :data:`SPILL_BYTES` written to a file
        of :attr:`payloads` (streamed, fsync'd, owner-only) and named by its path and SHA-256; a smaller
        one inlined (see :func:`inline`).

        Raises ``OSError`` when the payload file cannot be written (nothing of it is left then).
        """
        if record.get("t") != "artifact":
            return record
        payload = record.get("data", record.get("text"))
        if payload is None or len(payload) <= SPILL_BYTES:
            return inline(record)
        self._spilled += 1
        name = f"{self._spilled:06d}.bin"
        size, digest = _write_payload(self.payloads, name, payload)
        spilled = {k: v for k, v in record.items() if k not in ("data", "text")}
        spilled.update(file=f"{self.payloads.name}/{name}", sha256=digest, size=size)
        return spilled

    def append(self, records: list[dict[str, Any]]) -> list[int]:
        """Append ``records`` in one write; returns each record's end offset.

        The write survives the death of this process at once; :meth:`sync` makes it survive the machine's.
        Raises :class:`RecordTooLarge` before writing anything when a record's frame would pass
        :data:`MAX_RECORD`, and ``OSError`` when the write fails (a full disk): what it wrote is then cut
        off again, so the journal never holds a torn record.
        """
        frames = []
        for index, record in enumerate(records):
            frame = encode(record)
            if len(frame) - _HEADER.size > MAX_RECORD:
                raise RecordTooLarge(index, record, len(frame) - _HEADER.size, MAX_RECORD)
            frames.append(frame)
        ends, end = [], self.size
        for frame in frames:
            end += len(frame)
            ends.append(end)
        view = memoryview(b"".join(frames))
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            self._cut_back()
            raise
        self.size = end
        return ends

    def _cut_back(self) -> None:
        """Remove the part of a failed append that reached the file."""
        try:
            os.ftruncate(self._fd, self.size)
        except OSError:  # the torn tail stays: later records still follow it, readers skip it as damage
            self.size = os.fstat(self._fd).st_size

    def sync(self) -> None:
        """Make everything appended so far durable."""
        os.fdatasync(self._fd)

    def close(self, remove: bool) -> None:
        """Release the journal; ``remove`` deletes it, its cursor and its payloads (everything was delivered)."""
        if self._fd < 0:
            return
        try:
            if remove:
                remove_journal(self.path)
        finally:
            os.close(self._fd)
            self._fd = -1


def _write_payload(folder: Path, name: str, payload: bytes | bytearray | memoryview | str) -> tuple[int, str]:
    """Write ``payload`` (text as UTF-8) to ``folder/name`` in chunks; returns its size and SHA-256."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, exist_ok=True)
        make_durable(folder.parent)
    path = folder / name
    digest, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in _chunks(payload):
            digest.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    make_durable(folder)
    return size, digest.hexdigest()


def _chunks(payload: bytes | bytearray | memoryview | str) -> Iterator[bytes | memoryview]:
    if isinstance(payload, str):
        for start in range(0, len(payload), _CHUNK):
            yield payload[start : start + _CHUNK].encode("utf-8", "replace")
        return
    view = memoryview(payload).cast("B")
    for start in range(0, len(view), _CHUNK):
        yield view[start : start + _CHUNK]


def make_durable(path: Path) -> None:
    """Flush a file's data (or a folder's entries) to disk: what was written there survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.fsync(fd)
        else:
            os.fdatasync(fd)
    finally:
        os.close(fd)


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
