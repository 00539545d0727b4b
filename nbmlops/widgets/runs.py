"""The runs table as plain state: filter, sort, page, columns, nested groups and selection over a tracking store.

Nothing here fetches more than one page: the filter and the order are MLflow's own (``filter_string``,
``order_by``), a page is read at its offset, the total is a count query. The metric expression is the
gate grammar of :mod:`nbmlops.runner.gates` (``accuracy > 0.9 and loss < 0.3``), translated, never
evaluated.

Nested runs (a sweep's runs, a headless notebook's cell runs, ``nbmlops.track`` blocks inside a ``%%track`` cell)
are shown under their parent: without a filter a page holds runs that are nobody's child, and the runs below them
come with it (collapsed until their parent is expanded). Under a filter the table lists the runs that match, a
run nested under its parent when that matches too.

Columns: the metrics first (those most runs on the page have), then the params the user set (plain names, such
as ``C``), then nothing else unless chosen: estimator params (``model.logisticregression__C``) and the rest are
offered by :meth:`RunsView.column_choices` and shown with :meth:`RunsView.choose_columns`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import FilterError, SearchError
from nbmlops.runner.gates import parse_gate
from nbmlops.tracking import search
from nbmlops.tracking.search import CELL_KEY_TAG, TOP_LEVEL_FILTER, RunRow, quote_value
from nbmlops.tracking.summary import run_url
from nbmlops.widgets.format import STYLE, cell_label, duration, esc, is_user_param, number, status_badge, timestamp

if TYPE_CHECKING:
    from nbmlops.widgets.compare import Comparison

__all__ = ["STATUSES", "Filter", "FilterError", "RunsView", "Shown", "metric_filter"]

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
#: columns the store can sort by, besides ``params.<name>`` and ``metrics.<name>``
SORTABLE = {
    "start": "attributes.start_time",
    "name": "attributes.run_name",
    "status": "attributes.status",
    "cell": f"tags.`{CELL_KEY_TAG}`",
}
DEFAULT_METRICS = 6  # metric columns shown unless the user chooses
DEFAULT_PARAMS = 5  # param columns shown unless the user chooses
NESTED_LIMIT = 2000  # nested runs read with one page, at most


@dataclass(frozen=True)
class Filter:
    """What the table shows: runs of one ``status``, of one ``cell`` (a cell key or a run name), whose
    metrics satisfy ``expression``. Empty parts do not filter."""

    status: str = ""
    cell: str = ""
    expression: str = ""


@dataclass(frozen=True)
class Shown:
    """One row of the table as shown: the run, how deep it is nested, the runs above it on the table (outermost
    first) and how many runs are nested right under it."""

    row: RunRow
    depth: int
    ancestors: tuple[str, ...]
    children: int


def metric_filter(expression: str) -> str:
    """The MLflow ``filter_string`` of a gate expression: ``accuracy > 0.9`` -> ``metrics.`accuracy` > 0.9``.

    Raises :class:`~nbmlops.runner.gates.GateSyntaxError` (with a caret under the problem) for bad syntax.
    """
    parts = []
    for condition in parse_gate(expression).conditions:
        if "`" in condition.metric:
            raise FilterError(f"metric {condition.metric!r}: a name holding a backtick cannot be searched for")
        op = "=" if condition.op == "==" else condition.op
        parts.append(f"metrics.`{condition.metric}` {op} {condition.threshold!r}")
    return " and ".join(parts)


def _ordered_keys(rows: Sequence[RunRow], kind: str) -> list[str]:
    """The ``kind`` keys (metrics, params) of ``rows``: those most rows have first, then by name."""
    counts: Counter[str] = Counter(key for row in rows for key in getattr(row, kind))
    return sorted(counts, key=lambda key: (-counts[key], key.lower(), key))


class RunsView:
    """One page of the runs of some experiments, under a filter and an order, and a selection of runs.

    Args:
        tracking_uri: the store to read.
        experiment_ids: the experiments whose runs are shown.
        page_size: runs per page (nested runs come with their parent, beyond it).
        ui_url: the MLflow UI, for links from run names (none when empty).
    """

    def __init__(self, tracking_uri: str, experiment_ids: Sequence[str], page_size: int = 50, ui_url: str = "") -> None:
        if page_size < 1:
            raise FilterError(f"page_size must be >= 1, got {page_size}")
        self.tracking_uri = tracking_uri
        self.experiment_ids = list(experiment_ids)
        self.page_size = page_size
        self.ui_url = ui_url
        self.filter = Filter()
        self.filter_string = ""
        self.order: tuple[str, bool] = ("start", True)
        self.page_number = 0
        self.total = 0
        self.selected: dict[str, RunRow] = {}
        self.expanded: set[str] = set()  # the runs whose nested runs are shown
        self.chosen: list[str] | None = None  # the columns the user chose (``metrics.x``, ``params.y``); None: auto
        #: whether pages hold top-level runs with the runs below them (False when the store cannot search for them)
        self.grouping = True
        #: how many runs were read from the store and how many count queries were made, in all
        self.stats = {"runs_read": 0, "counts": 0}
        self._rows: tuple[RunRow, ...] = ()
        self._nested: tuple[RunRow, ...] = ()
        self._cells: list[search.Cell] | None = None
        self.load()

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def page_filter(self) -> str:
        """The filter pages are read with: the user's, else (when grouping) the runs that are nobody's child."""
        return self._page_filter(self.filter_string)

    def _page_filter(self, filter_string: str) -> str:
        return filter_string or (TOP_LEVEL_FILTER if self.grouping else "")

    def load(self) -> None:
        """Read the current page (clamped to the last one), the runs nested below it, and the count of runs."""
        page, total = self._read(self.filter_string, self.order, self.page_number)
        if not page.rows and total and self.page_number > 0:
            page, total = self._read(self.filter_string, self.order, -(-total // self.page_size) - 1)
        self._show(page, total, self.filter_string)

    def count(self, filter_string: str) -> int:
        """How many runs of these experiments match an MLflow ``filter_string`` (one count query)."""
        self.stats["counts"] += 1
        return search.count_runs(self.tracking_uri, self.experiment_ids, filter_string)

    def _read(self, filter_string: str, order: tuple[str, bool], number: int) -> tuple[search.RunPage, int]:
        order_by = self._order_by(*order)
        try:
            page = search.search_page(self.tracking_uri, self.experiment_ids, self._page_filter(filter_string),
                                      order_by, number * self.page_size, self.page_size)
        except SearchError:
            if filter_string or not self.grouping:
                raise
            self.grouping = False  # a store that cannot search for runs without a parent: a flat table
            page = search.search_page(self.tracking_uri, self.experiment_ids, "", order_by,
                                      number * self.page_size, self.page_size)
        self.stats["runs_read"] += len(page.rows)
        total = page.total if page.total is not None else self.count(self._page_filter(filter_string))
        return page, total

    def _show(self, page: search.RunPage, total: int, filter_string: str) -> None:
        self._rows, self.total = page.rows, total
        self.page_number = page.offset // self.page_size
        nested: list[RunRow] = []
        if page.rows and not filter_string and self.grouping:
            since = min((row.start_time for row in page.rows if row.start_time), default=0)
            nested = search.nested_rows(self.tracking_uri, self.experiment_ids, [row.run_id for row in page.rows],
                                        since, NESTED_LIMIT)
            self.stats["runs_read"] += len(nested)
        self._nested = tuple(nested)
        for row in (*page.rows, *nested):
            if row.run_id in self.selected:
                self.selected[row.run_id] = row

    @property
    def pages(self) -> int:
        """How many pages the filtered runs fill (at least 1)."""
        return max(1, -(-self.total // self.page_size))

    def rows(self) -> list[RunRow]:
        """The runs of the current page, in order (without the runs nested below them)."""
        return list(self._rows)

    def all_rows(self) -> list[RunRow]:
        """Every run the table holds now: the page's runs and the runs nested below them."""
        return [*self._rows, *self._nested]

    def shown(self) -> list[Shown]:
        """The table's rows in order: each run followed by the runs nested below it (sorted as the table is)."""
        rows = self.all_rows()
        on_table = {row.run_id for row in rows}
        below: dict[str, list[RunRow]] = {}
        top: list[RunRow] = []
        for row in rows:
            parent = row.parent_run_id
            if parent and parent in on_table and parent != row.run_id:
                below.setdefault(parent, []).append(row)
            else:
                top.append(row)
        key = self._child_order()
        found: list[Shown] = []
        visited: set[str] = set()

        def visit(row: RunRow, ancestors: tuple[str, ...]) -> None:
            if row.run_id in visited:  # a cycle of parents cannot be stored, but never loop on one
                return
            visited.add(row.run_id)
            children = sorted(below.get(row.run_id, []), key=key[0], reverse=key[1])
            found.append(Shown(row, len(ancestors), ancestors, len(children)))
            for child in children:
                visit(child, (*ancestors, row.run_id))

        for row in top:
            visit(row, ())
        return found

    def _child_order(self) -> tuple[Any, bool]:
        """How runs nested under one parent are ordered: as the table is sorted; by start, oldest first."""
        column, descending = self.order
        if column == "start":
            return (lambda row: (row.start_time, row.run_id)), False
        kind, _, key = column.partition(".")

        def value(row: RunRow) -> tuple[int, Any]:
            if column in ("name", "status", "cell"):
                found: Any = {"name": row.name, "status": row.status, "cell": row.cell}[column]
            elif kind == "metrics":
                found = row.metrics.get(key)
                if found is not None and math.isnan(found):
                    found = None
            else:
                found = row.params.get(key)
            # missing values last whichever way it is sorted
            return (0, found) if found is not None else ((-1 if descending else 1), "")

        return value, descending

    def cells(self) -> list[search.Cell]:
        """The tracked cells of these experiments, most recently run first (read once, then kept)."""
        if self._cells is None:
            self._cells = search.cells(self.tracking_uri, self.experiment_ids)
        return self._cells

    def keep_cells(self, experiment_ids: Sequence[str], cells: list[search.Cell]) -> None:
        """Keep ``cells`` read elsewhere (in the background) for ``experiment_ids``, unless the view shows other
        experiments now or has read the cells again meanwhile."""
        if self._cells is None and list(experiment_ids) == self.experiment_ids:
            self._cells = cells

    def forget_cells(self) -> None:
        """Read the cells again next time (new runs may have added some)."""
        self._cells = None

    # -- columns -------------------------------------------------------------------------------------

    def metric_keys(self) -> list[str]:
        """The metric names of the runs on the table, those most runs have first."""
        return _ordered_keys(self.all_rows(), "metrics")

    def param_keys(self) -> list[str]:
        """The param names of the runs on the table: the user's (most common first), then the others."""
        keys = _ordered_keys(self.all_rows(), "params")
        return [k for k in keys if is_user_param(k)] + [k for k in keys if not is_user_param(k)]

    def column_choices(self) -> list[str]:
        """Every column the table can show: ``metrics.<name>`` then ``params.<name>``, in that order."""
        choices = [f"metrics.{m}" for m in self.metric_keys()] + [f"params.{p}" for p in self.param_keys()]
        return list(dict.fromkeys([*choices, *(self.chosen or [])]))

    def default_columns(self) -> list[str]:
        """The columns shown unless chosen: the first metrics, then the first params the user set."""
        metrics = self.metric_keys()[:DEFAULT_METRICS]
        params = [p for p in self.param_keys() if is_user_param(p)][:DEFAULT_PARAMS]
        return [f"metrics.{m}" for m in metrics] + [f"params.{p}" for p in params]

    def shown_columns(self) -> list[str]:
        """The metric and param columns shown, in order (``metrics.<name>``, ``params.<name>``)."""
        return list(self.chosen) if self.chosen is not None else self.default_columns()

    def choose_columns(self, columns: Sequence[str] | None) -> None:
        """Show these columns (``metrics.<name>`` or ``params.<name>``, in this order); None: the defaults."""
        if columns is None:
            self.chosen = None
            return
        for column in columns:
            kind, _, key = column.partition(".")
            if kind not in ("metrics", "params") or not key:
                raise FilterError(f"column {column!r}: name it metrics.NAME or params.NAME")
        self.chosen = list(dict.fromkeys(columns))

    def columns(self) -> tuple[list[str], list[str]]:
        """The param and metric names shown as columns, in the order shown."""
        shown = self.shown_columns()
        return ([c.partition(".")[2] for c in shown if c.startswith("params.")],
                [c.partition(".")[2] for c in shown if c.startswith("metrics.")])

    def sortable(self) -> list[str]:
        """Columns :meth:`sort_by` accepts for the current page."""
        current = [self.order[0]] if self.order[0] not in SORTABLE else []
        keys = [*SORTABLE, *(f"metrics.{m}" for m in self.metric_keys()), *(f"params.{p}" for p in self.param_keys())]
        return list(dict.fromkeys(keys + current))

    # -- changing what is shown ------------------------------------------------------------------------

    def set_filter(self, status: str = "", cell: str = "", expression: str = "") -> None:
        """Show runs of ``status``, of ``cell`` (a cell key, else a run name), whose metrics satisfy
        ``expression``; back to the first page. A bad part raises and leaves the view as it was."""
        status = (status or "").strip().upper()
        cell = (cell or "").strip()
        expression = (expression or "").strip()
        parts = []
        if status:
            if status not in STATUSES:
                raise FilterError(f"status {status!r}: choose from {', '.join(STATUSES)}")
            parts.append(f"attributes.status = '{status}'")
        if cell:
            known = {c.key for c in self.cells()}
            parts.append(f"tags.`{CELL_KEY_TAG}` = {quote_value(cell)}" if cell in known
                         else f"attributes.run_name = {quote_value(cell)}")
        if expression:
            parts.append(metric_filter(expression))
        filter_string = " and ".join(parts)
        page, total = self._read(filter_string, self.order, 0)  # the store checks it before anything changes
        self.filter, self.filter_string = Filter(status, cell, expression), filter_string
        self._show(page, total, filter_string)

    def sort_by(self, column: str, descending: bool = True) -> None:
        """Order by ``column`` (see :meth:`sortable`; also any ``metrics.<name>`` or ``params.<name>``);
        back to the first page."""
        page, total = self._read(self.filter_string, (column, descending), 0)
        self.order = (column, descending)
        self._show(page, total, self.filter_string)

    def page(self, number: int) -> None:
        """Show page ``number`` (0-based; clamped to the pages there are)."""
        page, total = self._read(self.filter_string, self.order, min(max(int(number), 0), self.pages - 1))
        self._show(page, total, self.filter_string)

    def set_experiments(self, experiment_ids: Sequence[str]) -> None:
        """Show the runs of other experiments: filter kept, first page, selection cleared."""
        self.experiment_ids = list(experiment_ids)
        self.page_number = 0
        self.selected.clear()
        self.expanded.clear()
        self._cells = None
        self.load()

    def expand(self, run_id: str, shown: bool = True) -> None:
        """Show (or hide) the runs nested under ``run_id``."""
        if shown:
            self.expanded.add(run_id)
        else:
            self.expanded.discard(run_id)

    def order_by(self) -> list[str]:
        """The MLflow ``order_by`` of the current order (then the newest first)."""
        return self._order_by(*self.order)

    @staticmethod
    def _order_by(column: str, descending: bool) -> list[str]:
        direction = "DESC" if descending else "ASC"
        if column in SORTABLE:
            clause = f"{SORTABLE[column]} {direction}"
        else:
            kind, _, key = column.partition(".")
            if kind not in ("metrics", "params") or not key:
                raise FilterError(f"cannot sort by {column!r}: choose from {', '.join(SORTABLE)}, metrics.NAME, "
                                  "params.NAME")
            if "`" in key:
                raise FilterError(f"{column!r}: a name holding a backtick cannot be sorted by")
            clause = f"{kind}.`{key}` {direction}"
        return [clause] if column == "start" else [clause, "attributes.start_time DESC"]

    # -- selection -------------------------------------------------------------------------------------

    def select(self, *run_ids: str) -> None:
        """Add runs to the selection (those on the table, or any run of the store)."""
        by_id = {row.run_id: row for row in self.all_rows()}
        missing = [run_id for run_id in run_ids if run_id not in by_id and run_id not in self.selected]
        if missing:
            missing_rows = search.get_rows(self.tracking_uri, missing)
            self.stats["runs_read"] += len(missing_rows)
            by_id.update((row.run_id, row) for row in missing_rows)
        for run_id in run_ids:
            if run_id in by_id:
                self.selected[run_id] = by_id[run_id]
            elif run_id not in self.selected:
                raise FilterError(f"no run {run_id!r} in these experiments")

    def deselect(self, *run_ids: str) -> None:
        for run_id in run_ids:
            self.selected.pop(run_id, None)

    def clear_selection(self) -> None:
        self.selected.clear()

    def compare(self) -> Comparison:
        """The selected runs side by side (two or more), oldest first: the others are compared with it."""
        from nbmlops.widgets.compare import compare_runs

        if len(self.selected) < 2:
            raise FilterError(f"select two or more runs to compare ({len(self.selected)} selected)")
        oldest_first = sorted(self.selected.values(), key=lambda row: (row.start_time, row.run_id))
        return compare_runs(self.tracking_uri, [row.run_id for row in oldest_first])

    # -- showing ---------------------------------------------------------------------------------------

    def describe(self) -> str:
        """``12 runs`` (under the filter; without one, the runs that are nobody's child) and, when some are
        nested below them on the table, ``12 runs, 40 nested``."""
        text = f"{self.total} run" + ("" if self.total == 1 else "s")
        if self._nested:
            text += f", {len(self._nested)} nested"
        return text

    def to_html(self, expand_all: bool = False) -> str:
        """The table as escaped HTML: class ``nbmlops-runs-table``, a row ``tr[data-run-id]`` per run with its
        checkbox (``input[data-select]``), its name (``[data-detail]`` opens its details), a toggle for the runs
        nested under it (``button[data-toggle]``); nested rows carry ``data-ancestors`` and are collapsed
        (class ``nbmlops-collapsed``) until every run above them is expanded (always shown with ``expand_all``,
        the static form)."""
        columns = self.shown_columns()
        now = int(time.time() * 1000)
        shown = self.shown()
        ids = [item.row.run_id for item in shown]
        all_selected = bool(ids) and all(run_id in self.selected for run_id in ids)
        head = [
            f"<th><input type='checkbox' data-select-all='1' title='select every run on this page'"
            f"{' checked' if all_selected else ''}></th>",
            "<th>name</th>", "<th>status</th>",
            *(f"<th class='nbmlops-metric-col' title='metric'>{esc(c.partition('.')[2])}</th>"
              for c in columns if c.startswith("metrics.")),
            *(f"<th title='param'>{esc(c.partition('.')[2])}</th>" for c in columns if c.startswith("params.")),
            "<th>cell</th>", "<th>start</th>", "<th>duration</th>",
        ]
        body = []
        for item in shown:
            row = item.row
            chosen = row.run_id in self.selected
            name = esc(row.name or row.run_id[:8])
            toggle = ""
            if item.children:
                opened = expand_all or row.run_id in self.expanded
                toggle = (f"<button class='nbmlops-toggle' data-toggle='{esc(row.run_id)}' "
                          f"aria-expanded='{'true' if opened else 'false'}' "
                          f"title='show or hide the {item.children} nested runs'>{'&#9662;' if opened else '&#9656;'}"
                          "</button>")
            badge = f"<span class='nbmlops-count-badge'>{item.children} nested</span>" if item.children else ""
            link = ""
            if self.ui_url:
                href = esc(run_url(self.ui_url, row.experiment_id, row.run_id))
                link = f" <a href='{href}' target='_blank' rel='noopener' title='open in the MLflow UI'>&#8599;</a>"
            indent = f" style='padding-left:{8 + 16 * item.depth + (0 if item.children else 14)}px'"
            name_cell = (f"<td{indent}>{toggle}<a class='nbmlops-detail-link' data-detail='{esc(row.run_id)}' "
                         f"title='{esc(row.run_id)}: show its details'>{name}</a>{badge}{link}</td>")
            cells = [
                f"<td><input type='checkbox' data-select='{esc(row.run_id)}'{' checked' if chosen else ''}></td>",
                name_cell,
                f"<td>{status_badge(row.status)}</td>",
                *(f"<td class='nbmlops-metric-col'>{esc(number(row.metrics.get(c.partition('.')[2])))}</td>"
                  for c in columns if c.startswith("metrics.")),
                *(f"<td>{esc(row.params.get(c.partition('.')[2], ''))}</td>" for c in columns if c.startswith("params.")),
                f"<td title='{esc(row.cell or row.tags.get('nbmlops.kind', ''))}'>{esc(cell_label(row))}</td>",
                f"<td>{esc(timestamp(row.start_time))}</td>",
                f"<td>{esc(duration(row.duration_s(now)))}</td>",
            ]
            collapsed = not expand_all and any(a not in self.expanded for a in item.ancestors)
            css = " ".join(c for c in ("nbmlops-selected" if chosen else "", "nbmlops-collapsed" if collapsed else "")
                           if c)
            body.append(
                f"<tr data-run-id='{esc(row.run_id)}' data-depth='{item.depth}' "
                f"data-ancestors='{esc(' '.join(item.ancestors))}'" + (f" class='{css}'" if css else "") + ">"
                + "".join(cells) + "</tr>")
        if not body:
            body.append(f"<tr><td colspan='{len(head)}' class='nbmlops-empty'>"
                        f"{'No run matches this filter.' if self.filter_string else 'No runs yet.'}</td></tr>")
        return (
            f"{STYLE}<div class='nbmlops-view'><div class='nbmlops-scroll'><table class='nbmlops-runs-table'>"
            f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div></div>"
        )
