"""The traffic log a serving process writes each request to before its answer goes out.

Each process that serves (the one process of ``workers=1``, each uvicorn worker otherwise) appends to segment
files of its own in the serving folder (``<root>/.nbmlops/serve/<serving run id>/``), named
``<creation time ns>-<host>-<pid>-<random>.traffic``. A record is one frame of the journal's format
(:func:`nbmlops.journal.encode`: marker, length, CRC-32, UTF-8 JSON), written with one ``os.write`` to a file
opened ``O_APPEND``: once :meth:`TrafficLog.append` returns, the record survives the death of the process (a
SIGKILL loses nothing answered). Nothing is fsync'd on the request path; the recorder
(:mod:`nbmlops.serving.recorder`) fsyncs a segment before it delivers it.

Like a journal, a segment is ``flock``'d by its writer while it is open: a process that can take the lock
knows the writer is gone (closed the segment, rolled to the next one, or died) and nothing more will be
appended to it. A segment is rolled (closed, a new one opened) once it passes :data:`SEGMENT_BYTES`.

Secrets never reach the log: values of secret-named columns (:func:`nbmlops.redact.is_secret_name`) and
well-known token shapes (:func:`nbmlops.redact.redact_text`) in a request's body are replaced by ``***``
before the record is framed; so are the same values where the response or MLflow's error message repeats
them. A body in which no secret-looking name or token prefix occurs (a substring test, about a microsecond)
is written as it came.

**Disk bound**: the segments not yet delivered in the serving folder may take ``max_bytes`` together
(default :data:`DEFAULT_MAX_BYTES`, 1 GiB). A record that would pass the bound is not written: ``append``
returns False and counts it in :attr:`TrafficLog.unlogged`; once records fit again (the recorder delivered and
deleted segments), a ``{"kind": "unlogged", "count": n}`` record saying how many were left out goes first, and
the recorder adds it to the serving run's ``unlogged`` metric. A write the disk refuses (full, read-only) is
cut back off the segment and counted the same way. ``append`` never raises.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from nbmlops.journal import MAX_RECORD, encode
from nbmlops.redact import REDACTED, Redactor, is_secret_name, redact_text

__all__ = ["DEFAULT_MAX_BYTES", "SEGMENT_BYTES", "SEGMENT_SUFFIX", "TrafficLog", "list_segments", "redact_record"]

SEGMENT_SUFFIX = ".traffic"
#: a segment is rolled once it passes this size (or a sixteenth of the bound, when that is smaller: the open
#: segment counts whole against the bound, delivered or not, until it is rolled and its delivered part deleted)
SEGMENT_BYTES = 64 * 1024 * 1024
_MIN_SEGMENT_BYTES = 64 * 1024
#: the undelivered segments of a serving folder may hold this much together (``--log-max-mb``)
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
#: how often (seconds) a writer looks at the folder again to learn what the others wrote and the recorder removed
_RESCAN_S = 1.0

#: every secret-looking name holds one of these (see :func:`nbmlops.redact.is_secret_name`); lower case
_NAME_HINTS = (
    "auth", "bearer", "cookie", "cred", "dsn", "jwt", "pass", "pwd", "private", "secret", "signature",
    "key", "token", "session", "conn",
)  # fmt: skip
#: every token shape :func:`nbmlops.redact.redact_text` knows starts with one of these, or matches _AWS_OR_GOOGLE
_SHAPE_HINTS = ("-----BEGIN", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "xox", "hf_", "eyJ")
_AWS_OR_GOOGLE = re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|NVA|IPA|Iza)")
#: characters no hint above holds (the digits and separators of numeric JSON and CSV bodies)
_NO_HINT_BYTES = b"0123456789.,[] \t\r\n+"


def list_segments(folder: Path) -> list[Path]:
    """The traffic log segments of a serving folder, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{SEGMENT_SUFFIX}"), key=lambda p: p.name)


class TrafficLog:
    """This process's traffic log in a serving folder. Safe to share between the threads of one process.

    Args:
        folder: the serving folder (made if missing).
        max_bytes: the bound on the undelivered segments of the folder, all writers together.
        segment_bytes: the size past which a segment is closed and the next one opened (default
            :data:`SEGMENT_BYTES`, or a sixteenth of ``max_bytes`` when smaller, at least 64 KiB).
    """

    def __init__(self, folder: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, segment_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        if segment_bytes is None:
            segment_bytes = min(SEGMENT_BYTES, max(max_bytes // 16, _MIN_SEGMENT_BYTES))
        self.segment_bytes = segment_bytes
        #: records left out (over the bound, or refused by the disk) since this log was opened
        self.unlogged = 0
        self._unreported = 0  # of those, not yet written as an ``unlogged`` record
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = -1
        self.path: Path | None = None
        self.size = 0
        self._others = 0  # bytes of the folder's other segments at the last look
        self._next_scan = 0.0
        self._closed = False

    # -- writing ---------------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> bool:
        """Write one record (redacted, framed) with one ``os.write``; True when it is in the log.

        False when it was left out and counted in :attr:`unlogged`: the folder is over its bound, the disk
        refused the write, or the log is closed. Never raises.
        """
        try:
            frame = encode(redact_record(record))
            if len(frame) > MAX_RECORD:  # a body too large to frame: the request still counts, without it
                frame = encode(redact_record(_without_payloads(record)))
        except Exception:  # not JSON (or a redaction that failed): nothing of it can be logged, the request goes on
            with self._lock:
                self._left_out()
            return False
        with self._lock:
            if self._closed:
                self.unlogged += 1
                return False
            return self._write(frame)

    def _write(self, frame: bytes) -> bool:
        try:
            if self._fd < 0 or self._pid != os.getpid() or self.size >= self.segment_bytes:
                self._open_segment()
            if self._unreported:
                note = encode({"kind": "unlogged", "ts": time.time(), "count": self._unreported})
                if not self._fits(len(note) + len(frame)):
                    self._left_out()
                    return False
                frame = note + frame
            elif not self._fits(len(frame)):
                self._left_out()
                return False
            self._write_all(frame)
        except OSError:
            self._left_out()
            return False
        self._unreported = 0
        return True

    def _left_out(self) -> None:
        self.unlogged += 1
        self._unreported += 1

    def _fits(self, size: int) -> bool:
        now = time.monotonic()
        if now >= self._next_scan:
            self._others = sum(p.stat().st_size for p in _quiet_segments(self.folder) if p != self.path)
            self._next_scan = now + _RESCAN_S
        return self._others + self.size + size <= self.max_bytes

    def _write_all(self, frame: bytes) -> None:
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self.size)  # never leave a torn record behind
            except OSError:
                self.size = os.fstat(self._fd).st_size
            raise
        self.size += len(frame)

    def _open_segment(self) -> None:
        """Close the current segment (its lock goes with it) and open the next, locked before it is named."""
        if self._fd >= 0:  # a forked child closes its copy too (the parent's lock stays the parent's) and opens its own
            os.close(self._fd)
        self._fd = -1
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        hidden = self.folder / f".{name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, self.folder / name)
        except OSError:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        if self.path is not None:
            self._next_scan = 0.0  # the closed segment is one of the others now
        self._fd, self._pid, self.path, self.size = fd, os.getpid(), self.folder / name, 0

    def close(self) -> None:
        """Write how many records were left out, if any, and release the segment (the recorder delivers it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd < 0 or self._pid != os.getpid():
                return
            try:
                if self._unreported:
                    self._write_all(encode({"kind": "unlogged", "ts": time.time(), "count": self._unreported}))
                    self._unreported = 0
            except OSError:
                pass
            finally:
                os.close(self._fd)
                self._fd = -1


def _without_payloads(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its body and response (kept: what the summary counts), marked ``too_large``."""
    slim = {**record, "body": None, "body_b64": None, "response": None, "too_large": True}
    if isinstance(record.get("error"), str):
        slim["error"] = record["error"][:1000]
    return slim


def _quiet_segments(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder) if entry.name.endswith(SEGMENT_SUFFIX)]
    except OSError:
        return []


# -- redaction -------------------------------------------------------------------------------------


def _may_hold_secrets(text: str) -> bool:
    """False when ``text`` cannot hold a secret-looking name or a known token shape (the cheap test: plain
    substring searches, about a microsecond for a one-row JSON body).

    An ASCII text is first searched without its digits, spaces and ``.,[]+``, none of which any hint holds: a
    hint found in the text is found in what is left (its characters stay, side by side), so that search misses
    nothing, and it reads a numeric body's few letters instead of all of it (11 instead of 53 microseconds for
    16 rows of 30 floats). Only when it finds a hint is the text itself searched, so the answer is the same."""
    if text.isascii():
        left = text.encode("ascii").translate(None, _NO_HINT_BYTES)
        if not _hints_in(left.decode("ascii")):
            return False
    return _hints_in(text)


def _hints_in(text: str) -> bool:
    lowered = text.lower()
    for hint in _NAME_HINTS:
        if hint in lowered:
            return True
    if "://" in text and "@" in text:
        return True
    for hint in _SHAPE_HINTS:
        if hint in text:
            return True
    return "A" in text and _AWS_OR_GOOGLE.search(text) is not None


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the secrets of its body (and where its response or error repeats them) replaced.

    A JSON body: every value under a secret-named key (at any depth), every value of a secret-named column of
    ``dataframe_split``, every string with a token shape. A CSV body: the secret-named columns' values and token
    shapes. A Parquet body (``body_b64``): read, its secret-named columns and token-shaped strings replaced,
    written again. A record without a secret-looking name or token prefix is returned as it is.
    """
    body, packed = record.get("body"), record.get("body_b64")
    if packed is None:
        for key in ("body", "response", "error"):
            text = record.get(key)
            if isinstance(text, str) and _may_hold_secrets(text):
                break
        else:
            return record
    found: list[str] = []
    redacted = dict(record)
    if isinstance(body, str):
        redacted["body"] = _redact_body(body, str(record.get("content_type") or ""), found)
    if isinstance(packed, str):
        redacted["body_b64"] = _redact_parquet(packed, found)
    scrubber = Redactor()
    for value in found:
        scrubber.add_value(value)
    for key in ("response", "error"):
        if isinstance(record.get(key), str):
            redacted[key] = scrubber.scrub(record[key])
    return redacted


def _redact_body(body: str, content_type: str, found: list[str]) -> str:
    if not _may_hold_secrets(body):
        return body
    if "csv" in content_type:
        return _redact_csv(body, found)
    try:
        data = json.loads(body)
    except ValueError:
        return redact_text(body)
    if isinstance(data, dict) and isinstance(data.get("dataframe_split"), dict):
        _redact_split(data["dataframe_split"], found)
    return json.dumps(_redact_json(data, found, False), ensure_ascii=False)


def _redact_json(value: Any, found: list[str], secret: bool) -> Any:
    """``value`` with every leaf under a secret-named key replaced, and token shapes in every string."""
    if isinstance(value, dict):
        return {k: _redact_json(v, found, secret or (isinstance(k, str) and is_secret_name(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(item, found, secret) for item in value]
    if secret:
        if value is not None:
            found.append(str(value))
        return REDACTED
    if isinstance(value, str):
        cleaned = redact_text(value)
        if cleaned != value:
            found.append(value)
        return cleaned
    return value


def _redact_split(split: dict[str, Any], found: list[str]) -> None:
    """The values of the secret-named columns of a ``dataframe_split`` body, replaced in place."""
    columns = split.get("columns")
    rows = split.get("data")
    if not isinstance(columns, list) or not isinstance(rows, list):
        return
    secret = [i for i, name in enumerate(columns) if isinstance(name, str) and is_secret_name(name)]
    for row in rows:
        if isinstance(row, list):
            for i in secret:
                if i < len(row):
                    if row[i] is not None:
                        found.append(str(row[i]))
                    row[i] = REDACTED


def _redact_csv(body: str, found: list[str]) -> str:
    rows = list(csv.reader(io.StringIO(body)))
    if not rows:
        return body
    secret = {i for i, name in enumerate(rows[0]) if is_secret_name(name)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        cleaned = []
        for i, cell in enumerate(row):
            if i in secret or redact_text(cell) != cell:
                found.append(cell)
                cell = REDACTED if i in secret else redact_text(cell)
            cleaned.append(cell)
        writer.writerow(cleaned)
    return out.getvalue()


def _redact_parquet(packed: str, found: list[str]) -> str | None:
    """A Parquet body with its secrets replaced; None (not logged) when it cannot be read."""
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(base64.b64decode(packed)))
    except Exception:  # not Parquet after all: MLflow refused it too; its bytes are not logged
        return None
    changed = False
    for name in frame.columns:
        if is_secret_name(str(name)):
            found.extend(str(v) for v in frame[name] if v is not None)
            frame[name] = REDACTED
            changed = True
        elif frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name].dtype):
            cleaned = frame[name].map(lambda v: redact_text(v) if isinstance(v, str) else v)
            if not cleaned.equals(frame[name]):
                found.extend(str(v) for v, c in zip(frame[name], cleaned, strict=True) if v != c)
                frame[name] = cleaned
                changed = True
    if not changed:
        return packed
    out = io.BytesIO()
    frame.to_parquet(out)
    return base64.b64encode(out.getvalue()).decode()
