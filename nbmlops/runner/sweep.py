"""Parameter sweeps: every combination of a grid executed as its own notebook run, under one sweep run.

The sweep run (``nbmlops.kind=sweep``) lives in this process; each combination runs in a worker
process (a local process pool, or a Dask cluster for sweeps that outgrow one machine) as an ordinary
notebook run (``nbmlops.kind=notebook``, as ``nbmlops run`` records it) whose parent is the sweep run.
A failing combination never stops the others. At the end the runs are ranked by an objective metric
and the best one is recorded on the sweep run.

On Dask, the workers share nothing with this process but the tracking server: each task carries the
notebook and the project files it needs (:mod:`nbmlops.runner.workspace`), runs in a private directory of
its worker, and sends the executed notebook back, written here at the run's output path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbmlops.backend.addresses import StoreAddresses
from nbmlops.backend.store import TASK_TAG, open_store
from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import FlushTimeoutError, NbmlopsError, SweepError
from nbmlops.runner.execute import NotebookNotFoundError, deliver
from nbmlops.runner.gates import Gate, infer_maximize, parse_gate
from nbmlops.runner.grid import combinations
from nbmlops.runner.parameters import check_grid
from nbmlops.runner.ranking import SweepResult, rank_runs
from nbmlops.runner.retries import supersede_retries, task_name
from nbmlops.runner.summaries import finish_summaries, parameter_scrubber
from nbmlops.runner.sweep_backends import AsCompleted, Submit, open_backend, require_shared_store
from nbmlops.runner.sweep_worker import SweepJob, SweepRun
from nbmlops.runner.workspace import Workspace, pack_workspace
from nbmlops.tracking.delivery import sync_journals
from nbmlops.tracking.run import Run, end_for
from nbmlops.tracking.session import get_session
from nbmlops.tracking.summary import run_url

__all__ = ["run_sweep"]


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
    output_dir: str | os.PathLike[str] | None = None,
    ship: Sequence[str | os.PathLike[str]] = (),
) -> SweepResult:
    """Execute ``notebook`` once per combination of ``grid``, in parallel, under one sweep run.

    Args:
        notebook: the ``.ipynb`` to execute.
        grid: values to try per parameter (see :func:`nbmlops.runner.grid.parse_grid`).
        fixed: parameters with the same value in every combination.
        random: run this many distinct combinations drawn at random instead of all of them.
        seed: seed of the draw (the same seed draws the same combinations).
        workers: notebooks executed at once on this machine (default: the number of CPUs).
        dask: address of a Dask scheduler (``tcp://host:8786``) to run the combinations on instead;
            the tracking store must then be a server every worker reaches.
        gates: conditions on each run's metrics (see :func:`nbmlops.runner.gates.parse_gate`).
        objective: the metric that ranks the runs and names the best.
        maximize: whether higher is better (default: :func:`infer_maximize` of ``objective``).
        experiment: MLflow experiment of the sweep and its runs (default: ``<project>/<the notebook's path in the project>``).
        timeout: seconds one cell may run before its notebook stops with status TIMEOUT.
        kernel_name: kernel to use (default: the notebook's).
        progress: show a progress bar.
        output_dir: where the executed notebooks are written, ``<index>.ipynb`` each (default:
            ``.nbmlops/outputs/sweep-<sweep run key>/``).
        ship: with ``dask``, more files or folders under the notebook's project for the workers, besides
            those the parameters and the notebook's code name (see :mod:`nbmlops.runner.workspace`).

    Raises:
        NbmlopsError: a usage problem found before anything ran (missing notebook, unknown parameter,
            malformed gate, an empty grid, ``dask`` with a local store, a file to ship that cannot travel);
            nothing was recorded.
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
    if ship and dask is None:
        raise SweepError("ship is for sweeps on Dask: local workers read the project where it is")
    workspace: Workspace | None = None
    rewrites: dict[str, str] = {}
    if dask is not None:
        require_shared_store(settings)
        workspace, rewrites = pack_workspace(source, [fixed, *combos], ship, settings)
    if objective and maximize is None:
        maximize = infer_maximize(objective)
    get_session().deliver_here()  # the workers' journals are delivered here: the sweep's own records too
    started = time.monotonic()
    with open_backend(workers, dask, len(combos)) as (submit, as_completed):
        run = _start_sweep_run(source, settings, grid, fixed, random, seed, combos, objective, maximize, dask)
        outputs = Path(output_dir).resolve() if output_dir else settings.state_dir / "outputs" / f"sweep-{run.key}"
        jobs = [_job(run, settings, source, outputs / f"{index}.ipynb", index, combo, fixed, parsed_gates, timeout,
                     kernel_name, workspace, rewrites)
                for index, combo in enumerate(combos)]
        try:
            outcomes = _collect(jobs, submit, as_completed, f"sweep {source.stem}", progress, settings, run.key)
        except BaseException as exc:
            end_for(run, exc)
            raise
    superseded = _supersede_retries(outcomes, settings, run) if dask is not None else 0
    duration = time.monotonic() - started
    ranked, best = rank_runs(outcomes, objective, maximize)
    _end_sweep_run(run, ranked, best, objective, superseded)
    run_id, url = deliver(run, settings, None)
    return SweepResult(source, run.key, run_id, url, run.experiment, ranked, best, objective, maximize, duration)


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
    output: Path,
    index: int,
    combo: dict[str, Any],
    fixed: Mapping[str, Any],
    gates: tuple[Gate, ...],
    timeout: float | None,
    kernel_name: str | None,
    workspace: Workspace | None,
    rewrites: Mapping[str, str],
) -> SweepJob:
    """One combination's job; with a ``workspace``, its parameters naming project files by absolute path are
    rewritten (``rewrites``) and its run names this machine's notebook, not the worker's copy."""
    tags = {"nbmlops.sweep": run.key, "nbmlops.sweep.index": str(index), TASK_TAG: task_name(run.key, index)}
    parameters = {**fixed, **combo}
    if workspace is not None:
        tags.update({"nbmlops.notebook": str(source), "mlflow.source.name": str(source)})
        parameters = {k: rewrites.get(v, v) if isinstance(v, str) else v for k, v in parameters.items()}
    return SweepJob(
        index=index,
        combination=combo,
        notebook=str(source),
        output=str(output),
        parameters=parameters,
        experiment=run.experiment,
        gates=gates,
        timeout=timeout,
        kernel_name=kernel_name,
        tags=tags,
        parent_key=run.key,
        tracking_uri=settings.tracking_uri,
        artifact_root=settings.artifact_root,
        workspace=workspace,
    )


def _collect(
    jobs: list[SweepJob],
    submit: Submit,
    as_completed: AsCompleted,
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
            outcomes.append(_summaries_finished(_delivered(_written(outcome), settings, known, sweep_key), settings))
            bar.set_postfix(failed=sum(o.status != "FINISHED" for o in outcomes), refresh=False)
            bar.update()
    return outcomes


def _written(outcome: SweepRun) -> SweepRun:
    """Write the executed notebook a worker sent back at the run's output path (a notebook that cannot be
    written costs the file, with a warning, not the run)."""
    if outcome.executed is None or outcome.output is None:
        return outcome
    target = Path(outcome.output)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(outcome.executed, encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"nbmlops: the executed notebook of combination {outcome.index} not written: {exc}\n")
        return dataclasses.replace(outcome, executed=None, output=None)
    return dataclasses.replace(outcome, executed=None)


def _delivered(outcome: SweepRun, settings: Settings, known: dict[str, str], sweep_key: str) -> SweepRun:
    """Deliver what a finished local worker handed over; fill in the run's MLflow id and address.

    ``known`` maps the run keys delivered so far to their MLflow ids (updated in place).
    """
    if outcome.run_id is not None or outcome.run_key is None:
        return outcome
    report = sync_journals(settings.journal_dir, "the sweep worker or its kernel died before the run ended",
                           StoreAddresses.from_environment(settings.tracking_uri))
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


def _summaries_finished(outcome: SweepRun, settings: Settings) -> SweepRun:
    """Rewrite the ``%%track`` summaries of the combination's executed notebook with their delivered state."""
    if outcome.output is not None:
        finish_summaries(Path(outcome.output), settings, outcome.run_id, parameter_scrubber(outcome.params))
    return outcome


def _supersede_retries(outcomes: list[SweepRun], settings: Settings, run: Run) -> int:
    """Dask runs a combination again when its worker dies: keep, for each, the run its outcome names as the
    live one (``outcomes`` updated in place with their attempt numbers); returns how many runs it superseded."""
    named = {outcome.index: (outcome.run_id, outcome.run_key) for outcome in outcomes}
    retried = supersede_retries(settings, run.experiment, run.key, named)
    for position, outcome in enumerate(outcomes):
        if (retry := retried.get(outcome.index)) is not None:
            outcomes[position] = dataclasses.replace(outcome, attempt=retry.attempt, run_id=retry.run_id)
    return sum(retry.superseded for retry in retried.values())


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
