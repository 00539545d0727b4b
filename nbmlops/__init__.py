"""nbmlops: every notebook cell execution becomes a complete, crash-safe MLflow run.

In a notebook::

    %load_ext nbmlops

    %%track
    alpha = 0.5                      # a param
    model = Ridge(alpha=alpha).fit(X_train, y_train)
    r2 = model.score(X_test, y_test)  # a metric; X_train, y_train, ... are fingerprinted inputs

In a script::

    with nbmlops.track("train") as run:
        nbmlops.log_param("alpha", 0.5)
        nbmlops.log_metric("r2", 0.91)

Importing this package is cheap: mlflow, pandas and scikit-learn are imported only when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.data.fingerprint import fingerprint
    from nbmlops.registry.promote import promote
    from nbmlops.registry.register import register
    from nbmlops.serving.server import serve
    from nbmlops.tracking.run import Run

#: public functions that live in a heavier module, imported on first use (``import nbmlops`` stays cheap)
_LAZY = {
    "fingerprint": "nbmlops.data.fingerprint",
    "promote": "nbmlops.registry.promote",
    "register": "nbmlops.registry.register",
    "serve": "nbmlops.serving.server",
}


#: subpackages reachable as attributes after a plain ``import nbmlops`` (``nbmlops.data.load(fp)``)
_SUBPACKAGES = ("data",)


def __getattr__(name: str) -> Any:
    if name in _LAZY or name in _SUBPACKAGES:
        import importlib

        module = importlib.import_module(f"nbmlops.{name}" if name in _SUBPACKAGES else _LAZY[name])
        value = module if name in _SUBPACKAGES else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbmlops' has no attribute {name!r}")

def _open_snapshot_store(settings: Any) -> Any:
    from nbmlops.tracking.artifact_snapshots import open_snapshot_store

    return open_snapshot_store(settings)


def _compare_version_predictions(*args: Any, **kwargs: Any) -> Any:
    from nbmlops.registry.predictions import compare_version_predictions

    return compare_version_predictions(*args, **kwargs)


def _read_traffic(*args: Any, **kwargs: Any) -> Any:
    from nbmlops.serving.traffic import read_traffic

    return read_traffic(*args, **kwargs)


def _fill_openers() -> None:
    from nbmlops import openers

    openers.snapshot_store = _open_snapshot_store  # nbmlops.data.load reaches the MLflow artifact store too
    openers.model_predictions = _compare_version_predictions  # reproduce compares the versions it registers
    openers.traffic_reader = _read_traffic  # the registry reads a served model's traffic


_fill_openers()

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "active_run",
    "configure",
    "dashboard",
    "fingerprint",
    "flush",
    "load_ipython_extension",
    "log_dataset",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "promote",
    "register",
    "serve",
    "set_tags",
    "track",
    "unload_ipython_extension",
]


def track(
    name: str | None = None,
    *,
    experiment: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Run:
    """A new run, used as a context manager: ``with nbmlops.track("train") as run: ...``.

    The run is FINISHED when the block completes, FAILED when it raises (the exception propagates
    unchanged), KILLED on KeyboardInterrupt. Inside a ``%%track`` cell it becomes a child run.
    """
    from nbmlops.tracking.run import track as _track

    return _track(name, experiment=experiment, params=params, tags=tags)


def active_run() -> Run:
    """The innermost run in progress (raises :class:`~nbmlops.exceptions.TrackingError` if none)."""
    from nbmlops.tracking.run import active_run as _active_run

    return _active_run()


def log_param(key: str, value: Any) -> None:
    """Log a param on the active run."""
    active_run().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    """Log several params on the active run."""
    active_run().log_params(params)


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Log a metric value on the active run; repeated calls make a series (steps 0, 1, ... by default).

    In a notebook executed by ``nbmlops run``, outside any tracked cell, it goes to the notebook's run.
    """
    log_metrics({key: value}, step=step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log several metric values on the active run (see :func:`log_metric`)."""
    from nbmlops.tracking.run import log_metrics_here

    log_metrics_here(metrics, step)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the active run."""
    active_run().set_tags(tags)


def log_dataset(obj: Any, name: str | None = None, context: str = "input") -> str:
    """Fingerprint ``obj`` and log it as a dataset input of the active run; returns the fingerprint."""
    return active_run().log_dataset(obj, name, context)


def dashboard(experiment: str | None = None, *, page_size: int = 50, live: bool = True) -> Any:
    """An ipywidgets application over the runs and models of ``experiment`` (default: the one this notebook's
    ``%%track`` cells use): filter, sort and page runs, compare them, chart metrics and sweeps, promote models
    through gates; it refreshes while runs are in progress. See :class:`nbmlops.widgets.app.Dashboard`."""
    from nbmlops.widgets import dashboard as _dashboard

    return _dashboard(experiment, page_size=page_size, live=live)


def flush(timeout: float | None = None) -> None:
    """Block until every journaled record has reached the tracking store.

    Raises :class:`~nbmlops.exceptions.FlushTimeoutError` (how many are waiting, and why) after ``timeout`` s.
    """
    from nbmlops.tracking.session import get_session

    get_session().flush(timeout)


def configure(**settings: Any) -> dict[str, Any]:
    """Set settings for this session (``tracking_uri``, ``experiment``, ...); see :mod:`nbmlops.config`."""
    from nbmlops.config import configure as _configure

    return _configure(**settings)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbmlops``: register ``%%track`` and ``%nbmlops``; recover runs of dead kernels."""
    from nbmlops.magics import NbmlopsMagics
    from nbmlops.tracking.session import get_session

    magics = NbmlopsMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    ipython.events.register("post_run_cell", magics.post_run_cell)
    _loaded[id(ipython)] = magics
    get_session()


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbmlops``: undo what loading did."""
    magics = _loaded.pop(id(ipython), None)
    if magics is not None:
        ipython.events.unregister("pre_run_cell", magics.pre_run_cell)
        ipython.events.unregister("post_run_cell", magics.post_run_cell)
        for kind in ("cell", "line"):
            ipython.magics_manager.magics[kind].pop("track" if kind == "cell" else "nbmlops", None)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt lab extension (built from ``labextension/`` into this package)."""
    return [{"src": "labextension", "dest": "nbmlops"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where jupyter_server finds the extension that serves ``/nbmlops/api/`` (see :mod:`nbmlops.server`)."""
    return [{"module": "nbmlops.server"}]


_loaded: dict[int, Any] = {}
