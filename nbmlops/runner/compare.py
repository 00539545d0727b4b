"""Compare a re-execution with the run it reproduces, cell run by cell run (``nbmlops reproduce``).

Each tracked cell run of the original is matched with the cell run of the re-execution that has
its cell id (``nbmlops.cell_id``), else with the one at its position when their sources
(``code/cell.py``) are the same. Then every metric is compared at every step (its whole history,
never only its last value), and every output dataset (context ``output``) by content, from the
data snapshots, within ``rtol``/``atol`` (:mod:`nbmlops.runner.tolerance`); an output that was not
snapshotted can only be compared by fingerprint, and the comparison says so. Timing values
(:func:`~nbmlops.tracking.values.is_timing`: metrics and output columns) are left out and listed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nbmlops.data.snapshots import SnapshotError, SnapshotStore
from nbmlops.runner.tolerance import close, first_difference, show
from nbmlops.tracking.query import artifact_text, metric_history
from nbmlops.tracking.run import STORED, snapshot_state
from nbmlops.tracking.search import RunRow
from nbmlops.tracking.values import is_timing

__all__ = [
    "CELL_ID_TAG",
    "CellComparison",
    "MetricComparison",
    "OutputComparison",
    "cell_label",
    "cell_source",
    "compare_run",
    "match_cells",
]

CELL_ID_TAG = "nbmlops.cell_id"
_SERIES_SHOWN = 4


@dataclass(frozen=True)
class MetricComparison:
    """One metric's history, ``(step, value)`` pairs, in the original run and in the new one (None
    when the new run lacks it); ``difference`` says where they first differ (None when they match)."""

    name: str
    original: tuple[tuple[int, float], ...]
    new: tuple[tuple[int, float], ...] | None
    difference: str | None

    @property
    def ok(self) -> bool:
        """True when the histories match within the tolerance."""
        return self.difference is None


@dataclass(frozen=True)
class OutputComparison:
    """One output dataset: its fingerprint in each run (``new`` None when not logged), how it was
    compared, where it first differs (None when it matches), and its timing columns left out."""

    name: str
    original: str
    new: str | None
    how: str
    difference: str | None
    excluded: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the output is the same (within the tolerance)."""
        return self.difference is None


@dataclass(frozen=True)
class CellComparison:
    """A run of the original (a cell run, or a notebook run's own metrics) against its counterpart in
    the re-execution (``new`` None when there is none).

    ``excluded`` names the timing metrics left out; ``added`` the metrics only the new run has.
    """

    label: str
    original: RunRow
    new: RunRow | None
    metrics: tuple[MetricComparison, ...]
    outputs: tuple[OutputComparison, ...]
    excluded: tuple[str, ...]
    added: tuple[str, ...]

    @property
    def compared(self) -> int:
        """How many recorded quantities (metrics and outputs) were compared."""
        return len(self.metrics) + len(self.outputs)

    @property
    def first_difference(self) -> str | None:
        """The first metric, then output, that differs, as ``metric NAME: ...``; None when all match."""
        for metric in self.metrics:
            if metric.difference is not None:
                return f"metric {metric.name}: {metric.difference}"
        for output in self.outputs:
            if output.difference is not None:
                return f"output {output.name}: {output.difference}"
        return None


def compare_run(
    label: str,
    original: tuple[str, RunRow],
    new: tuple[str, RunRow | None],
    store: SnapshotStore,
    rtol: float,
    atol: float,
) -> CellComparison:
    """Compare run ``original`` = ``(tracking URI, record)`` with ``new``: every metric's history, and
    every output dataset, from the snapshots in ``store``."""
    (old_uri, old), (new_uri, record) = original, new
    kept = sorted(name for name in old.metrics if not is_timing(name))
    metrics = tuple(
        _compare_history(
            name,
            metric_history(old_uri, old.run_id, name),
            metric_history(new_uri, record.run_id, name) if record is not None and name in record.metrics else None,
            rtol,
            atol,
        )
        for name in kept
    )
    before = _outputs(old)
    after = _outputs(record) if record is not None else {}
    outputs = tuple(
        _compare_output(name, (old, before[name]), (record, after.get(name)), store, rtol, atol)
        for name in sorted(before)
        if not is_timing(name)
    )
    return CellComparison(
        label=label,
        original=old,
        new=record,
        metrics=metrics,
        outputs=outputs,
        excluded=tuple(
            sorted(name for name in old.metrics if is_timing(name)) + sorted(n for n in before if is_timing(n))
        ),
        added=tuple(sorted(set(record.metrics) - set(old.metrics))) if record is not None else (),
    )


def match_cells(
    originals: Sequence[RunRow], news: Sequence[RunRow], source: Callable[[RunRow], str | None]
) -> list[tuple[RunRow, RunRow | None]]:
    """Each original cell run with its counterpart among ``news`` (both in execution order): the one
    with its cell id, else the one at its position whose ``source(run)`` is the same; None when none is."""
    taken: set[str] = set()
    pairs: list[tuple[RunRow, RunRow | None]] = []
    for position, old in enumerate(originals):
        cell_id = old.tags.get(CELL_ID_TAG)
        same_id = (n for n in news if cell_id and n.tags.get(CELL_ID_TAG) == cell_id and n.run_id not in taken)
        match = next(same_id, None)
        if match is None and position < len(news) and news[position].run_id not in taken:
            code = source(old)
            if code is not None and code == source(news[position]):
                match = news[position]
        if match is not None:
            taken.add(match.run_id)
        pairs.append((old, match))
    return pairs


def cell_label(run: RunRow) -> str:
    """How a report names a cell run: its name, then its execution count and cell id when known."""
    count, cell_id = run.tags.get("nbmlops.execution_count"), run.tags.get(CELL_ID_TAG)
    where = ", ".join(part for part in (f"In [{count}]" if count else "", f"cell id {cell_id}" if cell_id else "") if part)
    return f"{run.name or 'cell'} ({where})" if where else (run.name or f"cell run {run.run_id}")


def cell_source(tracking_uri: str, run_id: str) -> str | None:
    """A cell run's code (artifact ``code/cell.py``) without its ``%%track`` line; None when not recorded."""
    text = artifact_text(tracking_uri, run_id, "code/cell.py")
    if text is None:
        return None
    lines = text.strip().splitlines()
    return "\n".join(lines[1:] if lines and lines[0].lstrip().startswith("%%track") else lines)


def _compare_history(
    name: str,
    old: list[tuple[int, float]],
    new: list[tuple[int, float]] | None,
    rtol: float,
    atol: float,
) -> MetricComparison:
    import numpy as np

    def result(difference: str | None) -> MetricComparison:
        return MetricComparison(name, tuple(old), tuple(new) if new is not None else None, difference)

    if new is None:
        return result(f"missing from the re-execution (was {_history_text(old)})")
    if [step for step, _ in old] != [step for step, _ in new]:
        return result(f"logged at steps {_steps_text(old)}, now at {_steps_text(new)}")
    before, after = np.array([v for _, v in old], dtype=float), np.array([v for _, v in new], dtype=float)
    differs = np.flatnonzero(~close(before, after, rtol, atol))
    if not differs.size:
        return result(None)
    at = int(differs[0])
    step = f" at step {old[at][0]}" if len(old) > 1 else ""
    return result(f"{show(old[at][1])} -> {show(new[at][1])}{step}")


def _history_text(history: Sequence[tuple[int, float]]) -> str:
    if len(history) == 1:
        return show(history[0][1])
    values = [show(v) for _, v in history[:_SERIES_SHOWN]]
    more = ", ..." if len(history) > _SERIES_SHOWN else ""
    return f"[{', '.join(values)}{more}] ({len(history)} steps)"


def _steps_text(history: Sequence[tuple[int, float]]) -> str:
    steps = [str(step) for step, _ in history[:_SERIES_SHOWN]]
    return f"[{', '.join(steps)}{', ...' if len(history) > _SERIES_SHOWN else ''}] ({len(history)} values)"


def _outputs(run: RunRow) -> dict[str, str]:
    """Output dataset name -> fingerprint."""
    return {name: digest for name, digest, context in run.datasets if context == "output"}


def _compare_output(
    name: str,
    original: tuple[RunRow, str],
    new: tuple[RunRow | None, str | None],
    store: SnapshotStore,
    rtol: float,
    atol: float,
) -> OutputComparison:
    (old_run, old_fp), (new_run, new_fp) = original, new
    if new_run is None or new_fp is None:
        missing = f"not logged by the re-execution (was {old_fp[:12]})"
        return OutputComparison(name, old_fp, None, "not compared", missing)
    if new_fp == old_fp:
        return OutputComparison(name, old_fp, new_fp, "same fingerprint", None)
    changed = f"fingerprint {old_fp[:12]} -> {new_fp[:12]}; content not compared"
    values = []
    for which, run, digest in (("original", old_run, old_fp), ("new", new_run, new_fp)):
        state = snapshot_state(run.tags, digest)
        try:
            if state != STORED:
                raise SnapshotError(f"it has no snapshot ({state or 'none was recorded'})")
            values.append(store.load(digest))
        except SnapshotError as exc:
            return OutputComparison(name, old_fp, new_fp, "fingerprint only", f"{changed}: the {which} one: {exc}")
    difference, excluded = first_difference(values[0], values[1], rtol, atol, is_timing)
    return OutputComparison(name, old_fp, new_fp, "content", difference, excluded)
