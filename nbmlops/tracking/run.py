"""A tracked run: what scripts get from ``nbmlops.track()`` and what ``%%track`` builds on."""

from __future__ import annotations

import functools
import getpass
import hashlib
import io
import json
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from nbmlops.backend.identity import claimed_user
from nbmlops.config import Settings, project_name, resolve_settings
from nbmlops.exceptions import TrackingError
from nbmlops.tracking.heartbeat import beat_for, process_start_time, stop_beating
from nbmlops.tracking.series import MetricSeries
from nbmlops.tracking.session import Session, get_session

__all__ = [
    "SNAPSHOT_TAG", "STORED_IN_TAG", "Run", "active_run", "notebook_experiment", "process_start_time", "snapshot_state", "track",
]

MAX_PARAM_LENGTH = 6000
#: tag naming the params whose values were cut to MAX_PARAM_LENGTH (whole ones: artifacts params/<key>.txt)
TRUNCATED_TAG = "nbmlops.truncated_params"
#: prefix of the tag that says, for each dataset fingerprint a run logged, whether the data was
#: snapshotted: ``nbmlops.snapshot.<fingerprint>`` = ``stored`` or ``not snapshotted: <reason>``
SNAPSHOT_TAG = "nbmlops.snapshot."
#: prefix of the tag that names, for an artifact folder of a run's context (``environment``, ``git``) that an
#: earlier run of the same session stored with the same content, the run key of the run that holds it:
#: ``nbmlops.stored_in.environment`` = ``<run key>`` (readers follow it: :func:`~nbmlops.tracking.query.download_artifact`)
STORED_IN_TAG = "nbmlops.stored_in."
STORED = "stored"
#: set by ``nbmlops run`` for its kernel: the run key of the notebook's run, parent of the cells' runs
PARENT_ENV = "NBMLOPS_PARENT_RUN_KEY"
_stack: list[Run] = []
_stack_lock = threading.Lock()
_unshared: set[str] = set()  # snapshot remotes an upload to failed, warned about once
_too_large: set[str] = set()  # variables said to be over snapshot_max_bytes, once per process


def _now_ms() -> int:
    return int(time.time() * 1000)


def notebook_path(namespace: Mapping[str, Any] | None = None) -> str | None:
    """The notebook this kernel runs, from what papermill, VS Code or Jupyter tell it (None elsewhere).

    ``namespace`` is the kernel's user namespace (default: the running IPython shell's, if any).
    """
    if namespace is None and "IPython" in sys.modules:
        shell = sys.modules["IPython"].get_ipython()
        namespace = shell.user_ns if shell is not None else None
    namespace = namespace or {}
    for candidate in (
        os.environ.get("NBMLOPS_NOTEBOOK"),
        namespace.get("__vsc_ipynb_file__"),
        namespace.get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            if os.path.isabs(candidate) or os.path.exists(candidate):
                return os.path.abspath(candidate)
            here = os.path.basename(candidate)  # Jupyter may name it relative to the server's root
            return os.path.abspath(here if os.path.exists(here) else candidate)
    return None


@functools.lru_cache(maxsize=4)
def _notebook_cells(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """``(cell id, source)`` of the code cells of the notebook at ``path`` (as of ``mtime_ns``)."""
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ()
    found = []
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "code" and isinstance(cell.get("id"), str):
            source = cell.get("source", "")
            found.append((cell["id"], "".join(source) if isinstance(source, list) else str(source)))
    return tuple(found)


def cell_id_in_notebook(path: str, source: str, taken: set[str]) -> str | None:
    """The id of the first code cell of notebook ``path`` whose source is ``source`` and whose id is not in
    ``taken``: how a headless kernel (nbclient sends no cell id) knows which cell it runs."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    for cell_id, cell_source in _notebook_cells(path, mtime):
        if cell_source == source and cell_id not in taken:
            return cell_id
    return None


def default_source() -> tuple[str, str]:
    """``(path, type)`` of the program that is running: the notebook of a kernel, else the script."""
    notebook = notebook_path()
    if notebook:
        return notebook, "NOTEBOOK"
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "")
    if not path or path in ("-c", "-") or path.startswith("<") or path.endswith("ipykernel_launcher.py"):
        return "interactive", "LOCAL"
    return str(Path(path).resolve()), "LOCAL"


def experiment_for(source: str, root: Path) -> str:
    """The default experiment of a notebook or script: ``<project>/<its path relative to the root, without
    suffix>``, ``<project>/interactive`` for cells of neither (see :func:`nbmlops.config.project_name`); a file
    outside the root: its absolute path, without suffix."""
    project = project_name(root)
    if source == "interactive":
        return f"{project}/interactive"
    path = Path(source).resolve()
    try:
        relative = path.relative_to(root)
    except ValueError:
        return str(path.with_suffix("") if path.suffix in (".ipynb", ".py") else path)
    return f"{project}/{(relative.with_suffix('') if relative.suffix in ('.ipynb', '.py') else relative).as_posix()}"


def notebook_experiment(shell: Any = None) -> str:
    """The experiment the ``%%track`` cells of this notebook go to when they name none."""
    settings = resolve_settings()
    if settings.experiment:
        return settings.experiment
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    notebook = notebook_path(shell.user_ns) if shell is not None else None
    return experiment_for(notebook or "interactive", settings.root)


class Run:
    """One MLflow run, recorded through the journal.

    Use it as a context manager (``with nbmlops.track(...) as run:``): the body's completion gives
    FINISHED, an exception FAILED (type and message as tags, traceback as an artifact) and is
    re-raised unchanged, ``KeyboardInterrupt`` gives KILLED.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        experiment: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        source: tuple[str, str] | None = None,
        settings: Settings | None = None,
        session: Session | None = None,
    ) -> None:
        self.session = session or get_session()
        self.settings = settings or resolve_settings()
        self.key = uuid.uuid4().hex
        self.name = name
        self.source, self.source_type = source or default_source()
        with _stack_lock:
            enclosing = _stack[-1] if _stack else None  # a run inside another goes to its experiment
        self.experiment: str = (
            experiment
            or self.settings.experiment
            or (enclosing.experiment if enclosing is not None else experiment_for(self.source, self.settings.root))
        )
        self.params: dict[str, str] = {}
        self.metrics: dict[str, float] = {}
        self.series: dict[str, MetricSeries] = {}  # every metric's values as logged, bounded (the summary's curves)
        self.status: str | None = None
        self.started = _now_ms()
        self.ended: int | None = None
        self.datasets: dict[str, str] = {}  # inputs: name -> fingerprint
        self.outputs: dict[str, str] = {}  # data the run made (context "output"): name -> fingerprint
        self.contexts: dict[str, str] = {}  # every dataset logged: name -> its context
        self._training: dict[str, Any] = {}  # data logged with context "training", kept until the run ends
        self.parent: Run | None = None
        self._steps: dict[str, int] = {}
        self._initial_params = dict(params or {})
        self._truncated: dict[str, str] = {}
        self._initial_tags = dict(tags or {})
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Run:
        """Start the run: journal its start record (durably) and make it the active run."""
        if self._started:
            raise TrackingError(f"run {self.key} was already started")
        self._started = True
        with _stack_lock:
            self.parent = _stack[-1] if _stack else None
            _stack.append(self)
        self.session.runs.append(self)
        tags = {
            "mlflow.source.name": self.source,
            "mlflow.source.type": self.source_type,
            "mlflow.user": _user(self.settings.tracking_uri),
            "nbmlops.host": socket.gethostname(),
            "nbmlops.pid": str(os.getpid()),
            "nbmlops.process_start": process_start_time() or "",
        }
        tags.update({k: str(v) for k, v in self._initial_tags.items()})
        record: dict[str, Any] = {
            "t": "start",
            "run": self.key,
            "store": self.session.addresses.add(self.settings.tracking_uri),  # without its credentials
            "artifact_root": self.settings.artifact_root,
            "experiment": self.experiment,
            "name": self.name,
            "ts": self.started,
            "tags": self.session.redactor.redact_mapping(tags),
        }
        parent = self.parent.key if self.parent is not None else os.environ.get(PARENT_ENV)
        if parent:
            record["parent"] = parent
        records = [record]
        if self._initial_params:
            records += self._params_records(self._initial_params)
        self.session.emit(records)
        beat_for(self)
        self.session.background(self._capture_context, set(self.settings.capture))
        return self

    def _capture_context(self, kinds: set[str]) -> None:
        """Git state and environment, captured off the user's thread right after the start.

        A folder of them that an earlier run of this session stored in the same store with the same content
        (the environment, the diff of an unchanged work tree) is not stored again: the tag
        ``nbmlops.stored_in.<folder>`` names the run key of the run that holds it (see :data:`STORED_IN_TAG`).
        """
        from nbmlops.tracking.context import git_diff, git_state, installed_packages, python_environment

        records: list[dict[str, Any]] = []
        shared: dict[str, list[dict[str, Any]]] = {}  # folder -> its artifact records, stored once per session
        tags: dict[str, str] = {}
        if "git" in kinds:
            where = Path(self.source).parent if self.source_type == "LOCAL" and self.source != "interactive" else None
            state = git_state(where if where and where.is_dir() else self.settings.root)
            if state is not None:
                tags.update(
                    {
                        "mlflow.source.git.commit": state.commit,
                        "mlflow.source.git.branch": state.branch or "",
                        "mlflow.source.git.repoURL": state.remote or "",
                        "nbmlops.git.dirty": str(state.dirty).lower(),
                    }
                )
                if state.dirty:
                    diff = git_diff(state.root)
                    if diff:
                        shared["git"] = [{"t": "artifact", "run": self.key, "path": "git/diff.patch", "text": diff}]
        if "environment" in kinds:
            env = python_environment()
            tags["nbmlops.python"] = env.get("python_version", "")
            tags["nbmlops.platform"] = env.get("platform", "")
            shared["environment"] = [
                {"t": "artifact", "run": self.key, "path": "environment/python.json", "text": json.dumps(env, indent=2)},
                {
                    "t": "artifact",
                    "run": self.key,
                    "path": "environment/requirements.txt",
                    "text": "\n".join(installed_packages()) + "\n",
                },
            ]
        scrub = self.session.redactor.scrub
        if "code" in kinds and self.source_type == "LOCAL" and self.source.endswith(".py") and Path(self.source).is_file():
            source = Path(self.source).read_text(errors="replace")
            text = scrub(self.session.redactor.redact_source(source))
            records.append({"t": "artifact", "run": self.key, "path": f"code/{Path(self.source).name}", "text": text})
        store = f"{self.settings.tracking_uri}\n{self.settings.artifact_root}"
        for folder, files in shared.items():
            digest = hashlib.sha256()
            for record in files:
                record["text"] = scrub(record["text"])
                digest.update(json.dumps([record["path"], record["text"]]).encode("utf-8", "surrogatepass"))
            holder = self.session.stored_in(store, folder, digest.hexdigest(), self.key)
            if holder is None:
                records += files
            else:
                tags[STORED_IN_TAG + folder] = holder
        records.insert(0, {"t": "tags", "run": self.key, "tags": self.session.redactor.redact_mapping(tags)})
        self.session.emit(records)

    def end(self, status: str = "FINISHED", *, error: BaseException | None = None, reason: str | None = None) -> None:
        """End the run with ``status``; ``error`` adds its type, message and traceback."""
        if self.status is not None or not self._started:
            return
        self.status = status
        self.ended = _now_ms()
        records: list[dict[str, Any]] = []
        tags = {"nbmlops.duration_s": f"{(self.ended - self.started) / 1000:.3f}"}
        if error is not None:
            scrub = self.session.redactor.scrub
            tags["nbmlops.error.type"] = type(error).__name__
            tags["nbmlops.error.message"] = scrub(str(error))[:5000]
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            records.append({"t": "artifact", "run": self.key, "path": "error/traceback.txt", "text": scrub(text)})
        if reason:
            tags["nbmlops.failure_reason"] = reason
        records.insert(0, {"t": "tags", "run": self.key, "tags": tags})
        records.append({"t": "end", "run": self.key, "status": status, "ts": self.ended})
        self._training.clear()
        with _stack_lock:
            if self in _stack:
                _stack.remove(self)
        if self in self.session.runs:
            self.session.runs.remove(self)
        stop_beating(self)
        self.session.emit(records)

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        end_for(self, exc)

    # -- logging ------------------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        """Log one parameter (stored as text, secrets redacted)."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; logging a different value for a key already logged in this run is an error.

        A value longer than MLflow's limit (6,000 characters) is logged cut, with a ``...`` at the
        end; the whole value goes to the artifact ``params/<key>.txt``, the tag
        ``nbmlops.truncated_params`` names the keys, and one warning says so.
        """
        records = self._params_records(params)
        if records[0]["params"]:
            self.session.emit(records)

    def _params_records(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        fresh: dict[str, str] = {}
        whole: dict[str, str] = {}
        for key, value in params.items():
            text = self.session.redactor.redact_value(str(key), _param_text(value))
            if len(text) > MAX_PARAM_LENGTH:
                whole[str(key)] = text
                text = text[: MAX_PARAM_LENGTH - 3] + "..."
            if key in self.params:
                if self.params[key] != text:
                    raise TrackingError(
                        f"param {key!r} was already logged as {self.params[key]!r} in this run; "
                        f"MLflow does not allow changing it to {text!r} (use a metric or a new run)"
                    )
                continue
            fresh[str(key)] = text
        self.params.update(fresh)
        records: list[dict[str, Any]] = [{"t": "params", "run": self.key, "params": fresh}]
        whole = {k: v for k, v in whole.items() if k in fresh}
        if whole:
            self._truncated.update(whole)
            sys.stderr.write(
                f"nbmlops: param(s) {', '.join(whole)} longer than {MAX_PARAM_LENGTH:,} characters were cut; "
                "the whole values are stored as artifacts params/<name>.txt\n"
            )
            records.append({"t": "tags", "run": self.key, "tags": {TRUNCATED_TAG: ",".join(sorted(self._truncated))}})
            for key, text in whole.items():
                records.append({"t": "artifact", "run": self.key, "path": f"params/{_artifact_name(key)}.txt", "text": text})
        return records

    def log_metric(self, key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
        """Log one metric value; without ``step``, each call for the same key takes the next step (0, 1, ...)."""
        self.log_metrics({key: value}, step=step, timestamp=timestamp)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None) -> None:
        """Log several metric values at once (a series when called repeatedly)."""
        ts = timestamp or _now_ms()
        rows = []
        for key, value in metrics.items():
            number = _metric_value(key, value)
            at = self._steps.get(key, -1) + 1 if step is None else int(step)
            self._steps[key] = max(at, self._steps.get(key, -1))
            self.metrics[key] = number
            self.series.setdefault(key, MetricSeries()).add(number)
            rows.append([str(key), number, at, ts])
        if rows:
            self.session.emit([{"t": "metrics", "run": self.key, "metrics": rows}])

    def log_metric_series(self, key: str, values: Sequence[float]) -> None:
        """Log ``values`` as the series of metric ``key``, at steps 0, 1, ... (one journal record)."""
        ts = _now_ms()
        numbers = [_metric_value(key, value) for value in values]
        rows = [[str(key), number, step, ts] for step, number in enumerate(numbers)]
        if rows:
            self._steps[key] = len(rows) - 1
            self.metrics[key] = numbers[-1]
            self.series[key] = series = MetricSeries()
            for number in numbers:
                series.add(number)
            self.session.emit([{"t": "metrics", "run": self.key, "metrics": rows}])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (secrets redacted)."""
        clean = self.session.redactor.redact_mapping({str(k): str(v) for k, v in tags.items()})
        if clean:
            self.session.emit([{"t": "tags", "run": self.key, "tags": clean}])

    def log_text(self, text: str, path: str) -> None:
        """Store ``text`` as the artifact ``path`` (secrets scrubbed)."""
        self.session.emit([{"t": "artifact", "run": self.key, "path": path, "text": self.session.redactor.scrub(text)}])

    def log_bytes(self, data: bytes, path: str) -> None:
        """Store binary ``data`` (an image, say) as the artifact ``path``."""
        self.session.emit([{"t": "artifact", "run": self.key, "path": path, "data": data}])

    def log_figure(self, figure: Any, path: str) -> None:
        """Store a matplotlib figure as a PNG artifact."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        self.log_bytes(buffer.getvalue(), path)

    def log_dataset(self, obj: Any, name: str | None = None, context: str = "input") -> str:
        """Fingerprint ``obj`` now, log it as an MLflow dataset input; in the background, profile it
        and snapshot it (see :func:`snapshot_state`).

        ``obj``: a DataFrame, Series, ndarray, or the path of a file or directory. Returns the fingerprint.
        """
        from nbmlops.data import fingerprint

        digest = fingerprint(obj)
        if isinstance(obj, (str, os.PathLike)):
            obj = Path(obj).resolve()  # the background work must not depend on a later working directory
        label = name or "dataset"
        (self.outputs if context == "output" else self.datasets)[label] = digest
        self.contexts[label] = context
        if context == "training":
            self._training[label] = obj
        self.session.background(self._emit_dataset, obj, label, digest, context)
        return digest

    def training_data(self) -> dict[str, Any]:
        """The data this run logged with context ``training`` (name -> object), while the run is open: what
        :func:`nbmlops.register` registers a model with when it is given no ``training_data``."""
        return dict(self._training)

    def _emit_dataset(self, obj: Any, name: str, digest: str, context: str) -> None:
        from nbmlops.data import mlflow_schema, profile
        from nbmlops.exceptions import UnsupportedDataError

        stats: dict[str, Any] | None = None
        schema: str | None = None
        if isinstance(obj, (str, os.PathLike)):
            source_type, source = "local", json.dumps({"uri": Path(obj).resolve().as_uri()})
        else:
            source_type = "code"
            source = json.dumps({"tags": {"mlflow.source.name": self.source, "nbmlops.variable": name}})
            try:
                stats, schema = profile(obj), mlflow_schema(obj)
            except UnsupportedDataError:
                pass  # bytes and the like: the fingerprint is all there is to say
        self.session.emit(
            [
                {
                    "t": "dataset",
                    "run": self.key,
                    "name": name,
                    "digest": digest,
                    "source_type": source_type,
                    "source": source,
                    "schema": schema,
                    "profile": stats,
                    "context": context,
                }
            ]
        )
        state = self._snapshot(obj, digest, name, stats)
        self.session.emit([{"t": "tags", "run": self.key, "tags": {SNAPSHOT_TAG + digest: state}}])

    def _snapshot(self, obj: Any, digest: str, name: str, stats: dict[str, Any] | None) -> str:
        """Store ``obj`` in the snapshot store if it still has ``digest``; the value of its snapshot tag.

        Data over ``snapshot_max_bytes`` is not stored; one line per variable and process says how to store it."""
        from nbmlops.data.snapshots import SnapshotError, StaleFingerprintError, UnsupportedSnapshotError
        from nbmlops.tracking.artifact_snapshots import open_snapshot_store

        limit = self.settings.snapshot_max_bytes
        if limit == 0:
            return "not snapshotted: snapshot_max_bytes is 0"
        store = open_snapshot_store(self.settings, remote=not self.session.handoff)
        try:
            snapshot = store.save(obj, limit, digest=digest, profile=stats)
        except StaleFingerprintError as exc:
            changed = "the file changed or is gone" if isinstance(obj, os.PathLike) else "changed in place"
            return f"not snapshotted: {changed} after it was fingerprinted (now {exc.actual or 'unreadable'})"
        except UnsupportedSnapshotError as exc:
            return f"not snapshotted: {exc.reason}"[:1000]
        except (SnapshotError, OSError, TypeError, ValueError) as exc:  # a full disk, an odd object
            return f"not snapshotted: {type(exc).__name__}: {exc}"[:1000]
        if snapshot is None:
            shown = f"{limit / 2**20:,.0f} MiB" if limit >= 2**20 else f"{limit:,} bytes"
            note = (f"larger than snapshot_max_bytes ({shown}): fingerprinted and profiled only; to snapshot it, "
                    "raise the limit (%nbmlops config snapshot_max_bytes=2GiB, or NBMLOPS_SNAPSHOT_MAX_BYTES)")
            if name not in _too_large:
                _too_large.add(name)
                sys.stderr.write(f"nbmlops: {name} not snapshotted: {note}\n")
            return f"not snapshotted: {note}"
        if store.remote is not None:
            try:
                store.push(digest)
            except (SnapshotError, OSError) as exc:
                if str(store.remote) not in _unshared:  # once per process, not once per dataset
                    _unshared.add(str(store.remote))
                    sys.stderr.write(f"nbmlops: data snapshots stay in {store.root}, not shared: {exc}\n")
        return STORED


def snapshot_state(tags: Mapping[str, str], digest: str) -> str | None:
    """Whether the data with fingerprint ``digest`` that a run logged was snapshotted, from the run's tags.

    ``"stored"`` (load it with ``SnapshotStore().load(digest)``), ``"not snapshotted: <reason>"``,
    or None when the run says nothing (logged before snapshots existed, or still being captured).
    """
    return tags.get(SNAPSHOT_TAG + digest)


def end_for(run: Run, exc: BaseException | None) -> None:
    """End ``run`` according to how its body ended: FINISHED, KILLED (interrupt) or FAILED."""
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        run.end("FINISHED")
    elif isinstance(exc, KeyboardInterrupt):
        run.end("KILLED", error=exc)
    else:
        run.end("FAILED", error=exc)


def _user(tracking_uri: str) -> str:
    """``mlflow.user`` as MLflow records it: the user name the credentials for a tracking server give (the one
    an authenticating server knows them as), else the OS user. Asks no one: a run starts at once."""
    claimed = claimed_user(tracking_uri)
    if claimed:
        return claimed
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _artifact_name(key: str) -> str:
    """A param key as a file name: path separators and other odd characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", key)[:200] or "_"


_non_finite_warned: set[str] = set()  # metric names already warned about being inf or NaN


def _metric_value(key: str, value: Any) -> float:
    """``value`` as a float for MLflow, which stores infinities as the largest float; an inf or NaN
    metric is logged, with one warning per metric name (gates treat such a metric as failed)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TrackingError(f"metric {key!r} must be a number, got {type(value).__name__} {value!r:.80}") from None
    if not math.isfinite(number) and key not in _non_finite_warned:
        _non_finite_warned.add(key)
        sys.stderr.write(
            f"nbmlops: metric {key!r} is {number}: it is logged (MLflow stores an infinity as the largest float), "
            "but it fails every gate and cannot be compared\n"
        )
    if math.isinf(number):
        number = math.copysign(sys.float_info.max, number)
    return number


def log_metrics_here(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics on the active run; in a notebook run by ``nbmlops run`` with no run active, on the
    notebook's own run (through its outputs); anywhere else, a :class:`TrackingError`."""
    with _stack_lock:
        run = _stack[-1] if _stack else None
    if run is not None:
        run.log_metrics(metrics, step=step)
        return
    if os.environ.get(PARENT_ENV) and "IPython" in sys.modules:
        from IPython import get_ipython

        if get_ipython() is not None:
            from nbmlops.tracking.scraps import publish_metrics

            publish_metrics({k: _metric_value(k, v) for k, v in metrics.items()}, step)
            return
    active_run()  # raises, saying how to start a run


def active_run() -> Run:
    """The innermost run in progress, or a :class:`TrackingError` saying how to start one."""
    with _stack_lock:
        if _stack:
            return _stack[-1]
    raise TrackingError("no run is active: use `with nbmlops.track():` or a `%%track` cell")


def track(
    name: str | None = None,
    *,
    experiment: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Run:
    """A new run, to use as a context manager: ``with nbmlops.track("train") as run: ...``.

    Args:
        name: the run name shown in MLflow.
        experiment: the experiment; by default the notebook or script path, relative to the project root.
        params: parameters to log at the start.
        tags: tags to set at the start.
    """
    return Run(name, experiment=experiment, params=params, tags=tags)
