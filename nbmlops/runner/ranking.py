"""A finished sweep's runs ranked by an objective metric, the best one, and the ranked runs as a table."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nbmlops.runner.reports import NotebookReport
from nbmlops.runner.sweep_worker import SweepRun

__all__ = ["SweepResult", "format_table", "rank_runs"]

_MAX_METRIC_COLUMNS = 6


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep. ``runs`` are ranked: by ``objective`` (best first), runs without it next,
    runs that did not finish last; ``best`` is the first run when it finished with the objective."""

    notebook: Path
    run_key: str
    run_id: str | None
    url: str | None
    experiment: str
    runs: tuple[SweepRun, ...]
    best: SweepRun | None
    objective: str | None
    maximize: bool | None
    duration_s: float

    @property
    def failed(self) -> int:
        """How many combinations did not finish."""
        return sum(run.status != "FINISHED" for run in self.runs)

    @property
    def exit_code(self) -> int:
        """0 every combination finished and passed its gates, 1 a combination failed, 3 a gate failed."""
        if self.failed:
            return 1
        return 0 if all(run.gates_passed for run in self.runs) else 3

    def reports(self) -> list[NotebookReport]:
        """One report per combination, in grid order, for ``write_junit`` and ``append_github_summary``."""
        return [run.report(self.notebook) for run in sorted(self.runs, key=lambda run: run.index)]


def rank_runs(
    outcomes: Iterable[SweepRun], objective: str | None, maximize: bool | None
) -> tuple[tuple[SweepRun, ...], SweepRun | None]:
    """``(ranked, best)``: finished runs with ``objective`` best first, then finished runs without it, then runs
    that did not finish, each group in grid order; ``best`` is the first when it finished with the objective."""
    ranked = tuple(sorted(outcomes, key=lambda outcome: _rank(outcome, objective, maximize)))
    top = ranked[0]
    best = top if top.status == "FINISHED" and _objective(top, objective) is not None else None
    return ranked, best


def _objective(run: SweepRun, objective: str | None) -> float | None:
    """The run's value of ``objective``, None when it has none (or NaN)."""
    value = run.metrics.get(objective) if objective else None
    return None if value is None or math.isnan(value) else value


def _rank(run: SweepRun, objective: str | None, maximize: bool | None) -> tuple[bool, bool, float, int]:
    value = _objective(run, objective)
    score = 0.0 if value is None else -value if maximize else value
    return run.status != "FINISHED", value is None, score, run.index


def format_table(result: SweepResult) -> str:
    """The ranked runs as a plain-text table (the best marked ``*``), the best named below it, then why
    each failed run failed."""
    runs = result.runs
    params = list(dict.fromkeys(name for run in runs for name in run.params))
    metrics = list(dict.fromkeys([*([result.objective] if result.objective else []),
                                  *(name for run in runs for name in run.metrics)]))
    shown = metrics[:_MAX_METRIC_COLUMNS]
    with_gates = any(run.gates for run in runs)
    header = ["", "#", "status", *params, *shown, *(["gates"] if with_gates else []), "run"]
    rows = [header]
    for run in runs:
        values = [f"{run.metrics[name]:.6g}" if name in run.metrics else "-" for name in shown]
        gates = ["passed" if run.gates_passed else "failed"] if with_gates and run.gates else ["-"] * with_gates
        rows.append(["*" if run is result.best else "", str(run.index), run.status,
                     *(str(run.params.get(name, "-")) for name in params), *values, *gates, run.run_id or "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    order = f", ranked by {result.objective} ({'max' if result.maximize else 'min'}imized)" if result.objective else ""
    lines.insert(0, f"sweep {result.notebook.name}: {len(runs)} run(s), {result.failed} failed, "
                    f"{result.duration_s:.1f}s{order}")
    if len(metrics) > len(shown):
        lines.append(f"({len(metrics) - len(shown)} more metric(s) not shown)")
    if result.best is not None and result.objective:
        best = result.best
        lines.append(f"best: #{best.index} {best.label}: {result.objective} = {best.metrics[result.objective]:.6g}"
                     f" (run {best.run_id or 'not yet in the store'})")
    elif result.objective:
        lines.append(f"best: none (no finished run logged {result.objective})")
    lines += [f"failed: #{run.index} {run.label}: {run.error or run.status}" for run in runs if run.status != "FINISHED"]
    lines += [f"retried: #{run.index} {run.label}: attempt {run.attempt}, its worker died before; the earlier "
              f"attempt(s) are KILLED, superseded by run {run.run_id}" for run in runs if run.attempt > 1]
    lines.append(f"sweep run: {result.run_id or 'not yet in the store (see warnings)'} in experiment {result.experiment}")
    return "\n".join(lines)
