"""The serving run of one model server, and the delivery of its traffic log to the store.

The main process of ``nbmlops serve`` makes a :class:`ServingRecorder`: :meth:`ServingRecorder.start` creates
the serving run (experiment ``serve/NAME``, RUNNING) and its folder ``<root>/.nbmlops/serve/<run id>/``, where
the serving processes write their traffic log segments (:class:`nbmlops.serving.traffic_log.TrafficLog`); a
thread then delivers what they wrote every ``interval`` seconds (and, at start and every
:data:`ORPHAN_INTERVAL` seconds, the folders of servers that died: :meth:`ServingRecorder.deliver_orphans`);
:meth:`ServingRecorder.stop` delivers the rest and ends the run FINISHED.

A delivery round, exactly once:

1. **plan**: each segment is fsync'd, its complete frames past its cursor are read (a frame still being
   written by a live writer waits for the next round; a damaged part is reported and skipped), and the plan
   (every segment's end offset, the round's number and timestamp) is written to the folder's state file
   ``delivery.json`` (replaced atomically and fsync'd) before anything is sent;
2. **send**: the sampled requests become the rows of ``traffic/<start ns>-<round>.parquet`` (also a dataset
   input of the run, context ``traffic``), feedback those of ``feedback/<start ns>-<round>.parquet``; the
   summary metrics (cumulative over the server's life) are logged at step = round number with the plan's
   timestamp; tags say the version serving, the last swap and refusal, and the heartbeat;
3. **commit**: the state file takes the new cursors and summary at once; segments delivered to their end
   whose writer is gone (their lock is free) are deleted.

A round that fails (the store is down) keeps its plan and is sent again, whole, at the next round: the same
artifact paths are replaced with the same content, the same dataset digest is logged once, metrics with the
same step, timestamp and value are stored once. Nothing is lost and nothing is counted twice.

A request logged while a shadow alias is served waits (at most :data:`SHADOW_WAIT_S` seconds, while its
writer lives) for its shadow record, so both predictions land on one row.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nbmlops.journal import Damage, make_durable, read_records, try_lock
from nbmlops.redact import redact_text
from nbmlops.serving.traffic_log import list_segments

if TYPE_CHECKING:
    from nbmlops.backend.store import Store
    from nbmlops.config import Settings

__all__ = ["DEFAULT_INTERVAL", "SHADOW_WAIT_S", "STATE_FILE", "ServingRecorder", "serve_root"]

#: seconds between two deliveries (and heartbeats) of a running server
DEFAULT_INTERVAL = 5.0
#: how long a logged request waits for its shadow record before it is delivered without it
SHADOW_WAIT_S = 30.0
STATE_FILE = "delivery.json"
LOCK_FILE = "recorder.lock"
#: seconds between two looks for the folders of dead servers (the first at start)
ORPHAN_INTERVAL = 30.0
#: a round reads at most about this many bytes of segments (the rest goes in the next rounds)
ROUND_BYTES = 64 * 1024 * 1024
_TAG = "nbmlops.serve."
_BUCKET = 1.01  # latency histogram: buckets 1 % wide from 1 microsecond
_SMALLEST_MS = 1e-3


def serve_root(settings: Settings) -> Path:
    """The folder holding the serving folders of a project: ``<root>/.nbmlops/serve``."""
    return settings.state_dir / "serve"


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc).isoformat(timespec="seconds")


# -- state of a serving folder ---------------------------------------------------------------------


@dataclass
class _Summary:
    """The traffic of a server's life so far: counts and a latency histogram (1 % buckets)."""

    requests: int = 0
    errors: int = 0
    unlogged: int = 0
    latency: dict[str, int] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "request":
            self.requests += 1
            status = record.get("status")
            if not isinstance(status, int) or status >= 400:
                self.errors += 1
            latency = record.get("latency_ms")
            if isinstance(latency, (int, float)) and math.isfinite(latency):
                bucket = str(math.floor(math.log(max(latency, _SMALLEST_MS) / _SMALLEST_MS, _BUCKET)))
                self.latency[bucket] = self.latency.get(bucket, 0) + 1
        elif kind == "unlogged":
            self.unlogged += int(record.get("count") or 0)

    def percentile(self, q: float) -> float:
        total = sum(self.latency.values())
        rank, seen = max(math.ceil(q * total), 1), 0
        for bucket in sorted(self.latency, key=int):
            seen += self.latency[bucket]
            if seen >= rank:
                return _SMALLEST_MS * _BUCKET ** (int(bucket) + 0.5)
        return math.nan

    def metrics(self) -> dict[str, float]:
        metrics = {"requests": self.requests, "errors": self.errors, "unlogged": self.unlogged,
                   "error_rate": self.errors / self.requests if self.requests else 0.0}
        if self.latency:
            metrics.update(latency_p50_ms=self.percentile(0.5), latency_p95_ms=self.percentile(0.95),
                           latency_p99_ms=self.percentile(0.99))
        return {k: float(v) for k, v in metrics.items()}


@dataclass
class _State:
    """What ``delivery.json`` holds: the serving run, delivery cursors, the summary and the round in flight."""

    run_id: str
    model: str
    alias: str
    shadow: str | None
    started_ns: int
    seq: int = 1
    cursors: dict[str, int] = field(default_factory=dict)
    summary: _Summary = field(default_factory=_Summary)
    pending: dict[str, Any] | None = None
    stopped: bool = False

    @classmethod
    def load(cls, folder: Path) -> _State | None:
        try:
            data = json.loads((folder / STATE_FILE).read_text())
            data["summary"] = _Summary(**data["summary"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save(self, folder: Path) -> None:
        path = folder / STATE_FILE
        tmp = folder / f".{STATE_FILE}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        make_durable(folder)


# -- one folder's delivery -------------------------------------------------------------------------


class _Folder:
    """The delivery of one serving folder to its serving run."""

    def __init__(self, store: Store, folder: Path, state: _State, live: bool) -> None:
        self.store = store
        self.folder = folder
        self.state = state
        self.live = live  # this server's own folder: each round refreshes the heartbeat
        self.tags: dict[str, str] = {}  # tags set so far by this process

    def deliver(self, final: bool) -> bool:
        """Rounds until everything complete is delivered; True when nothing is left waiting."""
        while True:
            more = self.round(final)
            if not more:
                return True

    def round(self, final: bool) -> bool:
        """One round (see the module docstring); True when more is waiting than one round takes."""
        state = self.state
        more = False
        if state.pending is None:
            plan, batch, more = self._plan(final)
            if plan is None:
                self._send_tags({})
                self._clean()
                return False
            state.pending = plan
            state.save(self.folder)
        else:  # the round planned before a failure (or a kill), sent again whole; then the rest
            batch, more = self._read(state.pending), True
        self._send(state.pending, batch)
        for name, end in state.pending["ends"].items():
            state.cursors[name] = end
        for record in batch:
            state.summary.add(record)
        state.seq += 1
        state.pending = None
        state.save(self.folder)
        self._clean()
        return more

    # -- plan and read ----------------------------------------------------------------------------

    def _plan(self, final: bool) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
        """The next round's end offsets and its records; whether more waits than a round takes."""
        ends: dict[str, int] = {}
        framed: list[tuple[str, int, int, dict[str, Any], bool]] = []  # segment, start, end, record, live writer
        taken = 0
        more = False
        for path in list_segments(self.folder):
            start = self.state.cursors.get(path.name, 0)
            try:
                make_durable(path)
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= start:
                continue
            if taken >= ROUND_BYTES:
                more = True
                break
            live = _writer_alive(path)
            end = start
            for record_start, record_end, record in _frames(path, start, live):
                end = record_end
                if record is not None:
                    framed.append((path.name, record_start, record_end, record, live))
            if end > start:
                ends[path.name] = end
                taken += end - start
        if not final and self.state.shadow:
            ends, framed = self._wait_for_shadows(ends, framed)
        if not ends:
            return None, [], False
        plan = {"seq": self.state.seq, "ts_ms": int(time.time() * 1000), "ends": ends}
        return plan, [record for *_, record, _ in framed], more

    def _wait_for_shadows(
        self, ends: dict[str, int], framed: list[tuple[str, int, int, dict[str, Any], bool]]
    ) -> tuple[dict[str, int], list[tuple[str, int, int, dict[str, Any], bool]]]:
        """Hold back, segment by segment, from the first logged request whose shadow record has not come yet
        (while its writer lives and for at most :data:`SHADOW_WAIT_S`)."""
        shadowed = {str(r.get("id")) for *_, r, _ in framed if r.get("kind") == "shadow"}
        now = time.time()
        cut: dict[str, int] = {}
        for name, start, _, record, live in framed:
            if name in cut or record.get("kind") != "request" or not _sampled(record):
                continue
            waiting = str(record.get("id")) not in shadowed and now - float(record.get("ts") or 0) < SHADOW_WAIT_S
            if waiting and (live or _process_alive(name)):
                cut[name] = start
        if not cut:
            return ends, framed
        kept = [item for item in framed if item[0] not in cut or item[1] < cut[item[0]]]
        ends = {name: cut.get(name, end) for name, end in ends.items()}
        ends = {name: end for name, end in ends.items() if end > self.state.cursors.get(name, 0)}
        return ends, kept

    def _read(self, plan: dict[str, Any]) -> list[dict[str, Any]]:
        """The records of a planned round again (the round is being sent once more)."""
        records: list[dict[str, Any]] = []
        for name, end in sorted(plan["ends"].items()):
            path = self.folder / name
            start = self.state.cursors.get(name, 0)
            for _, record_end, record in _frames(path, start, live=False, end=end):
                if record is not None and record_end <= end:
                    records.append(record)
        return records

    # -- send ---------------------------------------------------------------------------------------

    def _send(self, plan: dict[str, Any], records: list[dict[str, Any]]) -> None:
        from nbmlops.backend.traffic import feedback_frame, log_frame, log_summary, request_frame

        state, run_id = self.state, self.state.run_id
        name = f"{state.started_ns}-{plan['seq']:06d}.parquet"
        shadows = {str(r.get("id")): r for r in records if r.get("kind") == "shadow"}
        sampled = [r for r in records if r.get("kind") == "request" and _sampled(r)]
        if sampled:
            log_frame(self.store, run_id, f"traffic/{name}", request_frame(sampled, shadows), "traffic")
        feedback = [r for r in records if r.get("kind") == "feedback"]
        if feedback:
            log_frame(self.store, run_id, f"feedback/{name}", feedback_frame(feedback), None)
        summary = _Summary(**{**asdict(state.summary), "latency": dict(state.summary.latency)})
        for record in records:
            summary.add(record)
        if any(r.get("kind") in ("request", "unlogged") for r in records):
            log_summary(self.store, run_id, summary.metrics(), plan["seq"], plan["ts_ms"])
        self._send_tags(_tags_of(records))

    def _send_tags(self, tags: dict[str, str]) -> None:
        from nbmlops.backend.traffic import set_run_tags

        changed = {k: v for k, v in tags.items() if self.tags.get(k) != v}
        if self.live and not self.state.stopped:
            changed[_TAG + "heartbeat"] = _iso()
        set_run_tags(self.store, self.state.run_id, changed)
        self.tags.update(changed)

    # -- clean up -----------------------------------------------------------------------------------

    def _clean(self) -> None:
        """Delete the segments delivered to their end (an empty one too: its writer died before its first
        record) whose writers are gone; forget the cursors of segments no longer there."""
        present = {path.name: path for path in list_segments(self.folder)}
        changed = False
        for name in [name for name in self.state.cursors if name not in present]:
            del self.state.cursors[name]
            changed = True
        for name, path in present.items():
            try:
                if self.state.cursors.get(name, 0) < path.stat().st_size:
                    continue
            except FileNotFoundError:
                continue
            fd = try_lock(path)
            if fd is None:
                continue
            try:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
            changed |= self.state.cursors.pop(name, None) is not None
        if changed:
            self.state.save(self.folder)

    def settled(self) -> bool:
        """True when every segment was delivered and deleted (no writer holds one)."""
        return not list_segments(self.folder) and self.state.pending is None


def _sampled(record: dict[str, Any]) -> bool:
    return record.get("body") is not None or record.get("body_b64") is not None


def _frames(
    path: Path, start: int, live: bool, end: int | None = None
) -> list[tuple[int, int, dict[str, Any] | None]]:
    """``(start, end, record)`` of each complete frame of a segment from ``start`` (``None`` for a damaged part,
    reported once). A frame cut short at the tail of a segment whose writer lives is left for the next round."""
    try:
        frames = list(read_records(path, start))
    except FileNotFoundError:
        return []
    out: list[tuple[int, int, dict[str, Any] | None]] = []
    position = start
    for frame_end, record in frames:
        if end is not None and frame_end > end:
            break
        if isinstance(record, Damage):
            if live and frame_end == frames[-1][0] and record is frames[-1][1]:
                break  # being written right now
            if end is None:
                print(f"nbmlops serve: traffic log damaged, skipped: {record}", file=sys.stderr)
            out.append((position, frame_end, None))
        else:
            out.append((position, frame_end, record))
        position = frame_end
    return out


def _writer_alive(path: Path) -> bool:
    fd = try_lock(path)
    if fd is None:
        return path.exists()
    os.close(fd)
    return False


def _process_alive(segment: str) -> bool:
    """Whether the process that wrote a segment (named ``<ns>-<host>-<pid>-<random>.traffic``) still runs here."""
    try:
        rest, pid, _ = segment.rsplit("-", 2)
        host = rest.split("-", 1)[1]
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _tags_of(records: list[dict[str, Any]]) -> dict[str, str]:
    """The run tags the records of a round set: the version serving, since when, the last swap, the last refusal."""
    tags: dict[str, str] = {}
    for record in sorted((r for r in records if r.get("kind") in ("start", "swap", "refused")),
                         key=lambda r: float(r.get("ts") or 0)):
        ts = float(record.get("ts") or 0)
        if record["kind"] == "start" and record.get("version") is not None:
            tags[_TAG + "version"] = str(record["version"])
        elif record["kind"] == "swap":
            tags[_TAG + "version"] = str(record.get("to"))
            tags[_TAG + "since"] = _iso(ts)
            tags[_TAG + "last_swap"] = f"{_iso(ts)} v{record.get('from')} -> v{record.get('to')}"
        elif record["kind"] == "refused":
            tags[_TAG + "last_refusal"] = f"{_iso(ts)} v{record.get('version')}: {record.get('reason')}"
    return tags


# -- the recorder ----------------------------------------------------------------------------------


class ServingRecorder:
    """The serving run of this server and the thread that delivers its traffic.

    Args:
        settings: the project's settings (default: resolved from the working directory).
        interval: seconds between deliveries (and heartbeats).
    """

    def __init__(self, settings: Settings | None = None, *, interval: float = DEFAULT_INTERVAL) -> None:
        from nbmlops.config import resolve_settings

        self.settings = settings or resolve_settings()
        self.interval = interval
        self.run_id: str | None = None
        self.folder: Path | None = None
        self._delivery: _Folder | None = None
        self._lock_fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rounds = threading.Lock()
        self._last_problem: str | None = None
        self._kept: set[Path] = set()  # orphaned folders whose run was deleted, said once
        #: the folders the last :meth:`deliver_orphans` left, and why
        self.waiting: dict[Path, str] = {}

    @property
    def store(self) -> Store:
        """The tracking store of the project."""
        from nbmlops.backend.store import open_store

        return open_store(self.settings.tracking_uri, self.settings.artifact_root)

    def start(self, model: str, alias: str, version: int, url: str, host: str, pid: int,
              shadow: str | None = None) -> tuple[str, Path]:
        """Create the serving run of ``model@alias`` serving ``version`` at ``url`` (from process ``pid`` on
        ``host``) and its folder, and start the delivery thread. Returns the run id and the folder.

        Raises:
            StoreUnavailableError, StoreAuthError: the store cannot take the run (nothing is served then).
        """
        from nbmlops.backend.traffic import SERVE_EXPERIMENT_PREFIX, create_serving_run

        started_ns = time.time_ns()
        tags = {
            "nbmlops.kind": "serve", _TAG + "model": model, _TAG + "alias": alias, _TAG + "url": url,
            _TAG + "version": str(version), _TAG + "since": _iso(started_ns / 1e9), _TAG + "heartbeat": _iso(),
            _TAG + "pid": str(pid), _TAG + "host": host,
        }
        if shadow:
            tags[_TAG + "shadow"] = shadow
        address = urlsplit(url).netloc or url
        run_id = create_serving_run(self.store, SERVE_EXPERIMENT_PREFIX + model, f"serve {model}@{alias} {address}",
                                    tags)
        folder = serve_root(self.settings) / run_id
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(folder / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        state = _State(run_id=run_id, model=model, alias=alias, shadow=shadow, started_ns=started_ns)
        state.save(folder)
        self.run_id, self.folder = run_id, folder
        self._delivery = _Folder(self.store, folder, state, live=True)
        self._delivery.tags.update(tags)
        self._thread = threading.Thread(target=self._run, name="nbmlops-serve-recorder", daemon=True)
        self._thread.start()
        return run_id, folder

    def _run(self) -> None:
        next_orphans = 0.0
        while True:
            if time.monotonic() >= next_orphans:  # a server killed just now may hold its segments a moment longer
                self._quietly(self.deliver_orphans)
                next_orphans = time.monotonic() + ORPHAN_INTERVAL
            if self._stop.wait(self.interval):
                return
            self.deliver()

    def deliver(self, final: bool = False) -> bool:
        """Deliver what the serving processes wrote since the last delivery, now. True when it all went;
        False when the store is down (it is sent again at the next delivery) — never raises."""
        if self._delivery is None:
            return True
        with self._rounds:
            return bool(self._quietly(lambda: self._delivery.deliver(final) if self._delivery else True))

    def _quietly(self, work: Any) -> Any:
        """Run a delivery; a failure is one line on stderr (once per cause), never an exception: serving goes on,
        and what was not delivered is tried again at the next round."""
        try:
            result = work()
        except Exception as exc:
            problem = redact_text(f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            if problem != self._last_problem:
                print(f"nbmlops serve: traffic not delivered yet, kept for the next round: {problem}",
                      file=sys.stderr)
                self._last_problem = problem
            return False
        if self._last_problem is not None:
            print("nbmlops serve: traffic delivered again", file=sys.stderr)
            self._last_problem = None
        return result if result is not None else True

    def stop(self) -> bool:
        """Stop the thread, deliver the rest and end the run FINISHED. When the store is down (or a serving
        process still holds its segment), the run stays RUNNING and its folder waits for the next server of
        the project, which delivers it and ends it FINISHED. True when everything was delivered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        delivery = self._delivery
        if delivery is None:
            return True
        delivered = self.deliver(final=True)
        done = bool(delivered and delivery.settled())
        if done:
            from nbmlops.backend.traffic import end_serving_run

            done = bool(self._quietly(lambda: end_serving_run(self.store, delivery.state.run_id, "FINISHED")))
        if done:
            shutil.rmtree(delivery.folder, ignore_errors=True)
        else:
            delivery.state.stopped = True
            with contextlib.suppress(OSError):
                delivery.state.save(delivery.folder)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._delivery = None
        return done

    def deliver_orphans(self) -> list[str]:
        """Deliver the serving folders of this project whose servers are gone (no recorder holds the folder's
        lock, no process its segments), each into its own serving run, which then ends KILLED (FINISHED when
        its server had stopped gracefully but could not deliver). Returns the run ids fully delivered.

        Raises:
            StoreUnavailableError, StoreAuthError: the store is down (what was not delivered stays).
        """
        from nbmlops.backend.traffic import end_serving_run, run_state

        done: list[str] = []
        self.waiting = {}
        root = serve_root(self.settings)
        if not root.is_dir():
            return done
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder == self.folder:
                continue
            lock = try_lock(folder / LOCK_FILE)
            if lock is None:
                self.waiting[folder] = "its server is running"  # or is making the folder right now
                continue
            try:
                state = _State.load(folder)
                if state is None:
                    self.waiting[folder] = f"no readable {STATE_FILE}"
                    continue
                if any(_writer_alive(path) for path in list_segments(folder)):
                    self.waiting[folder] = "a serving process still writes its traffic log"
                    continue
                if run_state(self.store, state.run_id) is None:
                    self.waiting[folder] = f"its serving run {state.run_id} is no longer in the store"
                    if folder not in self._kept:
                        print(f"nbmlops serve: the serving run {state.run_id} of {folder} is no longer in the "
                              "store; its traffic log is kept there", file=sys.stderr)
                        self._kept.add(folder)
                    continue
                delivery = _Folder(self.store, folder, state, live=False)
                delivery.deliver(final=True)
                if not delivery.settled():
                    self.waiting[folder] = "not every segment could be delivered and removed"
                    continue
                end_serving_run(self.store, state.run_id, "FINISHED" if state.stopped else "KILLED")
                shutil.rmtree(folder, ignore_errors=True)
                done.append(state.run_id)
            finally:
                os.close(lock)
        return done
