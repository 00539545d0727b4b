"""Settings, and the one rule that decides where each comes from.

Precedence, highest first (the same for every setting):

1. arguments of the call or magic (``nbmlops.track(experiment=...)``, ``%%track --experiment``);
2. this session's settings (``%nbmlops config key=value`` or ``nbmlops.configure(key=value)``);
3. the environment: ``NBMLOPS_<KEY>`` (for the tracking URI, ``NBMLOPS_TRACKING_URI`` and then
   ``MLFLOW_TRACKING_URI``);
4. the ``[tool.nbmlops]`` table of the project's ``pyproject.toml``;
5. the built-in default: the embedded store ``sqlite:///<root>/.nbmlops/mlflow.db`` with artifacts in
   ``<root>/.nbmlops/artifacts``.

``<root>`` is the nearest ancestor of the working directory holding ``.nbmlops/``, ``.git`` or
``pyproject.toml`` (else the working directory itself).

Data snapshots: ``snapshot_max_bytes`` (``NBMLOPS_SNAPSHOT_MAX_BYTES``, ``snapshot-max-bytes`` in
``pyproject.toml``) is the largest object, by its size in memory (a file: on disk), that tracking
snapshots; a size such as ``500MB`` or ``2GiB``, ``0`` for fingerprints only. The default, ``256MiB``,
keeps the background work of a tracked cell to a few seconds and a new Parquet copy per changed
version of the data to at most about that size; a larger object is fingerprinted and profiled only
(its snapshot tag says so, and how to raise the limit).
``data_store`` says where snapshots live: ``local`` (``<root>/.nbmlops/data``), ``mlflow`` (there
too, and shared through the MLflow artifact store: the default when the tracking URI is a server,
``http(s)://``), or a folder (relative to the root), say a shared drive.

Budget: ``call_timeout`` (``NBMLOPS_CALL_TIMEOUT``, ``call-timeout`` in ``pyproject.toml``) is the
longest nbmlops waits for the tracking store to answer one call, retries of a failed call included
(seconds, default 10): a server that does not answer within it is an outage (the records wait in the
journal), and ``nbmlops sync`` and ``%nbmlops status`` end within about one budget however the server
misbehaves. An upload that keeps making progress may take longer; a local sqlite store waits on another
local process's lock for up to a minute (progress, not an outage).

MLflow UI: ``ui_url`` is where run links point. By default: a tracking server's own UI; in a process started by
Jupyter Server with the nbmlops extension (a kernel, a terminal, a headless run), for the local store that server
serves, ``<base_url>mlflow/`` (origin-relative: the same Jupyter behind its login, JupyterHub's ``/user/NAME/``
included); elsewhere ``http://127.0.0.1:5000``, where ``nbmlops ui`` serves it.

Models: ``trusted_models`` (``NBMLOPS_TRUSTED_MODELS="a,b"``, a list in ``pyproject.toml``) names the
registered models nbmlops may load although they use pickle, types outside its skops trust list, or have no
recorded SHA-256 (see :mod:`nbmlops.registry.safe_load`); default none.

Heartbeat: a process beats for its open runs every ``heartbeat_interval`` seconds (default 60); ``nbmlops runs
reap`` and a new session fail a RUNNING run of any host whose last beat is older than ``heartbeat_timeout``
seconds (default 600: keep it well above the interval, and above how long a machine may lose the store).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nbmlops.exceptions import ConfigError
from nbmlops.redact import strip_userinfo

__all__ = ["SETTING_NAMES", "Settings", "configure", "find_root", "git_remote", "project_name", "resolve_settings", "session_settings"]

ROOT_MARKERS = (".nbmlops", ".git", "pyproject.toml")
CAPTURE_KINDS = ("params", "metrics", "data", "code", "git", "environment", "figures")
#: every setting, in the order ``nbmlops config`` shows them
SETTING_NAMES = (
    "tracking_uri",
    "artifact_root",
    "experiment",
    "ui_url",
    "flush_timeout",
    "call_timeout",
    "capture",
    "snapshot_max_bytes",
    "data_store",
    "trusted_models",
    "heartbeat_interval",
    "heartbeat_timeout",
)
#: set by the nbmlops server extension for the processes Jupyter Server starts (kernels, terminals, headless runs):
#: the origin-relative address (``<base_url>mlflow/``) at which it serves the MLflow UI of the store named by
#: :data:`SERVED_UI_STORE_VARIABLE`; ``ui_url``'s default for that store (see :mod:`nbmlops.server.ui_proxy`)
SERVED_UI_URL_VARIABLE = "NBMLOPS_SERVED_UI_URL"
SERVED_UI_STORE_VARIABLE = "NBMLOPS_SERVED_UI_STORE"
DEFAULT_SNAPSHOT_MAX_BYTES = 256 << 20  # 256 MiB: see the module docstring
#: seconds nbmlops waits for the tracking store to answer one call (``call_timeout``)
DEFAULT_CALL_TIMEOUT = 10.0
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}

_session: dict[str, Any] = {}
_session_lock = threading.Lock()


@dataclass(frozen=True)
class Settings:
    """Resolved settings. ``sources`` says where each value came from."""

    root: Path
    tracking_uri: str
    artifact_root: str | None
    experiment: str | None
    ui_url: str
    flush_timeout: float
    capture: tuple[str, ...]
    snapshot_max_bytes: int
    data_store: str
    trusted_models: tuple[str, ...] = ()
    heartbeat_interval: float = 60.0
    heartbeat_timeout: float = 600.0
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def state_dir(self) -> Path:
        """The ``.nbmlops`` folder under the root: journal, locks, embedded store."""
        return self.root / ".nbmlops"

    @property
    def journal_dir(self) -> Path:
        """Where the append-only journals live."""
        return self.state_dir / "journal"

    @property
    def data_dir(self) -> Path:
        """The folder of data snapshots: ``.nbmlops/data``, or the folder ``data_store`` names."""
        if self.data_store in ("local", "mlflow"):
            return self.state_dir / "data"
        return self.root / Path(self.data_store).expanduser()

    @property
    def is_embedded(self) -> bool:
        """True when the tracking URI is the default embedded sqlite store."""
        return self.sources.get("tracking_uri") == "default"


def find_root(start: Path | None = None) -> Path:
    """The nearest ancestor of ``start`` (default: cwd) holding a root marker, else ``start``.

    Cached per directory for the life of the process (stat calls add up on every tracked cell).
    """
    return _find_root(str(start) if start is not None else os.getcwd())


@functools.lru_cache(maxsize=64)
def _find_root(start: str) -> Path:
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
    return here


@functools.lru_cache(maxsize=64)
def project_name(root: Path) -> str:
    """The project's name, which default experiment names start with: the repository name of the git remote
    (``origin``, else the first) when ``root`` is in a git repository that has one, so that every clone shares its
    experiments whatever its folder is called, followed by the root's path in the repository when the root is
    below its top (``monorepo/churn``); else the name of the root folder."""
    remote = git_remote(root)
    if remote is not None:
        top, url = remote
        name = re.sub(r"\.git$", "", url.rstrip("/").replace(":", "/").rsplit("/", 1)[-1])
        if name:
            below = root.resolve().relative_to(top.resolve()).as_posix()
            return name if below == "." else f"{name}/{below}"
    return root.name or "project"


def git_remote(start: Path) -> tuple[Path, str] | None:
    """``(folder holding .git, URL of its remote origin, else of its first remote)`` of the nearest git repository
    at or above ``start``, read from the repository's config file (no git process); None without one."""
    start = Path(os.path.abspath(start))
    for candidate in (start, *start.parents):
        marker = candidate / ".git"
        if os.path.lexists(marker):
            remotes = _git_remotes(marker)
            url = remotes.get("origin") or next(iter(remotes.values()), None)
            return (candidate, url) if url else None
    return None


def _git_remotes(marker: Path) -> dict[str, str]:
    """``{remote: url}`` read from a repository's config (``marker`` is its ``.git`` folder, or a worktree's
    ``.git`` file naming it); empty when it cannot be read."""
    try:
        if marker.is_file():
            pointer = marker.read_text().strip().removeprefix("gitdir:").strip()
            git_dir = (marker.parent / pointer).resolve()
            common = git_dir / "commondir"  # a worktree's config is its main repository's
            marker = (git_dir / common.read_text().strip()).resolve() if common.is_file() else git_dir
        text = (marker / "config").read_text(errors="replace")
    except OSError:
        return {}
    remotes: dict[str, str] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        header = re.fullmatch(r'\[remote\s+"([^"]+)"\]', line)
        if header or line.startswith("["):
            section = header.group(1) if header else None
        elif section is not None and re.match(r"url\s*=", line):
            remotes.setdefault(section, line.split("=", 1)[1].strip())
    return remotes


def configure(**values: Any) -> dict[str, Any]:
    """Set this session's settings (precedence level 2); ``None`` removes one. Returns them all."""
    known = {f.name for f in fields(Settings)} - {"root", "sources"}
    for key in values:
        if key not in known:
            raise ConfigError(key, f"unknown setting; known: {', '.join(sorted(known))}", "configure()")
    with _session_lock:
        for key, value in values.items():
            if value is None:
                _session.pop(key, None)
            else:
                _session[key] = _convert(key, value, "configure()")
        return dict(_session)


def session_settings() -> dict[str, Any]:
    """A copy of the settings made in this session with :func:`configure`."""
    with _session_lock:
        return dict(_session)


def resolve_settings(root: Path | None = None, **overrides: Any) -> Settings:
    """Resolve every setting by the precedence rule; ``overrides`` are level 1 (``None`` = unset)."""
    root = find_root(root)
    project = _read_pyproject(root)
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("argument", {k: v for k, v in overrides.items() if v is not None}),
        ("session", session_settings()),
        ("environment", _read_environment()),
        (f"{root / 'pyproject.toml'} [tool.nbmlops]", project),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in SETTING_NAMES:
        for source, layer in layers:
            if name in layer:
                values[name] = _convert(name, layer[name], source)
                sources[name] = source
                break
    state = root / ".nbmlops"
    if "tracking_uri" not in values:
        values["tracking_uri"] = f"sqlite:///{state / 'mlflow.db'}"
        sources["tracking_uri"] = "default"
    if "artifact_root" not in values:
        local = values["tracking_uri"].split(":", 1)[0] in ("sqlite", "file")
        values["artifact_root"] = str(state / "artifacts") if local else None
        sources["artifact_root"] = "default"
    if "ui_url" not in values:
        values["ui_url"], sources["ui_url"] = _default_ui_url(values["tracking_uri"])
    values.setdefault("experiment", None)
    values.setdefault("flush_timeout", 10.0)
    values.setdefault("call_timeout", DEFAULT_CALL_TIMEOUT)
    values.setdefault("capture", CAPTURE_KINDS)
    values.setdefault("snapshot_max_bytes", DEFAULT_SNAPSHOT_MAX_BYTES)
    if "data_store" not in values:
        values["data_store"] = "mlflow" if values["tracking_uri"].startswith(("http://", "https://")) else "local"
        sources["data_store"] = "default"
    return Settings(root=root, sources=sources, **values)


def _default_ui_url(tracking_uri: str) -> tuple[str, str]:
    """``(ui_url, its source)`` when no setting names one: a tracking server's own UI; for the local store that the
    Jupyter Server this process was started by serves at ``<base_url>mlflow/`` (it says so in
    :data:`SERVED_UI_URL_VARIABLE` and :data:`SERVED_UI_STORE_VARIABLE`), that address; else ``nbmlops ui``'s."""
    if tracking_uri.startswith(("http://", "https://")):
        return strip_userinfo(tracking_uri), "default"
    served = os.environ.get(SERVED_UI_URL_VARIABLE)
    if served and os.environ.get(SERVED_UI_STORE_VARIABLE) == tracking_uri:
        return served, "default: the MLflow UI Jupyter Server serves"
    return "http://127.0.0.1:5000", "default"


def _read_environment() -> dict[str, str]:
    env = {}
    for name in SETTING_NAMES:
        value = os.environ.get(f"NBMLOPS_{name.upper()}")
        if value:
            env[name] = value
    if "tracking_uri" not in env and os.environ.get("MLFLOW_TRACKING_URI"):
        env["tracking_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    return env


def _read_pyproject(root: Path) -> dict[str, Any]:
    path = root / "pyproject.toml"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    return dict(_parse_pyproject(path, stamp))


@functools.lru_cache(maxsize=8)
def _parse_pyproject(path: Path, stamp: int) -> dict[str, Any]:
    """The ``[tool.nbmlops]`` table; cached while the file's modification time stays the same."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with path.open("rb") as fh:
            table = tomllib.load(fh).get("tool", {}).get("nbmlops", {})
    except (OSError, ValueError) as exc:
        raise ConfigError("pyproject.toml", f"cannot read [tool.nbmlops]: {exc}", str(path)) from exc
    return {key.replace("-", "_"): value for key, value in table.items()}


def _convert(key: str, value: Any, source: str) -> Any:
    """Check and convert one raw value, naming the setting and its source on error."""
    if key in ("tracking_uri", "artifact_root", "experiment", "ui_url"):
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise ConfigError(key, f"expected a non-empty string, got {value!r}", source)
        text = str(value).strip()
        if key == "tracking_uri" and "://" not in text and not text.startswith("databricks"):
            text = Path(text).expanduser().resolve().as_uri()
        return text
    if key in ("flush_timeout", "call_timeout", "heartbeat_interval", "heartbeat_timeout"):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number of seconds, got {value!r}", source) from None
        if seconds < 0:
            raise ConfigError(key, f"must be >= 0, got {seconds}", source)
        if key != "flush_timeout" and not 0 < seconds < float("inf"):
            raise ConfigError(key, f"must be a finite number of seconds > 0, got {seconds}", source)
        return seconds
    if key == "capture":
        kinds = [k.strip() for k in value.split(",")] if isinstance(value, str) else list(value)
        kinds = [k for k in kinds if k]
        if kinds == ["none"]:
            return ()
        if kinds == ["all"]:
            return CAPTURE_KINDS
        bad = [k for k in kinds if k not in CAPTURE_KINDS]
        if bad:
            raise ConfigError(
                key, f"unknown capture kind(s) {bad}; choose from {', '.join(CAPTURE_KINDS)}, all, none", source
            )
        return tuple(kinds)
    if key == "snapshot_max_bytes":
        return _size(key, value, source)
    if key == "trusted_models":
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ConfigError(key, f"expected registered model names, got {value!r}", source)
        return tuple(n.strip() for n in names if n.strip())
    if key == "data_store":
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise ConfigError(key, f"expected local, mlflow or a folder, got {value!r}", source)
        text = str(value).strip()
        return text.lower() if text.lower() in ("local", "mlflow") else text
    raise ConfigError(key, "unknown setting", source)


def _size(key: str, value: Any, source: str) -> int:
    """A number of bytes from an int or a text such as ``500MB``, ``1GiB`` or ``0``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(
            key, f"expected a size such as 500MB, 1GiB or 0 (fingerprints only), got {value!r}", source
        )
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
