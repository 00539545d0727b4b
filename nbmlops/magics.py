"""``%%track`` and ``%nbmlops``: parse options, call the core, show the result."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from nbmlops.config import CAPTURE_KINDS, SETTING_NAMES, configure, resolve_settings
from nbmlops.exceptions import NbmlopsError
from nbmlops.tracking.cell import CellContext, CellOptions, TrackedCell
from nbmlops.tracking.run import cell_id_in_notebook, notebook_experiment, notebook_path
from nbmlops.tracking.session import get_session
from nbmlops.tracking.summary import Summary, run_url

__all__ = ["NbmlopsMagics"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@magics_class
class NbmlopsMagics(Magics):
    """The nbmlops magics; one instance per shell."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._cell_id: str | None = None
        self._raised: set[int] = set()
        self._headless_ids: set[str] = set()

    def pre_run_cell(self, info: Any) -> None:
        """Remember the id the frontend gave the cell about to run; a headless run's kernel gets none
        (nbclient sends no cell id), so it is found in the notebook being run, by the cell's source."""
        self._cell_id = getattr(info, "cell_id", None)
        notebook = os.environ.get("NBMLOPS_NOTEBOOK")
        if self._cell_id is None and notebook:
            self._cell_id = cell_id_in_notebook(notebook, getattr(info, "raw_cell", "") or "", self._headless_ids)
            if self._cell_id:
                self._headless_ids.add(self._cell_id)

    def post_run_cell(self, result: Any) -> None:
        """Remember which cells of the history raised, so a replay of it knows."""
        if not result.success and result.execution_count is not None:
            self._raised.add(result.execution_count)

    @magic_arguments()
    @argument("-n", "--name", help="Run name shown in MLflow (default: 'cell <execution count>').")
    @argument(
        "-e", "--experiment", help="MLflow experiment (default: <project>/<the notebook's path relative to the project root>)."
    )
    @argument("--params", nargs="+", default=[], metavar="VAR", help="Variables to log as params after the cell.")
    @argument("--metrics", nargs="+", default=[], metavar="VAR", help="Variables to log as metrics after the cell.")
    @argument(
        "--data",
        nargs="+",
        default=[],
        metavar="VAR",
        help="Variables to fingerprint and log as datasets (inputs if they exist before the cell, else outputs).",
    )
    @argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="A tag for the run; repeatable.")
    @argument(
        "--register",
        nargs=2,
        metavar=("VAR", "NAME"),
        help=(
            "After the cell succeeds, register the model in VAR as a new version of NAME in the MLflow registry "
            "(the MLflow flavor of its library: scikit-learn, XGBoost, LightGBM, CatBoost, statsmodels or pyfunc, in a format "
            "that loads without running code where the library has one; signature from its training data; lineage as tags)."
        ),
    )
    @argument(
        "--no-capture",
        nargs="*",
        default=None,
        metavar="KIND",
        help=(
            "Turn off automatic capture: alone, everything automatic; or some of "
            f"{', '.join(CAPTURE_KINDS)}. Named --params/--metrics/--data are still logged."
        ),
    )
    @no_var_expand
    @cell_magic
    def track(self, line: str, cell: str) -> Any:
        """Run the cell as one MLflow run.

        Records literal assignments as params, numbers the cell computes as metrics, the pandas and
        numpy data it reads (full-content fingerprint and profile), its code and the kernel history,
        git state, environment and matplotlib figures. The run is FINISHED when the cell completes,
        FAILED when it raises (the exception is re-raised unchanged), KILLED on interrupt. A summary
        with a link to the MLflow UI is shown after the cell.
        """
        __tracebackhide__ = True
        options = _parse_track_options(line)
        shell = self.shell
        assert shell is not None  # a magic runs in a shell
        code = shell.transform_cell(cell)
        tree = shell.transform_ast(shell.compile.ast_parse(code))
        context = CellContext(
            notebook=notebook_path(shell.user_ns),
            cell_id=self._cell_id,
            execution_count=shell.execution_count,
            history=list(shell.history_manager.input_hist_raw) if shell.history_manager else [],
            raised=frozenset(self._raised),
        )
        with get_session().hold():  # capture work waits until the cell is done: no GIL contention
            cell_run = TrackedCell(cell, tree, shell.user_ns, options, context)
            tracked: TrackedCell | None = cell_run
            try:
                cell_run.start()
            except Exception as exc:  # tracking must never stop the user's cell from running
                _warn(f"this cell runs untracked: {type(exc).__name__}: {exc}")
                tracked = None
            error: BaseException | None = None
            try:
                return _execute(shell, tree, code, cell)
            except BaseException as exc:
                error = exc
                raise
            finally:
                if tracked is not None:
                    try:
                        self._show(tracked.finish(error), tracked)
                    except Exception as exc:
                        _warn(f"recording the end of this cell failed: {type(exc).__name__}: {exc}")

    def _show(self, summary: Summary, tracked: TrackedCell) -> None:
        """Display the summary as plain HTML (and text), and update it in place once the run is in the store:
        its link, and the previous run's values when this kernel had none."""
        handle = display(summary.mimebundle(), raw=True, display_id=True)
        if handle is None or self.shell is None or not getattr(self.shell, "kernel", None):
            return
        ui_url = tracked.settings.ui_url
        publisher = self.shell.display_pub
        cell = getattr(publisher, "parent_header", None)  # the request of the cell that shows the summary

        def update(run_id: str, experiment_id: str) -> None:
            summary.url = run_url(ui_url, experiment_id, run_id)
            if summary.previous is None:
                try:
                    found = tracked.previous_from_store(run_id, experiment_id)
                except Exception:
                    found = None
                if found is not None:
                    summary.previous, summary.previous_params = found
            with _replying_to(publisher, cell):
                handle.update(summary.mimebundle(), raw=True)

        assert tracked.run is not None
        get_session().on_run_created(tracked.run.key, update)

    @line_magic
    def nbmlops(self, line: str) -> Any:
        """nbmlops session commands.

        %nbmlops config               show every setting and where it came from
        %nbmlops config KEY=VALUE ... set settings for this session (KEY=  removes one)
        %nbmlops status               does the store answer (within call_timeout), the last delivery, records waiting
        %nbmlops flush [SECONDS]      wait until every record has reached the store
        %nbmlops dashboard [EXPERIMENT]  runs, comparisons, charts and models (default: this notebook's)
        """
        words = shlex.split(line)
        command, args = (words[0], words[1:]) if words else ("status", [])
        try:
            if command == "config":
                return _config(args)
            if command == "status":
                return _status()
            if command == "flush":
                get_session().flush(float(args[0]) if args else None)
                return None
            if command == "dashboard":
                if len(args) > 1:
                    raise UsageError("%nbmlops dashboard [EXPERIMENT]: one experiment at most (quote a name with spaces)")
                from nbmlops.widgets import dashboard

                return dashboard(args[0] if args else notebook_experiment(self.shell))
        except (NbmlopsError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        raise UsageError(f"unknown %nbmlops command {command!r}; try: config, status, flush, dashboard")


@contextlib.contextmanager
def _replying_to(publisher: Any, parent: Any) -> Iterator[None]:
    """Within the block, this thread's displays answer the request ``parent`` (the cell that showed the summary):
    JupyterLab and Notebook 7 apply a display update only in the output area of the request it answers, and a
    delivery thread would otherwise send it as an answer to whatever cell runs at that moment."""
    if not parent or not hasattr(publisher, "set_thread_parent"):
        yield
        return
    token = publisher.set_thread_parent(parent)
    try:
        yield
    finally:
        publisher.reset_thread_parent(token)


def _warn(message: str) -> None:
    sys.stderr.write(f"nbmlops: {message}\n")


def _status() -> None:
    """Print whether the store answers now (asked within the ``call_timeout`` budget, however it misbehaves),
    how the last delivery went, and how many records wait (the count ``nbmlops.flush()`` reports)."""
    from nbmlops.backend.delivery_process import delivery_process
    from nbmlops.backend.store import open_store
    from nbmlops.redact import redact_uri

    session = get_session()
    settings = resolve_settings()
    problem = open_store(settings.tracking_uri, settings.artifact_root).check()
    print(f"tracking store:  {redact_uri(settings.tracking_uri)} ({problem or 'answers'})")
    print(f"last delivery:   {_last_delivery(session, problem)}")
    capturing = session.capturing
    print(f"waiting records: {session.pending}" + (f" (and {capturing} capture task(s) still running)" if capturing else ""))
    child = delivery_process().pid
    where = f"delivery process {child}" if child else "a delivery process (started with the first run)"
    print(f"delivered by:    {'the runner (headless run)' if session.handoff else 'this process' if session.delivers_here else where}")


def _last_delivery(session: Any, problem: str | None) -> str:
    """How this session's last delivery went, never "ok" alone while the store does not answer."""
    writer = session.writer
    if writer is None:
        return "none: records are handed to the runner" if session.handoff else "none yet"
    if writer.last_error is not None:
        return f"failed at {_clock(writer.failed_at)}: {writer.last_error}"
    waiting = "; records wait in the journal until it answers" if session.pending else ""
    if writer.delivered_at is None:
        return "none yet" + (f" (the store does not answer{waiting})" if problem else "")
    return f"ok at {_clock(writer.delivered_at)}" + (f", before the store stopped answering{waiting}" if problem else "")


def _clock(when: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) if when is not None else "?"


def _config(args: list[str]) -> None:
    updates: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise UsageError(f"%nbmlops config {arg}: expected KEY=VALUE")
        updates[key.strip().replace("-", "_")] = value.strip() or None
    if updates:
        configure(**updates)
    settings = resolve_settings()
    for key in SETTING_NAMES:
        value = getattr(settings, key)
        shown = ",".join(value) if isinstance(value, tuple) else value
        print(f"{key:18} = {shown}  ({settings.sources.get(key, 'default')})")


def _parse_track_options(line: str) -> CellOptions:
    """Parse and check ``%%track`` options; any problem is a UsageError naming the option."""
    args = parse_argstring(NbmlopsMagics.track, line)
    tags: dict[str, str] = {}
    for item in args.tag:
        key, sep, value = (_unquote(item) or "").partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item}: expected KEY=VALUE")
        tags[key.strip()] = _unquote(value) or ""
    for option in ("params", "metrics", "data"):
        bad = [name for name in getattr(args, option) if not _IDENTIFIER.match(name)]
        if bad:
            raise UsageError(f"--{option}: not variable names: {', '.join(bad)}")
    register = None
    if args.register:
        variable, model_name = args.register[0], _unquote(args.register[1]) or ""
        if not _IDENTIFIER.match(variable):
            raise UsageError(f"--register {variable}: not a variable name")
        from nbmlops.registry.models import ModelReferenceError, check_model_name

        try:
            check_model_name(model_name)
        except ModelReferenceError as exc:
            raise UsageError(f"--register: {exc}") from None
        register = (variable, model_name)
    if args.no_capture is None:
        no_capture: frozenset[str] = frozenset()
    else:
        unknown = [k for k in args.no_capture if k not in CAPTURE_KINDS]
        if unknown:
            raise UsageError(f"--no-capture: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(CAPTURE_KINDS)}")
        no_capture = frozenset(args.no_capture or CAPTURE_KINDS)
    return CellOptions(
        name=_unquote(args.name),
        experiment=_unquote(args.experiment),
        params=args.params,
        metrics=args.metrics,
        data=args.data,
        tags=tags,
        no_capture=no_capture,
        register=register,
    )


def _unquote(value: str | None) -> str | None:
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _execute(shell: Any, tree: ast.Module, code: str, raw: str) -> Any:
    """Run the cell body in the user namespace as IPython would; return the last expression's value."""
    __tracebackhide__ = True
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        tree = ast.Module(body=tree.body[:-1], type_ignores=[])
    filename = shell.compile.cache(code, shell.execution_count, raw_code=raw)
    exec(shell.compile(tree, filename, "exec"), shell.user_ns)
    if last is None:
        return None
    value = eval(shell.compile(last, filename, "eval"), shell.user_ns)
    return None if code.rstrip().endswith(";") else value
