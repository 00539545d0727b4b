"""The runs table as plain state: filter, sort, page and selection over a tracking store.

Nothing here fetches more than one page: the filter and the order are MLflow's own (``filter_string``,
``order_by``), a page is read at its offset, the total is a count query. The metric expression is the
gate grammar of :mod:`nbmlops.runner.gates` (``accuracy > 0.9 and loss < 0.3``), translated, never
evaluated.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbmlops.exceptions import FilterError
from nbmlops.runner.gates import parse_gate
from nbmlops.tracking import search
from nbmlops.tracking.search import CELL_KEY_TAG, RunRow, quote_value
from nbmlops.tracking.summary import run_url, status_html
from nbmlops.widgets.format import STYLE, duration, esc, number, timestamp

if TYPE_CHECKING:
    from nbmlops.widgets.compare import Comparison

__all__ = ["STATUSES", "Filter", "FilterError", "RunsView", "metric_filter"]

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
#: columns the store can sort by, besides ``params.<name>`` and ``metrics.<name>``
SORTABLE = {
    "start": "attributes.start_time",
    "name": "attributes.run_name",
    "status": "attributes.status",
    "cell": f"tags.`{CELL_KEY_TAG}`",
}
_MAX_KEYS = 30  # param and metric columns shown per page, each


@dataclass(frozen=True)
class Filter:
    """What the table shows: runs of one ``status``, of one ``cell`` (a cell key or a run name), whose
    metrics satisfy ``expression``. Empty parts do not filter."""

    status: str = ""
    cell: str = ""
    expression: str = ""


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


class RunsView:
    """One page of the runs of some experiments, under a filter and an order, and a selection of runs.

    Args:
        tracking_uri: the store to read.
        experiment_ids: the experiments whose runs are shown.
        page_size: runs per page.
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
        #: how many runs were read from the store and how many count queries were made, in all
        self.stats = {"runs_read": 0, "counts": 0}
        self._rows: tuple[RunRow, ...] = ()
        self._cells: list[search.Cell] | None = None
        self.load()

    # -- reading ---------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the current page (clamped to the last one) and the count of runs under the filter."""
        page, total = self._read(self.filter_string, self.order, self.page_number)
        if not page.rows and total and self.page_number > 0:
            page, total = self._read(self.filter_string, self.order, -(-total // self.page_size) - 1)
        self._show(page, total)

    def count(self, filter_string: str) -> int:
        """How many runs of these experiments match an MLflow ``filter_string`` (one count query)."""
        self.stats["counts"] += 1
        return search.count_runs(self.tracking_uri, self.experiment_ids, filter_string)

    def _read(self, filter_string: str, order: tuple[str, bool], number: int) -> tuple[search.RunPage, int]:
        page = search.search_page(self.tracking_uri, self.experiment_ids, filter_string, self._order_by(*order),
                                  number * self.page_size, self.page_size)
        self.stats["runs_read"] += len(page.rows)
        return page, page.total if page.total is not None else self.count(filter_string)

    def _show(self, page: search.RunPage, total: int) -> None:
        self._rows, self.total = page.rows, total
        self.page_number = page.offset // self.page_size
        for row in page.rows:
            if row.run_id in self.selected:
                self.selected[row.run_id] = row

    @property
    def pages(self) -> int:
        """How many pages the filtered runs fill (at least 1)."""
        return max(1, -(-self.total // self.page_size))

    def rows(self) -> list[RunRow]:
        """The runs of the current page, in order."""
        return list(self._rows)

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

    def columns(self) -> tuple[list[str], list[str]]:
        """The param and metric names the current page shows as columns, sorted."""
        params = sorted({key for row in self._rows for key in row.params})[:_MAX_KEYS]
        metrics = sorted({key for row in self._rows for key in row.metrics})[:_MAX_KEYS]
        return params, metrics

    def sortable(self) -> list[str]:
        """Columns :meth:`sort_by` accepts for the current page."""
        params, metrics = self.columns()
        current = [self.order[0]] if self.order[0] not in SORTABLE else []
        keys = [*SORTABLE, *(f"metrics.{m}" for m in metrics), *(f"params.{p}" for p in params)]
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
        self._show(page, total)

    def sort_by(self, column: str, descending: bool = True) -> None:
        """Order by ``column`` (see :meth:`sortable`; also any ``metrics.<name>`` or ``params.<name>``);
        back to the first page."""
        page, total = self._read(self.filter_string, (column, descending), 0)
        self.order = (column, descending)
        self._show(page, total)

    def page(self, number: int) -> None:
        """Show page ``number`` (0-based; clamped to the pages there are)."""
        page, total = self._read(self.filter_string, self.order, min(max(int(number), 0), self.pages - 1))
        self._show(page, total)

    def set_experiments(self, experiment_ids: Sequence[str]) -> None:
        """Show the runs of other experiments: filter kept, first page, selection cleared."""
        self.experiment_ids = list(experiment_ids)
        self.page_number = 0
        self.selected.clear()
        self._cells = None
        self.load()

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
        """Add runs of the current page to the selection."""
        by_id = {row.run_id: row for row in self._rows}
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
        """``12 runs`` (under the filter), as plain text."""
        return f"{self.total} run" + ("" if self.total == 1 else "s")

    def to_html(self) -> str:
        """The current page as an escaped HTML table: class ``nbmlops-runs-table``, rows ``data-run-id``."""
        params, metrics = self.columns()
        now = int(time.time() * 1000)
        head = [*(f"<th>{label}</th>" for label in ("", "status", "cell", "name", "start", "duration")),
                *(f"<th title='param'>{esc(p)}</th>" for p in params),
                *(f"<th title='metric'>{esc(m)}</th>" for m in metrics)]
        body = []
        for row in self._rows:
            chosen = row.run_id in self.selected
            name = esc(row.name)
            if self.ui_url:
                href = esc(run_url(self.ui_url, row.experiment_id, row.run_id))
                name = f"<a href='{href}' target='_blank' rel='noopener'>{name}</a>"
            cells = [
                "&#10003;" if chosen else "",
                status_html(row.status),
                f"<span title='{esc(row.cell)}'>{esc(row.cell[:8])}</span>",
                name,
                esc(timestamp(row.start_time)),
                esc(duration(row.duration_s(now))),
                *(esc(row.params.get(p, "")) for p in params),
                *(esc(number(row.metrics.get(m))) for m in metrics),
            ]
            css = " class='nbmlops-selected'" if chosen else ""
            body.append(f"<tr data-run-id='{esc(row.run_id)}'{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        if not body:
            body.append(f"<tr><td colspan='{len(head)}' class='nbmlops-muted'>no runs</td></tr>")
        return (
            f"{STYLE}<div class='nbmlops-view'><table class='nbmlops-runs-table'><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )

    def label(self, row: RunRow) -> str:
        """A one-line plain-text label of a run (for selection lists)."""
        return f"{row.name or row.run_id[:8]} · {row.status.lower()} · {timestamp(row.start_time)} · {row.run_id[:8]}"
