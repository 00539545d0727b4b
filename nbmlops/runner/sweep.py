"""Parameter sweeps: every combination of a grid executed as its own notebook run, under one sweep run.

The sweep run (``nbmlops.kind=sweep``) lives in this process; each combination runs in a worker
process (a local process pool, or a Dask cluster for sweeps that outgrow one machine) as an ordinary
notebook run (``nbmlops.kind=notebook``, as ``nbmlops run`` records it) whose parent is the sweep run.
A failing combination never stops the others. At the end the runs are ranked by an objective metric
and the best one is recorded on the sweep run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from nbmlops.config import Settings, configure, resolve_settings, session_settings
from nbmlops.exceptions import FlushTimeoutError, NbmlopsError
from nbmlops.runner.execute import (
    NotebookNotFoundError,
    deliver,
    run_notebook,
    temporary_environment,
)
from nbmlops.runner.gates import Gate, GateResult, infer_maximize, parse_gate
from nbmlops.runner.parameters import check_grid, parse_value
from nbmlops.runner.reports import NotebookReport
from nbmlops.runner.retries import supersede_retries, task_name
from nbmlops.tracking.delivery import sync_journals
from nbmlops.tracking.run import PARENT_ENV, Run, end_for
from nbmlops.tracking.session import HANDOFF_ENV, close_session, get_session
from nbmlops.tracking.store import TASK_TAG, open_store
from nbmlops.tracking.summary import run_url

__all__ = [
    "DaskNotInstalledError", "SchedulerUnavailableError", "SweepError", "SweepResult", "SweepRun",
    "combinations", "format_table", "infer_maximize", "parse_grid", "run_sweep",
]

_MAX_METRIC_COLUMNS = 6


class SweepError(NbmlopsError, ValueError):
    """A sweep that cannot start as asked (malformed grid, clashing options, a store Dask cannot reach)."""


class DaskNotInstalledError(SweepError):
    """``dask=`` was given but ``distributed`` is not installed."""

    def __init__(self) -> None:
        super().__init__('running a sweep on Dask needs Dask: pip install "dask[distributed]"')


class SchedulerUnavailableError(NbmlopsError):
    """The Dask scheduler given as ``dask=`` could not be reached."""


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["alpha=0.1,1,10", "depth=3,5"]`` -> ``{"alpha": [0.1, 1, 10], "depth": [3, 5]}``.

    Values are typed like ``-p`` values (int, float, True/False/None, else the string).
    """

    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, text = (part.strip() for part in spec.partition("="))
        items = [item.strip() for item in text.split(",")]
        if not sep or not name.isidentifier() or not all(items):
            raise SweepError(f'grid "{spec}": expected NAME=VALUE[,VALUE...], such as alpha=0.1,1,10')
        if name in grid:
            raise SweepError(f'grid "{spec}": {name} is already swept by an earlier --grid')
        values = [parse_value(item) for item in items]
        if len({repr(value) for value in values}) < len(values):
            raise SweepError(f'grid "{spec}": a value is repeated')
        grid[name] = values
    return grid


def combinations(
    grid: Mapping[str, Sequence[Any]], random: int | None = None, seed: int | None = None
) -> list[dict[str, Any]]:
    """Every combination of ``grid`` (the last name varies fastest), or ``random`` distinct ones drawn
    with ``seed`` (all of them when ``random`` is at least the grid's size), kept in grid order."""
    size = math.prod(len(values) for values in grid.values())
    if random is not None and random < 1:
        raise SweepError(f"--random must be at least 1, got {random}")
    if random is None or random >= size:
        indices: Iterable[int] = range(size)
    else:  # drawn by index, so a huge grid is never listed in full
        indices = sorted(Random(seed).sample(range(size), random))
    return [_combination(grid, index) for index in indices]


def _combination(grid: Mapping[str, Sequence[Any]], index: int) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for name, values in reversed(list(grid.items())):
        index, position = divmod(index, len(values))
        picked[name] = values[position]
    return {name: picked[name] for name in grid}


@dataclass(frozen=True)
class SweepRun:
    """One combination's outcome (what a worker sends back: plain, picklable data)."""

    index: int
    params: Mapping[str, Any]
    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    run_key: str | None = None
    run_id: str | None = None
    url: str | None = None
    error: str | None = None
    output: str | None = None
    duration_s: float = 0.0
    gates: tuple[GateResult, ...] = ()
    #: which run of the combination this is: 2 or more when its worker died and Dask ran it again (the
    #: earlier attempts' runs are KILLED, tagged ``nbmlops.superseded_by`` with this one's id)
    attempt: int = 1

    @property
    def gates_passed(self) -> bool:
        """True when every gate passed (or there were none)."""
        return all(result.passed for result in self.gates)

    @property
    def label(self) -> str:
        """The combination as text: ``alpha=0.1, depth=3``."""
        return ", ".join(f"{name}={value}" for name, value in self.params.items())

    def report(self, notebook: Path) -> NotebookReport:
        """This run as an entry of a JUnit report or a CI summary, named ``<notebook>[<combination>]``."""
        return NotebookReport(
            notebook=f"{notebook.name}[{self.label}]",
            status=self.status,
            duration_s=self.duration_s,
            error=self.error,
            gates=self.gates,
            params=dict(self.params),
            metrics=dict(self.metrics),
            run_id=self.run_id,
            url=self.url,
            output=self.output,
        )


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


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs for one combination; it may be another machine's process."""

    index: int
    combination: dict[str, Any]
    notebook: str
    output: str
    parameters: dict[str, Any]
    experiment: str
    gates: tuple[Gate, ...]
    timeout: float | None
    kernel_name: str | None
    tags: dict[str, str]
    parent_key: str
    tracking_uri: str
    artifact_root: str | None


_one_at_a_time = threading.Lock()
_interrupted: Any = None  # in a pool's worker: the Event the sweep sets when it stops early
Submit = Callable[[_Job], Any]


def _init_pool_worker(interrupted: Any) -> None:
    """A local worker journals its runs and hands them to the sweep's process, which delivers them
    with its warm MLflow client: the workers never import mlflow."""
    global _interrupted
    _interrupted = interrupted
    os.environ[HANDOFF_ENV] = "1"


def _run_combination(job: _Job) -> SweepRun:
    """Execute one combination in a worker process; never raises for a failed notebook.

    Notebook runs in one process are serialised (a Dask worker may run several tasks in threads, and a
    run's parent, its environment and its journal are per process), and each gets a session, hence a
    journal, of its own, closed when it ends.
    """
    with _one_at_a_time:
        if _interrupted is not None and _interrupted.is_set():  # queued before the interrupt
            return SweepRun(job.index, job.combination, "KILLED", error="not run: the sweep was interrupted")
        previous = session_settings()
        configure(tracking_uri=job.tracking_uri, artifact_root=job.artifact_root)
        started = time.monotonic()
        try:
            with temporary_environment({PARENT_ENV: job.parent_key}):
                result = run_notebook(
                    job.notebook,
                    job.output,
                    job.parameters,
                    experiment=job.experiment,
                    name=f"{Path(job.notebook).stem} #{job.index}",
                    gates=job.gates,
                    kernel_name=job.kernel_name,
                    timeout=job.timeout,
                    tags=job.tags,
                    progress_bar=False,
                )
        except Exception as exc:  # a kernel that cannot start, say: this combination fails, not the sweep
            return SweepRun(
                job.index, job.combination, "FAILED", error=f"{type(exc).__name__}: {exc}", output=job.output,
                duration_s=time.monotonic() - started,
            )
        finally:
            close_session()
            configure(**{key: previous.get(key) for key in ("tracking_uri", "artifact_root")})
    return SweepRun(
        index=job.index,
        params=job.combination,
        status=result.status,
        metrics=dict(result.metrics),
        run_key=result.run_key,
        run_id=result.run_id,
        url=result.url,
        error=result.error,
        output=str(result.output),
        duration_s=result.duration_s,
        gates=result.gates,
    )


def run_sweep(
    notebook: str | os.PathLike[str],
    grid: Mapping[str, Sequence[Any]],
    *,
    fixed: Mapping[str, Any] | None = None,
    random: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    dask: str | None = None,
    gates: Sequence[str | Gate] = (),
    objective: str | None = None,
    maximize: bool | None = None,
    experiment: str | None = None,
    timeout: float | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Execute ``notebook`` once per combination of ``grid``, in parallel, under one sweep run.

    Args:
        notebook: the ``.ipynb`` to execute.
        grid: values to try per parameter (see :func:`parse_grid`).
        fixed: parameters with the same value in every combination.
        random: run this many distinct combinations drawn at random instead of all of them.
        seed: seed of the draw (the same seed draws the same combinations).
        workers: notebooks executed at once on this machine (default: the number of CPUs).
        dask: address of a Dask scheduler (``tcp://host:8786``) to run the combinations on instead;
            the tracking store must then be a server every worker reaches.
        gates: conditions on each run's metrics (see :func:`nbmlops.runner.gates.parse_gate`).
        objective: the metric that ranks the runs and names the best.
        maximize: whether higher is better (default: :func:`infer_maximize` of ``objective``).
        experiment: MLflow experiment of the sweep and its runs (default: the notebook's path).
        timeout: seconds one cell may run before its notebook stops with status TIMEOUT.
        kernel_name: kernel to use (default: the notebook's).
        progress: show a progress bar.

    Raises:
        NbmlopsError: a usage problem found before anything ran (missing notebook, unknown parameter,
            malformed gate, an empty grid, ``dask`` with a local store); nothing was recorded.
    """
    source = Path(notebook).resolve()
    if not source.is_file():
        raise NotebookNotFoundError(str(notebook))
    fixed = dict(fixed or {})
    if clash := sorted(fixed.keys() & grid.keys()):
        raise SweepError(f"parameter(s) {', '.join(clash)} both fixed and swept")
    if workers is not None and workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers}")
    if workers is not None and dask is not None:
        raise SweepError("workers and dask are exclusive: a Dask cluster has the workers it was started with")
    combos = combinations(grid, random, seed)
    if not combos:
        raise SweepError("the grid has no combinations (a parameter has no values)")
    check_grid(source, grid, fixed)  # names and the type of every value, before any run
    parsed_gates = tuple(g if isinstance(g, Gate) else parse_gate(g) for g in gates)
    settings = resolve_settings(experiment=experiment)
    if dask is not None:
        _require_server(settings)
    if objective and maximize is None:
        maximize = infer_maximize(objective)
    started = time.monotonic()
    with _backend(workers, dask, len(combos)) as (submit, as_completed):
        run = _start_sweep_run(source, settings, grid, fixed, random, seed, combos, objective, maximize, dask)
        jobs = [_job(run, settings, source, index, combo, fixed, parsed_gates, timeout, kernel_name)
                for index, combo in enumerate(combos)]
        try:
            outcomes = _collect(jobs, submit, as_completed, f"sweep {source.stem}", progress, settings, run.key)
        except BaseException as exc:
            end_for(run, exc)
            raise
    superseded = _supersede_retries(outcomes, settings, run) if dask is not None else 0
    duration = time.monotonic() - started
    ranked = tuple(sorted(outcomes, key=lambda outcome: _rank(outcome, objective, maximize)))
    top = ranked[0]
    best = top if top.status == "FINISHED" and _objective(top, objective) is not None else None
    _end_sweep_run(run, ranked, best, objective, superseded)
    run_id, url = deliver(run, settings, None)
    return SweepResult(source, run.key, run_id, url, run.experiment, ranked, best, objective, maximize, duration)


def _require_server(settings: Settings) -> None:
    from nbmlops.redact import redact_uri

    scheme = settings.tracking_uri.split(":", 1)[0].lower()
    if scheme in ("sqlite", "file"):
        raise SweepError(
            f"a sweep on Dask needs a tracking store every worker can reach, and {redact_uri(settings.tracking_uri)} "
            f"is a local {scheme} store: start an MLflow tracking server (mlflow server --backend-store-uri ... "
            "--host 0.0.0.0) and use it (--tracking-uri http://HOST:5000 or NBMLOPS_TRACKING_URI)"
        )


@contextlib.contextmanager
def _spawnable_main() -> Iterator[None]:
    """Let spawned workers start from a notebook: IPython's ``__main__`` has no ``__spec__``, which
    multiprocessing reads when it starts a process."""
    main = sys.modules.get("__main__")
    missing = main is not None and not hasattr(main, "__spec__")
    if missing:
        main.__spec__ = None  # type: ignore[union-attr]
    try:
        yield
    finally:
        if missing:
            with contextlib.suppress(AttributeError):
                del main.__spec__  # type: ignore[union-attr]


@contextlib.contextmanager
def _backend(
    workers: int | None, dask: str | None, count: int
) -> Iterator[tuple[Submit, Callable[[Iterable[Any]], Iterator[Any]]]]:
    """``(submit, as_completed)`` of a local process pool, or of a client of the Dask cluster at ``dask``."""
    if dask is None:
        context = multiprocessing.get_context("spawn")
        interrupted = context.Event()
        with _spawnable_main():
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=min(workers or os.cpu_count() or 1, count), mp_context=context,
                initializer=_init_pool_worker, initargs=(interrupted,),
            )
            try:
                yield (lambda job: pool.submit(_run_combination, job)), concurrent.futures.as_completed
            finally:  # after an interrupt, no queued combination starts (a no-op when all are done)
                interrupted.set()
                pool.shutdown(cancel_futures=True)
        return
    try:
        import distributed
    except ImportError:
        raise DaskNotInstalledError() from None
    try:
        client = distributed.Client(dask)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnavailableError(f"cannot reach the Dask scheduler at {dask}: {exc}") from None
    with client:
        yield (
            lambda job: client.submit(_run_combination, job, pure=False, key=f"nbmlops-sweep-{job.parent_key}-{job.index}")
        ), distributed.as_completed


def _start_sweep_run(
    source: Path,
    settings: Settings,
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any],
    random: int | None,
    seed: int | None,
    combos: list[dict[str, Any]],
    objective: str | None,
    maximize: bool | None,
    dask: str | None,
) -> Run:
    params: dict[str, Any] = {f"grid.{name}": json.dumps(list(values), default=repr) for name, values in grid.items()}
    params.update(fixed)
    params.update({f"sweep.{k}": v for k, v in (("random", random), ("seed", seed)) if v is not None})
    tags = {
        "nbmlops.kind": "sweep",
        "nbmlops.notebook": str(source),
        "nbmlops.sweep.size": str(len(combos)),
        "nbmlops.sweep.backend": "dask" if dask else "processes",
    }
    if objective:
        tags.update({"nbmlops.sweep.objective": objective, "nbmlops.sweep.direction": "max" if maximize else "min"})
    run = Run(
        f"sweep {source.stem}",
        experiment=settings.experiment,
        params=params,
        tags=tags,
        source=(str(source), "NOTEBOOK"),
        settings=settings,
    )
    return run.start()


def _job(
    run: Run,
    settings: Settings,
    source: Path,
    index: int,
    combo: dict[str, Any],
    fixed: Mapping[str, Any],
    gates: tuple[Gate, ...],
    timeout: float | None,
    kernel_name: str | None,
) -> _Job:
    return _Job(
        index=index,
        combination=combo,
        notebook=str(source),
        output=str(settings.state_dir / "outputs" / f"sweep-{run.key}" / f"{index}.ipynb"),
        parameters={**fixed, **combo},
        experiment=run.experiment,
        gates=gates,
        timeout=timeout,
        kernel_name=kernel_name,
        tags={"nbmlops.sweep": run.key, "nbmlops.sweep.index": str(index), TASK_TAG: task_name(run.key, index)},
        parent_key=run.key,
        tracking_uri=settings.tracking_uri,
        artifact_root=settings.artifact_root,
    )


def _collect(
    jobs: list[_Job],
    submit: Submit,
    as_completed: Callable[[Iterable[Any]], Iterator[Any]],
    title: str,
    progress: bool,
    settings: Settings,
    sweep_key: str,
) -> list[SweepRun]:
    """Submit every job, then gather (and deliver) the outcomes as they come, with a progress bar."""
    from tqdm import tqdm

    futures = {submit(job): job for job in jobs}
    with contextlib.suppress(FlushTimeoutError):  # the sweep run reaches the store before its children
        get_session().flush(settings.flush_timeout)
    outcomes: list[SweepRun] = []
    known: dict[str, str] = {}
    with tqdm(total=len(jobs), desc=title, unit="run", disable=not progress) as bar:
        for future in as_completed(futures):
            job = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the worker itself died or could not take the job
                outcome = SweepRun(job.index, job.combination, "FAILED", output=job.output,
                                   error=f"the worker failed: {type(exc).__name__}: {exc}")
            outcomes.append(_delivered(outcome, settings, known, sweep_key))
            bar.set_postfix(failed=sum(o.status != "FINISHED" for o in outcomes), refresh=False)
            bar.update()
    return outcomes


def _delivered(outcome: SweepRun, settings: Settings, known: dict[str, str], sweep_key: str) -> SweepRun:
    """Deliver what a finished local worker handed over; fill in the run's MLflow id and address.

    ``known`` maps the run keys delivered so far to their MLflow ids (updated in place).
    """
    if outcome.run_id is not None or outcome.run_key is None:
        return outcome
    report = sync_journals(settings.journal_dir, "the sweep worker or its kernel died before the run ended")
    known.update(report.runs)
    run_id = known.get(outcome.run_key)
    if run_id is None:
        return outcome
    experiment_id = get_session().run_ids.get(sweep_key, ("", ""))[1]
    if not experiment_id:
        return dataclasses.replace(outcome, run_id=run_id)
    with contextlib.suppress(NbmlopsError):  # cells of a kernel delivered before their notebook's run
        open_store(settings.tracking_uri, settings.artifact_root).adopt_children(experiment_id, outcome.run_key, run_id)
    return dataclasses.replace(outcome, run_id=run_id, url=run_url(settings.ui_url, experiment_id, run_id))


def _supersede_retries(outcomes: list[SweepRun], settings: Settings, run: Run) -> int:
    """Dask runs a combination again when its worker dies: keep, for each, the run its outcome names as the
    live one (``outcomes`` updated in place with their attempt numbers); returns how many runs it superseded."""
    named = {outcome.index: (outcome.run_id, outcome.run_key) for outcome in outcomes}
    retried = supersede_retries(settings, run.experiment, run.key, named)
    for position, outcome in enumerate(outcomes):
        if (retry := retried.get(outcome.index)) is not None:
            outcomes[position] = dataclasses.replace(outcome, attempt=retry.attempt, run_id=retry.run_id)
    return sum(retry.superseded for retry in retried.values())


def _objective(run: SweepRun, objective: str | None) -> float | None:
    value = run.metrics.get(objective) if objective else None
    return None if value is None or math.isnan(value) else value


def _rank(run: SweepRun, objective: str | None, maximize: bool | None) -> tuple[bool, bool, float, int]:
    value = _objective(run, objective)
    score = 0.0 if value is None else -value if maximize else value
    return run.status != "FINISHED", value is None, score, run.index


def _end_sweep_run(
    run: Run, ranked: tuple[SweepRun, ...], best: SweepRun | None, objective: str | None, superseded: int
) -> None:
    failed = sum(outcome.status != "FINISHED" for outcome in ranked)
    tags = {
        "nbmlops.sweep.finished": str(len(ranked) - failed),
        "nbmlops.sweep.failed": str(failed),
        "nbmlops.sweep.gates_failed": str(sum(not outcome.gates_passed for outcome in ranked)),
        "nbmlops.sweep.superseded": str(superseded),
    }
    if best is not None and objective:
        run.log_metric(f"best_{objective}", best.metrics[objective])
        tags.update({"nbmlops.sweep.best_index": str(best.index), "nbmlops.sweep.best_run_id": best.run_id or ""})
    run.set_tags(tags)
    run.end("FAILED" if failed == len(ranked) else "FINISHED")


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
