"""The dashboard application: ipywidgets wiring over the plain views (runs, compare, charts, models,
deployments, live).

Every handler is a method that reads its widgets, calls a view, and shows the result or the error; a test
calls it directly, or clicks the button (``Button.click()``) that calls it. The views do the work.

What opening the dashboard waits for is the first page: the count of runs and the runs table of the first page
(and the error line). The rest loads after it on a background thread (``nbmlops-dashboard-load``): the header,
the tabs and the runs tab's controls (the table and the count move into the Runs tab), the experiment list, the
cell list (the cell dropdown shows "any cell" until then) and the first live poll; it starts once the first page
is handed to the display. A control used before the thread built it is built at once on the caller's thread;
:meth:`Dashboard.wait_loaded` waits for all of it. The Charts tab shows a loading line until it is first opened,
then draws; the Models tab is built when first opened; the Deployments tab reads the model servers each time it
is opened (and on its Refresh).

The runs table (:class:`~nbmlops.widgets.runs_table.RunsTable`) has a checkbox per row (the selection), a toggle
per parent run (its nested runs) and the run names, which open the run's details (a metric series as a curve)
below the table. Charts are plotly's JSON in ``Output`` widgets (see :mod:`~nbmlops.widgets.figures`).

DOM hooks (CSS classes) for browser tests. Widgets: ``nbmlops-dashboard`` (the app), ``nbmlops-experiment``,
``nbmlops-refresh``, ``nbmlops-live`` (``2 running; ...``), ``nbmlops-progress`` (a sweep's finished/size);
runs: ``nbmlops-status``, ``nbmlops-cell``, ``nbmlops-filter`` (the metric expression), ``nbmlops-apply``,
``nbmlops-error``, ``nbmlops-sort``, ``nbmlops-descending``, ``nbmlops-prev``, ``nbmlops-page``,
``nbmlops-next``, ``nbmlops-count`` (``12 runs``: the filtered count), ``nbmlops-columns`` (the column chooser),
``nbmlops-default-columns``, ``nbmlops-runs`` (the table), ``nbmlops-selection`` (``2 selected``), ``nbmlops-compare-button``,
``nbmlops-clear``, ``nbmlops-details``; compare: ``nbmlops-only-differences``, ``nbmlops-compare``; charts:
``nbmlops-metric``, ``nbmlops-chart-mode``, ``nbmlops-chart-message`` (loading, or why there is no chart),
``nbmlops-chart`` (the plotly outputs, with ``nbmlops-chart-metric`` and ``nbmlops-chart-sweep``),
``nbmlops-sweep``, ``nbmlops-sweep-message``; models: ``nbmlops-models``, ``nbmlops-model``,
``nbmlops-versions``, ``nbmlops-version``, ``nbmlops-alias``, ``nbmlops-gates``, ``nbmlops-beat``,
``nbmlops-allow-new-data``, ``nbmlops-promote``, ``nbmlops-confirmation``, ``nbmlops-confirm``,
``nbmlops-cancel``, ``nbmlops-outcome``; deployments: ``nbmlops-deployments`` (built when the tab is first
opened), ``nbmlops-deployments-refresh``. Inside the HTML: ``table.nbmlops-runs-table`` with a
``tr[data-run-id]`` per run (``input[data-select]``, ``button[data-toggle]``, ``[data-detail]``),
``table.nbmlops-compare-table`` (rows ``nbmlops-differs``), ``pre.nbmlops-code-diff``
(``nbmlops-add``/``nbmlops-del``), ``.nbmlops-detail`` (``svg.nbmlops-detail-curve``), ``nbmlops-models-table``,
``nbmlops-versions-table``, ``nbmlops-gate-history``, ``table.nbmlops-deployments-table`` (a
``tr[data-run-id][data-state]`` per deployment), ``.nbmlops-loading``, ``.nbmlops-empty``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import ipywidgets as w

from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import NbmlopsError
from nbmlops.tracking import search
from nbmlops.widgets.charts import Chart, ChartsView, Parallel
from nbmlops.widgets.compare import Comparison
from nbmlops.widgets.format import STYLE, esc
from nbmlops.widgets.live import Activity, Live, Ticker
from nbmlops.widgets.models import ModelsView
from nbmlops.widgets.runs import STATUSES, RunsView
from nbmlops.widgets.runs_table import RunsTable

__all__ = ["Dashboard"]

TABS = ("Runs", "Compare", "Charts", "Models", "Deployments")
RUNS, COMPARE, CHARTS, MODELS, DEPLOYMENTS = range(len(TABS))
_HIDDEN = "none"
_SHOW_WAIT_S = 0.1  # how long the loader waits for the dashboard to be displayed before it starts anyway
#: the widgets built after the first page (by the background loader, or on first use)
_CONTROLS = frozenset({
    "experiment_choice", "refresh_button", "live_label", "progress", "tabs", "status_filter", "cell_filter",
    "expression", "apply_button", "sort_column", "sort_descending", "prev_button", "page_label", "next_button",
    "columns_choice", "default_columns_button", "selected_label", "compare_button", "clear_button", "details",
    "only_differences", "compare_view", "metric_choice", "chart_mode", "chart_message", "chart_output",
    "sweep_choice", "sweep_message", "parallel_output", "plotly_warmup",
})
LOADING_CHARTS = (f"{STYLE}<div class='nbmlops-view'><div class='nbmlops-loading'>Loading charts: reading the runs' "
                  "metrics...</div></div>")
NO_METRICS = ("No metrics to plot yet: a number a %%track cell computes, or nbmlops.log_metric(...), becomes one.")
NO_SWEEP = ("No sweep here yet: nbmlops sweep NOTEBOOK --grid C=0.1,1,10 runs one (or nbmlops.track blocks nested "
            "in a %%track cell), and its runs show here as parallel coordinates.")


def _hooked(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


def _error_html(exc: BaseException) -> str:
    return f"{STYLE}<div class='nbmlops-view'><pre class='nbmlops-error'>{esc(exc)}</pre></div>"


def _sentence_html(text: str) -> str:
    return f"{STYLE}<div class='nbmlops-view'><div class='nbmlops-empty'>{esc(text)}</div></div>"


class Dashboard(w.VBox):
    """Runs, comparisons, charts and registered models of an experiment, and the store's model servers, in one
    widget.

    Args:
        experiment: the experiment to show; by default the one this notebook's ``%%track`` cells use.
        settings: where the store is (default: the resolved settings).
        page_size: runs per page.
        live: refresh on a background thread while runs are in progress.
        interval: seconds between live refreshes.

    What loads after the first page (see :meth:`wait_loaded`) and fails to is said in the error line; the table
    stays usable.
    """

    def __init__(
        self,
        experiment: str | None = None,
        *,
        settings: Settings | None = None,
        page_size: int = 50,
        live: bool = True,
        interval: float = 2.0,
    ) -> None:
        self.settings = settings or resolve_settings()
        if experiment is None:
            from nbmlops.tracking.run import notebook_experiment

            experiment = notebook_experiment()
        self.experiment = experiment
        uri = self.settings.tracking_uri
        self.runs = RunsView(uri, search.experiment_ids(uri, [experiment]), page_size, ui_url=self.settings.ui_url)
        self.live = Live(self.runs)
        self.charts = ChartsView(self.runs)
        self.models = ModelsView(self.settings)
        self.comparison: Comparison | None = None
        self.chart: Chart | None = None
        self.parallel: Parallel | None = None
        self.activity: Activity | None = None
        self._lock = threading.RLock()
        self._built = False  # the controls and tabs (see _CONTROLS)
        self._closed = False
        self._loaded = threading.Event()  # set when what loads after the first page is there
        self._shown = threading.Event()  # set when the display has the first page (its mimebundle is made)
        self._local = threading.local()  # ``quiet`` while this thread sets widgets itself
        self._ticker = Ticker(self._tick, interval) if live else None
        self._charts_drawn = False  # the Charts tab has been drawn (it is drawn when first opened)
        self._charts_stale = False  # the filter or experiment changed since the charts were drawn
        self._models_box: w.VBox | None = None
        self._models_html = ""
        self._deployments_html = ""

        # The first page: the count and the runs table (and the error line); nothing else is built before it.
        self.error = _hooked(w.HTML(""), "nbmlops-error")
        self.count_label = _hooked(w.Label(""), "nbmlops-count")
        self.table = _hooked(RunsTable(), "nbmlops-runs")
        self.table.observe(self._on_table_selected, "selected")
        self.table.observe(self._on_table_expanded, "expanded")
        self.table.observe(self._on_table_detail, "detail")
        super().__init__(children=[self.error, self.count_label, self.table])
        self.add_class("nbmlops-dashboard")
        if not self.runs.experiment_ids:
            self.error.value = _error_html(NbmlopsError(f"no experiment named {experiment!r} in the store yet"))
        self._render_runs()
        # The rest (the controls and tabs, the experiment and cell lists, what is running) loads after it.
        self._loader = threading.Thread(target=self._load_rest, name="nbmlops-dashboard-load", daemon=True)
        self._loader.start()

    def __getattr__(self, name: str) -> Any:
        """A control asked for before the background loader built it is built now (or waited for)."""
        if name in _CONTROLS and "_lock" in self.__dict__:
            self._build_controls()
            if name in self.__dict__:
                return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """While the dashboard sets its own widgets, their observers on this thread do nothing."""
        previous = getattr(self._local, "quiet", False)
        self._local.quiet = True
        try:
            yield
        finally:
            self._local.quiet = previous

    def _is_quiet(self) -> bool:
        return getattr(self._local, "quiet", False)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait until what loads after the first page is there (the controls and tabs, the experiment and cell
        lists, the live status); False when ``timeout`` seconds passed first (``0``: is it there now?)."""
        return self._loaded.wait(timeout)

    def _load_rest(self) -> None:
        """Build the controls, fill the experiment and cell lists, poll what is running: after the first page.

        It starts when the display has the first page (so as not to compete with making it), or after
        ``_SHOW_WAIT_S`` when the dashboard is shown some other way (inside another widget) or not at all. The lists
        are read without holding the dashboard's lock, so the controls work while a slow store answers.
        """
        self._shown.wait(_SHOW_WAIT_S)
        try:
            with self._lock:
                if self._closed:
                    return
                self._build_controls()
            experiments = search.experiments(self.runs.tracking_uri)
            with self._lock:
                self._fill_experiments(experiments)
            ids = list(self.runs.experiment_ids)
            cells = search.cells(self.runs.tracking_uri, ids)
            with self._lock:
                self.runs.keep_cells(ids, cells)
                self._fill_cells()
                activity = self._poll() if self._ticker is not None and not self._closed else None
            if activity is not None:
                self._follow(activity)
        except Exception as exc:  # shown, as a failing live refresh is: the table stays usable
            self.error.value = _error_html(NbmlopsError(f"could not load the lists of experiments and cells: "
                                                        f"{type(exc).__name__}: {exc}"))
        finally:
            self._loaded.set()

    # -- building -------------------------------------------------------------------------------------

    def _build_controls(self) -> None:
        """Build the header, the tabs and the runs tab's controls around the first page (once).

        They are made on the side and become attributes together, wired: another thread never sees a half-built
        set (it waits on the lock in ``__getattr__`` instead).
        """
        with self._lock:
            if self._built:
                return
            self._built = True
            c = SimpleNamespace()
            c.experiment_choice = _hooked(w.Dropdown(description="experiment", layout=w.Layout(width="320px")),
                                          "nbmlops-experiment")
            c.refresh_button = _hooked(w.Button(description="Refresh", icon="refresh"), "nbmlops-refresh")
            c.live_label = _hooked(w.Label(""), "nbmlops-live")
            c.progress = _hooked(w.IntProgress(value=0, min=0, max=1, description="sweep",
                                               layout=w.Layout(display=_HIDDEN)), "nbmlops-progress")
            header = w.HBox([c.experiment_choice, c.refresh_button, c.live_label, c.progress])
            c.tabs = w.Tab(children=[self._runs_tab(c), self._compare_tab(c), self._charts_tab(c), w.VBox(),
                                     w.VBox()], titles=TABS)
            c.tabs.observe(self._on_tab, "selected_index")
            found = self.runs.experiment_ids
            with self._quiet():  # this experiment only, until the list of them is loaded
                c.experiment_choice.options = [(self.experiment, found[0])] if found else []
                c.experiment_choice.value = found[0] if found else None
            c.experiment_choice.observe(self._on_experiment, "value")
            c.refresh_button.on_click(lambda _: self.refresh())
            self.__dict__.update(vars(c))
            self._render_runs()
            self.children = [header, self.tabs]

    def _runs_tab(self, c: SimpleNamespace) -> w.VBox:
        c.status_filter = _hooked(
            w.Dropdown(options=[("any status", ""), *((s.lower(), s) for s in STATUSES)], value="",
                       description="status", layout=w.Layout(width="200px")), "nbmlops-status")
        c.cell_filter = _hooked(w.Dropdown(options=[("any cell", "")], value="", description="cell",
                                           layout=w.Layout(width="280px")), "nbmlops-cell")
        c.expression = _hooked(
            w.Text(placeholder="accuracy > 0.9 and loss < 0.3", description="metrics", continuous_update=False,
                   layout=w.Layout(width="340px")), "nbmlops-filter")
        c.apply_button = _hooked(w.Button(description="Apply", button_style="primary"), "nbmlops-apply")
        c.sort_column = _hooked(w.Dropdown(options=["start"], value="start", description="sort by",
                                           layout=w.Layout(width="240px")), "nbmlops-sort")
        c.sort_descending = _hooked(w.ToggleButton(value=True, description="descending"),
                                    "nbmlops-descending")
        c.prev_button = _hooked(w.Button(description="", icon="chevron-left", layout=w.Layout(width="40px")),
                                "nbmlops-prev")
        c.page_label = _hooked(w.Label(""), "nbmlops-page")
        c.next_button = _hooked(w.Button(description="", icon="chevron-right", layout=w.Layout(width="40px")),
                                "nbmlops-next")
        c.columns_choice = _hooked(w.TagsInput(value=[], allowed_tags=[], allow_duplicates=False,
                                               placeholder="add a column: metrics.NAME or params.NAME",
                                               layout=w.Layout(width="100%")), "nbmlops-columns")
        c.default_columns_button = _hooked(w.Button(description="Default columns", icon="columns",
                                                    tooltip="metrics first, then the params you set",
                                                    layout=w.Layout(width="auto", min_width="150px")),
                                           "nbmlops-default-columns")
        c.selected_label = _hooked(w.Label("0 selected"), "nbmlops-selection")
        c.compare_button = _hooked(w.Button(description="Compare selected", disabled=True, icon="columns",
                                            layout=w.Layout(width="auto")),
                                   "nbmlops-compare-button")
        c.clear_button = _hooked(w.Button(description="Clear selection"), "nbmlops-clear")
        c.details = _hooked(w.HTML(""), "nbmlops-details")

        c.expression.observe(self._on_filter_choice, "value")
        c.apply_button.on_click(lambda _: self.apply_filter())
        for dropdown in (c.status_filter, c.cell_filter):
            dropdown.observe(self._on_filter_choice, "value")
        c.sort_column.observe(self._on_sort, "value")
        c.sort_descending.observe(self._on_sort, "value")
        c.prev_button.on_click(lambda _: self.show_page(self.runs.page_number - 1))
        c.next_button.on_click(lambda _: self.show_page(self.runs.page_number + 1))
        c.columns_choice.observe(self._on_columns, "value")
        c.default_columns_button.on_click(lambda _: self.choose_columns(None))
        c.compare_button.on_click(lambda _: self.compare_selected())
        c.clear_button.on_click(lambda _: self.clear_selection())
        return w.VBox([
            w.HBox([c.status_filter, c.cell_filter, c.expression, c.apply_button]),
            self.error,
            w.HBox([c.sort_column, c.sort_descending, c.prev_button, c.page_label, c.next_button,
                    self.count_label]),
            w.HBox([w.Label("columns", layout=w.Layout(width="70px")), c.columns_choice, c.default_columns_button]),
            w.HBox([c.selected_label, c.compare_button, c.clear_button]),
            self.table,
            c.details,
        ])

    def _compare_tab(self, c: SimpleNamespace) -> w.VBox:
        c.only_differences = _hooked(w.Checkbox(value=True, description="only differences", indent=False),
                                     "nbmlops-only-differences")
        c.compare_view = _hooked(
            w.HTML(f"{STYLE}<div class='nbmlops-view nbmlops-muted'>Tick two or more runs in the Runs tab, "
                   "then Compare selected.</div>"), "nbmlops-compare")
        c.only_differences.observe(lambda _: self._show_comparison(), "value")
        return w.VBox([c.only_differences, c.compare_view])

    def _charts_tab(self, c: SimpleNamespace) -> w.VBox:
        """The Charts tab's widgets, with its loading line: it is drawn when first opened."""
        c.metric_choice = _hooked(w.Dropdown(options=[], description="metric"), "nbmlops-metric")
        c.chart_mode = _hooked(w.ToggleButtons(options=[("over runs", "runs"), ("over steps (selected runs)", "steps")],
                                               value="runs"), "nbmlops-chart-mode")
        c.chart_message = _hooked(w.HTML(LOADING_CHARTS), "nbmlops-chart-message")
        c.chart_output = _hooked(_hooked(w.Output(layout=w.Layout(display=_HIDDEN)), "nbmlops-chart"),
                                 "nbmlops-chart-metric")
        c.sweep_choice = _hooked(w.Dropdown(options=[], description="sweep", layout=w.Layout(width="420px",
                                                                                             display=_HIDDEN)),
                                 "nbmlops-sweep")
        c.sweep_message = _hooked(w.HTML(""), "nbmlops-sweep-message")
        c.parallel_output = _hooked(_hooked(w.Output(layout=w.Layout(display=_HIDDEN)), "nbmlops-chart"),
                                    "nbmlops-chart-sweep")
        # an empty figure, never shown, makes the frontend load plotly.js while the person looks at the runs: its
        # first load (5 MB of JavaScript) is most of the time a first chart takes
        from nbmlops.widgets.figures import warmup_output

        c.plotly_warmup = _hooked(w.Output(layout=w.Layout(display=_HIDDEN)), "nbmlops-plotly-warmup")
        c.plotly_warmup.outputs = (warmup_output(),)
        for choice in (c.metric_choice, c.chart_mode, c.sweep_choice):
            choice.observe(self._on_chart_choice, "value")
        return w.VBox([w.HBox([c.metric_choice, c.chart_mode]), c.chart_message, c.chart_output, c.sweep_choice,
                       c.sweep_message, c.parallel_output, c.plotly_warmup])

    def _build_models(self) -> None:
        self.models_table = _hooked(w.HTML(""), "nbmlops-models")
        self.model_choice = _hooked(w.Dropdown(options=[], description="model"), "nbmlops-model")
        self.versions_view = _hooked(w.HTML(""), "nbmlops-versions")
        self.version_choice = _hooked(w.Dropdown(options=[], description="version"), "nbmlops-version")
        self.alias_input = _hooked(w.Text(value="champion", description="alias"), "nbmlops-alias")
        self.gates_input = _hooked(w.Textarea(placeholder="accuracy >= 0.9\n(one gate per line)", description="gates"),
                                   "nbmlops-gates")
        self.beat_input = _hooked(w.Text(placeholder="champion:accuracy", description="beat"), "nbmlops-beat")
        self.allow_new_data = _hooked(w.Checkbox(value=False, description="accept new evaluation data"),
                                      "nbmlops-allow-new-data")
        self.promote_button = _hooked(w.Button(description="Promote...", button_style="warning"), "nbmlops-promote")
        self.confirmation = _hooked(w.HTML(""), "nbmlops-confirmation")
        self.confirm_button = _hooked(w.Button(description="Confirm", button_style="danger",
                                               layout=w.Layout(display=_HIDDEN)), "nbmlops-confirm")
        self.cancel_button = _hooked(w.Button(description="Cancel", layout=w.Layout(display=_HIDDEN)),
                                     "nbmlops-cancel")
        self.outcome = _hooked(w.HTML(""), "nbmlops-outcome")
        self.model_choice.observe(lambda _: self.show_model(), "value")
        self.promote_button.on_click(lambda _: self.request_promotion())
        self.confirm_button.on_click(lambda _: self.confirm_promotion())
        self.cancel_button.on_click(lambda _: self.cancel_promotion())
        self._models_box = self.tabs.children[MODELS]
        self._models_box.children = [
            self.models_table, self.model_choice, self.versions_view,
            w.HBox([self.version_choice, self.alias_input, self.beat_input]),
            w.HBox([self.gates_input, w.VBox([self.allow_new_data, self.promote_button])]),
            self.confirmation, w.HBox([self.confirm_button, self.cancel_button]), self.outcome,
        ]

    # -- runs ----------------------------------------------------------------------------------------

    def apply_filter(self) -> bool:
        """Apply the status, cell and metric expression the widgets hold; a bad one is shown, not raised."""
        with self._lock:
            try:
                self.runs.set_filter(status=self.status_filter.value, cell=self.cell_filter.value,
                                     expression=self.expression.value)
            except (NbmlopsError, ValueError) as exc:
                self.error.value = _error_html(exc)
                return False
            self.error.value = ""
            self._render_runs()
            self._charts_stale = True
            if self.tabs.selected_index == CHARTS:
                self._ensure_tab(CHARTS)
            return True

    def sort(self, column: str, descending: bool = True) -> None:
        """Order the table by ``column`` (as the sort widgets do)."""
        with self._lock:
            with self._quiet():
                if column not in self.sort_column.options:
                    self.sort_column.options = [*self.sort_column.options, column]
                self.sort_column.value, self.sort_descending.value = column, descending
            self._sort_from_widgets()

    def show_page(self, number: int) -> None:
        """Show page ``number`` (0-based, clamped)."""
        with self._lock:
            self.runs.page(number)
            self._render_runs()

    def select(self, *run_ids: str) -> None:
        """Add runs to the selection (as ticking their checkboxes in the table does)."""
        with self._lock:
            self.runs.select(*run_ids)
            self._render_runs()

    def clear_selection(self) -> None:
        with self._lock:
            self.runs.clear_selection()
            self._render_runs()

    def compare_selected(self) -> Comparison | None:
        """Compare the selected runs in the Compare tab, and show it."""
        with self._lock:
            try:
                self.comparison = self.runs.compare()
            except (NbmlopsError, ValueError) as exc:
                self.compare_view.value = _error_html(exc)
                self.comparison = None
            else:
                self._show_comparison()
            self.tabs.selected_index = COMPARE
            return self.comparison

    def _show_comparison(self) -> None:
        with self._lock:
            if self.comparison is not None:
                self.compare_view.value = self.comparison.to_html(only_differences=self.only_differences.value)

    def choose_columns(self, columns: list[str] | None) -> bool:
        """Show these metric and param columns (``metrics.NAME``, ``params.NAME``) in this order; None: the
        defaults (metrics first, then the params the user set). A bad name is shown, not raised."""
        with self._lock:
            try:
                self.runs.choose_columns(columns)
            except (NbmlopsError, ValueError) as exc:
                self.error.value = _error_html(exc)
                return False
            self.error.value = ""
            self._render_runs()
            return True

    def show_details(self, run_id: str) -> str:
        """Show the details of run ``run_id`` below the table (its metric series as curves); ``""`` hides them."""
        from nbmlops.widgets.details import run_details

        with self._lock:
            if not run_id:
                self.details.value = ""
                return ""
            row = next((r for r in self.runs.all_rows() if r.run_id == run_id), None)
            try:
                if row is None:
                    found = search.get_rows(self.runs.tracking_uri, [run_id])
                    if not found:
                        raise NbmlopsError(f"no run {run_id!r} in the store")
                    row = found[0]
                self.details.value = run_details(self.runs.tracking_uri, row, self.runs.ui_url)
            except Exception as exc:  # a store error is shown where the details would be
                self.details.value = _error_html(NbmlopsError(f"could not read run {run_id}: "
                                                              f"{type(exc).__name__}: {exc}"))
            with self._quiet():
                self.table.detail = run_id
            return self.details.value

    def _on_table_selected(self, change: dict[str, Any]) -> None:
        """Rows ticked or unticked in the table."""
        if self._is_quiet():
            return
        with self._lock:
            chosen = set(change["new"])
            try:
                self.runs.deselect(*(run_id for run_id in list(self.runs.selected) if run_id not in chosen))
                self.runs.select(*(run_id for run_id in change["new"] if run_id not in self.runs.selected))
            except NbmlopsError as exc:
                self.error.value = _error_html(exc)
            self._render_runs()

    def _on_table_expanded(self, change: dict[str, Any]) -> None:
        """A parent run's toggle: the table already shows or hides its nested runs; remember it for redraws."""
        if self._is_quiet():
            return
        with self._lock:
            self.runs.expanded = set(change["new"])

    def _on_table_detail(self, change: dict[str, Any]) -> None:
        if not self._is_quiet():
            self.show_details(change["new"])

    def _on_columns(self, change: dict[str, Any]) -> None:
        if not self._is_quiet():
            self.choose_columns(list(change["new"]))

    def _on_filter_choice(self, change: dict[str, Any]) -> None:
        if not self._is_quiet():
            self.apply_filter()

    def _on_sort(self, change: dict[str, Any]) -> None:
        if not self._is_quiet():
            self._sort_from_widgets()

    def _sort_from_widgets(self) -> None:
        with self._lock:
            try:
                self.runs.sort_by(self.sort_column.value, self.sort_descending.value)
            except (NbmlopsError, ValueError) as exc:
                self.error.value = _error_html(exc)
                return
            self.sort_descending.description = "descending" if self.sort_descending.value else "ascending"
            self._render_runs()

    def _on_experiment(self, change: dict[str, Any]) -> None:
        if self._is_quiet() or change["new"] is None:
            return
        with self._lock:
            self.experiment = {eid: name for name, eid in self.experiment_choice.options}[change["new"]]
            self.runs.set_experiments([change["new"]])
            self.error.value = ""
            self.details.value = ""
            self._render_runs()
            self._charts_stale = True
            if self.tabs.selected_index == CHARTS:
                self._ensure_tab(CHARTS)
        self.refresh()

    def _fill_experiments(self, experiments: list[tuple[str, str]]) -> None:
        """Offer ``experiments`` (``(id, name)``, as :func:`~nbmlops.tracking.search.experiments` lists them)."""
        with self._quiet():
            self.experiment_choice.options = [(name, eid) for eid, name in experiments]
            self.experiment_choice.value = self.runs.experiment_ids[0] if self.runs.experiment_ids else None

    def _find_experiment(self) -> None:
        found = search.experiment_ids(self.runs.tracking_uri, [self.experiment])
        if found:
            self.runs.set_experiments(found)
            self.error.value = ""
            self._fill_experiments(search.experiments(self.runs.tracking_uri))
            self._render_runs()

    def _fill_cells(self) -> None:
        cells = self.runs.cells()
        names = [cell.name or cell.key[:8] for cell in cells]
        options = [("any cell", "")] + [
            (f"{name}{f' ({cell.key[:8]})' if names.count(name) > 1 else ''} · {cell.runs} "
             f"run{'' if cell.runs == 1 else 's'}", cell.key)
            for name, cell in zip(names, cells)
        ]
        current = self.runs.filter.cell
        if current and current not in {value for _, value in options}:
            options.append((current, current))
        with self._quiet():
            self.cell_filter.options = options
            self.cell_filter.value = current

    def _render_runs(self) -> None:
        runs = self.runs
        with self._quiet():
            self.table.value = runs.to_html()
            self.table.selected = list(runs.selected)
            self.table.expanded = sorted(runs.expanded)
            self.count_label.value = runs.describe()
            if not self._built:  # the first page: the controls come later
                return
            self.page_label.value = f"page {runs.page_number + 1} of {runs.pages}"
            self.prev_button.disabled = runs.page_number == 0
            self.next_button.disabled = runs.page_number >= runs.pages - 1
            sortable = runs.sortable()
            if list(self.sort_column.options) != sortable:
                self.sort_column.options = sortable
                self.sort_column.value = runs.order[0]
            self.columns_choice.allowed_tags = runs.column_choices()
            self.columns_choice.value = runs.shown_columns()
            self.selected_label.value = f"{len(runs.selected)} selected"
            self.compare_button.disabled = len(runs.selected) < 2

    # -- charts --------------------------------------------------------------------------------------

    def plot_metric(self) -> Chart | None:
        """Plot the chosen metric over runs, or over steps for the selected runs (or the table's first ten)."""
        if not self._charts_drawn or self._charts_stale:
            self._ensure_tab(CHARTS)  # draws both charts
            return self.chart
        from nbmlops.widgets.figures import chart_figure, output_of

        with self._lock:
            metric = self.metric_choice.value
            if not metric:
                self.chart = None
                self.chart_message.value = _sentence_html(NO_METRICS)
                self.chart_output.layout.display = _HIDDEN
                return None
            if self.chart_mode.value == "steps":
                run_ids = list(self.runs.selected) or [row.run_id for row in self.runs.all_rows()[:10]]
                self.chart = self.charts.over_steps(metric, run_ids)
            else:
                self.chart = self.charts.over_runs(metric)
            if not self.chart.series:
                self.chart_message.value = self.chart.to_html()
                self.chart_output.layout.display = _HIDDEN
                return self.chart
            self.chart_output.outputs = (output_of(chart_figure(self.chart), self.chart.to_html()),)
            self.chart_output.layout.display = None
            self.chart_message.value = ""
            return self.chart

    def plot_sweep(self) -> Parallel | None:
        """Draw the chosen sweep's runs as parallel coordinates (or say there is no sweep)."""
        if not self._charts_drawn or self._charts_stale:
            self._ensure_tab(CHARTS)  # draws both charts
            return self.parallel
        from nbmlops.widgets.figures import output_of, parallel_figure

        with self._lock:
            if not self.sweep_choice.value:
                self.parallel = None
                self.sweep_message.value = _sentence_html(NO_SWEEP)
                self.parallel_output.layout.display = _HIDDEN
                self.sweep_choice.layout.display = _HIDDEN
                return None
            self.sweep_choice.layout.display = None
            try:
                self.parallel = self.charts.parallel(self.sweep_choice.value)
            except LookupError as exc:
                self.sweep_message.value = _error_html(exc)
                self.parallel_output.layout.display = _HIDDEN
                return None
            self.parallel_output.outputs = (output_of(parallel_figure(self.parallel), self.parallel.to_html()),)
            self.parallel_output.layout.display = None
            self.sweep_message.value = ""
            return self.parallel

    def _on_chart_choice(self, change: dict[str, Any]) -> None:
        if self._is_quiet():
            return
        if change["owner"] is self.sweep_choice:
            self.plot_sweep()
        else:
            self.plot_metric()

    def _fill_charts(self) -> None:
        metrics = self.charts.metrics()
        if not metrics and self.runs.filter_string:  # nothing passes the filter: keep the metric, say so
            metrics = list(self.metric_choice.options)
        sweeps = self.charts.sweeps()
        with self._quiet():
            self.metric_choice.options = metrics
            self.metric_choice.value = metrics[0] if metrics else None
            self.sweep_choice.options = [(f"{s.name} · {s.status.lower()} · {s.run_id[:8]}", s.run_id) for s in sweeps]
            self.sweep_choice.value = sweeps[0].run_id if sweeps else None
        self.plot_metric()
        self.plot_sweep()

    # -- models --------------------------------------------------------------------------------------

    def show_models(self) -> None:
        """List the registered models again, and the chosen one's versions and gate history."""
        if self._models_box is None:
            self._ensure_tab(MODELS)  # builds the tab, then lists them
            return
        with self._lock:
            models = self.models.models()
            self._models_html = self.models.models_html(models)
            self.models_table.value = self._models_html
            names = [m.name for m in models]
            with self._quiet():
                current = self.model_choice.value
                self.model_choice.options = names
                self.model_choice.value = current if current in names else (names[0] if names else None)
            self.show_model()

    def show_model(self) -> None:
        """Show the versions, aliases and gate history of the chosen model."""
        if self._is_quiet():
            return
        with self._lock:
            name = self.model_choice.value
            if not name:
                self.versions_view.value = ""
                self.version_choice.options = []
                return
            try:
                versions = self.models.versions(name)
            except NbmlopsError as exc:
                self.versions_view.value = _error_html(exc)
                return
            self.versions_view.value = self.models.versions_html(name, versions)
            self.version_choice.options = [v.version for v in versions]
            self.version_choice.value = versions[0].version if versions else None

    def request_promotion(self) -> str | None:
        """Ask to promote the chosen version: show what would happen, and the Confirm and Cancel buttons."""
        self._ensure_tab(MODELS)
        with self._lock:
            self.outcome.value = ""
            try:
                question = self.models.request_promotion(
                    self.model_choice.value or "", self.version_choice.value or 0, self.alias_input.value,
                    gates=self.gates_input.value.splitlines(), beat=self.beat_input.value.split(","),
                    allow_new_evaluation_data=self.allow_new_data.value,
                )
            except (NbmlopsError, ValueError) as exc:
                self.confirmation.value = _error_html(exc)
                self._confirming(False)
                return None
            self.confirmation.value = f"{STYLE}<div class='nbmlops-view'>{esc(question)}</div>"
            self._confirming(True)
            return question

    def confirm_promotion(self) -> Any:
        """Run the promotion asked for; show whether the alias moved, or the reason it was refused."""
        with self._lock:
            result = self.models.confirm_promotion()
            self.outcome.value = result.to_html()
            self.confirmation.value = ""
            self._confirming(False)
            self.show_models()
            return result

    def cancel_promotion(self) -> None:
        with self._lock:
            self.models.cancel_promotion()
            self.confirmation.value = ""
            self._confirming(False)

    def _confirming(self, shown: bool) -> None:
        for button in (self.confirm_button, self.cancel_button):
            button.layout.display = None if shown else _HIDDEN
        self.promote_button.disabled = shown

    # -- deployments ---------------------------------------------------------------------------------

    def show_deployments(self) -> str:
        """Read the model servers again and show them in the Deployments tab (the store's error when it cannot be
        read: the tab stays usable, Refresh asks again); returns the tab's HTML."""
        from nbmlops.widgets.deployments import DeploymentsView

        self._build_controls()
        with self._lock:
            box = self.tabs.children[DEPLOYMENTS]
            if not box.children:
                self.deployments_view = _hooked(w.HTML(""), "nbmlops-deployments")
                self.deployments_refresh = _hooked(w.Button(description="Refresh", icon="refresh"),
                                                   "nbmlops-deployments-refresh")
                self.deployments_refresh.on_click(lambda _: self.show_deployments())
                box.children = [self.deployments_refresh, self.deployments_view]
            try:
                self._deployments_html = DeploymentsView(self.settings).html()
            except Exception as exc:  # a store that cannot be read is said in the tab
                self._deployments_html = ""
                self.deployments_view.value = _error_html(NbmlopsError(
                    f"could not read the deployments: {type(exc).__name__}: {exc}"))
                return self.deployments_view.value
            self.deployments_view.value = self._deployments_html
            return self._deployments_html

    # -- tabs, live, closing ------------------------------------------------------------------------

    def _on_tab(self, change: dict[str, Any]) -> None:
        if change["new"] in (CHARTS, MODELS):
            self._ensure_tab(change["new"])
        elif change["new"] == DEPLOYMENTS:
            self.show_deployments()

    def _ensure_tab(self, index: int) -> None:
        """Draw the Charts tab when it is first opened (or after the filter changed), showing its loading line
        meanwhile; build the Models tab the first time it is needed (the registry costs time)."""
        self._build_controls()
        with self._lock:
            if index == CHARTS and (not self._charts_drawn or self._charts_stale):
                self.chart_message.value = LOADING_CHARTS
                self._charts_drawn, self._charts_stale = True, False
                try:
                    self._fill_charts()
                except Exception as exc:  # a store error is shown in the tab, which stays usable
                    self._charts_stale = True
                    self.chart_message.value = _error_html(NbmlopsError(
                        f"could not draw the charts: {type(exc).__name__}: {exc}"))
            elif index == MODELS and self._models_box is None:
                self._build_models()
                self.show_models()


    def refresh(self) -> Activity:
        """Poll the store for runs in progress (reading the page again only if something changed); while
        runs are in progress, keep doing so in the background (when the dashboard is live)."""
        with self._lock:
            if not self.runs.experiment_ids:  # opened before the experiment's first run: look again
                self._find_experiment()
            self.runs.forget_cells()
            self._fill_cells()
            activity = self._poll()
        self._follow(activity)
        return activity

    def _follow(self, activity: Activity) -> None:
        """Keep polling in the background while runs are in progress (when the dashboard is live)."""
        with self._lock:
            if self._ticker is not None and activity.active and not self._closed:
                self._ticker.start()

    def _poll(self) -> Activity:
        self.activity = activity = self.live.poll()
        if activity.changed:
            self._render_runs()
            self._charts_stale = True
            if self.tabs.selected_index == CHARTS:  # the charts follow the runs while they are looked at
                self._ensure_tab(CHARTS)
        self.live_label.value = activity.describe()
        finished, size = activity.progress()
        self.progress.layout.display = None if activity.sweeps else _HIDDEN
        self.progress.max, self.progress.value = max(size, 1), finished
        self.progress.description = f"{finished}/{size}"
        return activity

    def _tick(self) -> bool:
        with self._lock:
            try:
                return self._poll().active
            except Exception as exc:
                self.live_label.value = f"live refresh stopped: {type(exc).__name__}: {exc}"
                return False

    def close(self) -> None:
        """Stop the live refresh and close every widget of the dashboard."""
        with self._lock:
            self._closed = True  # the loader starts no live refresh after this
        if self._ticker is not None:
            self._ticker.stop()
        for widget in _descendants(self):
            widget.close()
        super().close()

    # -- static forms --------------------------------------------------------------------------------

    def describe(self) -> str:
        """``nbmlops dashboard: experiment 'x', 12 runs``."""
        return f"nbmlops dashboard: experiment {self.experiment!r}, {self.runs.describe()}"

    def to_html(self) -> str:
        """What the dashboard shows, as static escaped HTML (for exported notebooks)."""
        runs = self.runs
        shown = [f"filter: {runs.filter_string}" if runs.filter_string else "", f"page {runs.page_number + 1} of {runs.pages}"]
        header = (f"{STYLE}<div class='nbmlops-view nbmlops-dashboard-static'><b>nbmlops</b> &middot; "
                  f"{esc(self.experiment)} &middot; {esc(runs.describe())} &middot; "
                  f"{esc(', '.join(p for p in shown if p))}</div>")
        parts = [header, runs.to_html(expand_all=True)]  # every nested run shown: nothing to click in a static page
        if self.comparison is not None:
            parts.append(self.comparison.to_html())
        if self.chart is not None:
            parts.append(self.chart.to_html())
        if self.parallel is not None:
            parts.append(self.parallel.to_html())
        if self._models_html:
            parts.append(self._models_html)
        if self._deployments_html:
            parts.append(self._deployments_html)
        return "".join(parts)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.describe()
        bundle["text/html"] = self.to_html()
        self._shown.set()  # the first page is on its way to the display: the loader starts
        return bundle


def _descendants(widget: Any) -> list[Any]:
    found = []
    for child in getattr(widget, "children", ()):
        found += [child, *_descendants(child)]
    return found
