"""Re-execute what a recorded run did, and say whether the result is the same (``nbmlops reproduce``).

A notebook run (``nbmlops.kind=notebook``) is re-executed from its logged input notebook with the
same typed parameters; a ``%%track`` cell run (``nbmlops.kind=cell``) from a notebook rebuilt out of
the kernel history it recorded. The new run is tagged ``nbmlops.reproduces=<original run id>`` and
compared with the original cell run by cell run (:mod:`nbmlops.runner.compare`): every metric at
every step and every output dataset by content, within a tolerance. The verdict is REPRODUCED
only when something recorded was compared and all of it matched; NOT REPRODUCED names the first
differing cell and quantity, and the likely cause (:mod:`nbmlops.runner.causes`); NOTHING TO
COMPARE when the original recorded no metric and no output. Params, input data fingerprints and
environment differences are listed too.

A reproduction registers no model unless asked (``register=True``, ``nbmlops reproduce --register``): the cells
still run and train, and a run whose registration was skipped is tagged ``nbmlops.registration_skipped``; a
version it does register is tagged ``nbmlops.reproduction_of`` with the original's ``NAME/VERSION``
(:mod:`nbmlops.tracking.staging`, told through the kernel's environment).

Data snapshots stand in for data that changed or disappeared since the run
(:mod:`nbmlops.runner.restore`): a data file a notebook run's parameter names, the input
variables of a cell run; when every input of a cell run has a snapshot, history cells that fail
(say, reading a file that is gone) do not stop the reproduction. The report's notes say what was used.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, resolve_settings
from nbmlops.data.snapshots import SnapshotStore
from nbmlops.exceptions import ConfigError, NotReproducibleError
from nbmlops.runner.causes import data_differences, environment_differences, likely_causes, param_differences
from nbmlops.runner.compare import (
    CellComparison,
    OutputComparison,
    cell_label,
    cell_source,
    compare_run,
    match_cells,
)
from nbmlops.runner.execute import PARAMETERS_ARTIFACT, NotebookRun, run_notebook, temporary_environment
from nbmlops.runner.parameters import check_parameters
from nbmlops.runner.restore import restore_cell, restore_data_parameters, restore_notes, snapshotted_inputs
from nbmlops.runner.tolerance import show
from nbmlops.tracking.artifact_snapshots import open_snapshot_store
from nbmlops.tracking.query import child_runs, download_artifact, kernel_history, load_run
from nbmlops.tracking.search import RunRow
from nbmlops.tracking.staging import REGISTRATION_SKIPPED_TAG, REPRODUCTION_OF_TAG, reproduction_environment

__all__ = [
    "NOTHING_TO_COMPARE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "NotReproducibleError",
    "Reproduction",
    "format_report",
    "reproduce",
]

REPRODUCES_TAG = "nbmlops.reproduces"
#: the verdicts of `nbmlops reproduce`
REPRODUCED, NOT_REPRODUCED, NOTHING_TO_COMPARE = "REPRODUCED", "NOT REPRODUCED", "NOTHING TO COMPARE"
_EXIT_CODES = {REPRODUCED: 0, NOT_REPRODUCED: 4, NOTHING_TO_COMPARE: 6}
_LOADS_EXTENSION = re.compile(r"^\s*%(re)?load_ext\s+nbmlops\b", re.MULTILINE)


@dataclass(frozen=True)
class Reproduction:
    """The outcome of :func:`reproduce`.

    ``run_id`` is the new run compared with the original: the new notebook run, or for a cell run the
    new run of that cell (``execution.run_id`` is then the run of the rebuilt notebook). ``cells``
    compares each cell run of the original (then, for a notebook run, its own metrics) with its
    counterpart; ``causes`` name the likely causes of the first difference. ``params``, ``data``
    and ``environment`` list the differences found, one line each; ``notes`` say what could not be
    compared exactly. ``registered`` names the versions the re-execution registered (``NAME/VERSION``, only with
    ``register=True``), ``registration_skipped`` the models it did not register; ``predictions`` compares
    each of those versions' predictions with the original version's on its training features
    (:class:`~nbmlops.registry.predictions.PredictionComparison`).
    """

    original: RunRow
    execution: NotebookRun
    run_id: str | None
    cells: tuple[CellComparison, ...]
    causes: tuple[str, ...]
    params: tuple[str, ...]
    data: tuple[str, ...]
    environment: tuple[str, ...]
    notes: tuple[str, ...]
    rtol: float
    atol: float
    registered: tuple[str, ...] = ()
    registration_skipped: tuple[str, ...] = ()
    predictions: tuple[Any, ...] = ()

    @property
    def status(self) -> str:
        """Status of the new execution: FINISHED, FAILED or TIMEOUT."""
        return self.execution.status

    @property
    def compared(self) -> int:
        """How many recorded quantities (metrics, outputs) were compared."""
        return sum(cell.compared for cell in self.cells) + sum(p.compared for p in self.predictions)

    @property
    def first_difference(self) -> str | None:
        """What differs first: the failed execution, or the first cell and quantity; None when nothing does."""
        if self.status != "FINISHED":
            error = self.execution.error
            return f"the re-execution ended {self.status}" + (f": {error}" if error else "")
        if self.run_id is None:
            return "the re-execution recorded no run to compare"
        found = next((f"{c.label}: {c.first_difference}" for c in self.cells if c.first_difference), None)
        return found or next((f"model {p.new}: {p.difference} (against {p.original})" for p in self.predictions
                              if p.compared and p.difference), None)

    @property
    def verdict(self) -> str:
        """REPRODUCED (something was compared and all of it matched), NOT REPRODUCED or NOTHING TO COMPARE."""
        if self.first_difference is not None:
            return NOT_REPRODUCED
        return REPRODUCED if self.compared else NOTHING_TO_COMPARE

    @property
    def reproduced(self) -> bool:
        """True when the verdict is REPRODUCED."""
        return self.verdict == REPRODUCED

    @property
    def exit_code(self) -> int:
        """0 reproduced, 4 not reproduced, 6 nothing to compare."""
        return _EXIT_CODES[self.verdict]


def reproduce(
    run_id: str,
    *,
    rtol: float = 1e-9,
    atol: float = 0.0,
    settings: Settings | None = None,
    output: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    progress_bar: bool = False,
    register: bool = False,
) -> Reproduction:
    """Re-execute run ``run_id`` headlessly and compare the new run with it.

    The kernel works in the original notebook's folder when it still exists (so relative data paths
    resolve), else in the project root; the notebook re-executed is kept in
    ``.nbmlops/reproduce/<run_id>/``.

    Args:
        run_id: a notebook run or a ``%%track`` cell run.
        rtol: relative tolerance for each number compared (metric values, output data).
        atol: absolute tolerance for each number compared.
        settings: where the original run is read from (default: :func:`resolve_settings`); the new
            run is recorded where :func:`run_notebook` records.
        output: where to write the executed notebook (default: ``.nbmlops/outputs/``).
        timeout: seconds one cell may run.
        progress_bar: show papermill's progress bar.
        register: let the re-execution register the models its cells register (each new version tagged
            ``nbmlops.reproduction_of``); by default nothing is registered.

    Raises:
        ConfigError: a negative tolerance.
        RunNotFoundError: no such run.
        NotReproducibleError: the run is of another kind, or what it needs was not recorded.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not value >= 0:
            raise ConfigError(name, f"must be a number >= 0, got {value}", "argument")
    settings = settings or resolve_settings()
    original = load_run(settings.tracking_uri, run_id)
    kind = original.tags.get("nbmlops.kind")
    if kind not in ("notebook", "cell"):
        raise NotReproducibleError(
            f"run {run_id} is {'a ' + kind + ' run' if kind else 'not an nbmlops run'}: "
            "only notebook runs and %%track cell runs can be reproduced"
        )
    workdir = settings.state_dir / "reproduce" / run_id
    cwd = _original_folder(original, settings) or settings.root
    store = open_snapshot_store(settings)
    notes: list[str] = []
    restored: dict[str, str] = {}
    if kind == "notebook":
        notebook, parameters = _notebook_input(settings.tracking_uri, original, workdir, notes)
        restored = restore_data_parameters(original, parameters, cwd, workdir / "data", store, notes)
        defaults = check_parameters(notebook, {})
        parameters = {k: v for k, v in {**parameters, **restored}.items() if repr(defaults[k]) != repr(v)}
    else:
        notebook, parameters = _rebuilt_notebook(settings.tracking_uri, original, workdir, store, notes), {}
    versions = (
        _registered_by(settings, [original, *(_cell_runs(settings.tracking_uri, original) if kind == "notebook" else [])])
        if register else {}
    )
    with temporary_environment(reproduction_environment(run_id, register, versions)):  # the kernel inherits it
        execution = run_notebook(
            notebook,
            output,
            parameters,
            experiment=original.experiment,
            name=f"reproduce {original.name or run_id}",
            cwd=cwd,
            timeout=timeout,
            tags={REPRODUCES_TAG: run_id},
            progress_bar=progress_bar,
        )
    if kind == "cell":
        notes += restore_notes(execution.output)
    new_uri = resolve_settings().tracking_uri  # where run_notebook recorded the new run
    new = load_run(new_uri, execution.run_id) if execution.run_id else None
    new_runs = [new, *_cell_runs(new_uri, new)] if new is not None else []
    registered, skipped, pairs = _registrations(new_uri, new_runs, register, notes)
    if new is None:
        notes.append("the new run has not reached the tracking store (see the warnings above)")
    elif kind == "cell":
        new = _reproduced_cell(new_uri, new.run_id, run_id)
        if new is None:
            notes.append("the rebuilt notebook recorded no run of the tracked cell")
    result = _compared(settings.tracking_uri, original, new_uri, new, execution, store, set(restored), notes, rtol, atol)
    said: list[str] = []
    predictions = _predictions(pairs, rtol, atol, settings, said)
    return replace(result, registered=registered, registration_skipped=skipped, predictions=predictions,
                   notes=(*result.notes, *said))


def _predictions(pairs: list[tuple[str, str]], rtol: float, atol: float, settings: Settings,
                 notes: list[str]) -> tuple[Any, ...]:
    """The predictions of each registered version compared with its original's (``(original, new)`` pairs)."""
    from nbmlops import openers

    if not pairs or openers.model_predictions is None:
        return ()
    found = tuple(openers.model_predictions(original, new, rtol=rtol, atol=atol, settings=settings)
                  for original, new in pairs)
    for item in found:
        if not item.compared:
            notes.append(f"predictions of {item.new} not compared with {item.original}: {item.difference}")
        elif item.difference is None:
            notes.append(f"predictions of {item.new} match {item.original}'s on {item.rows} training rows")
    return found


def _registered_by(settings: Settings, runs: list[RunRow]) -> dict[str, str]:
    """``{model name: "NAME/VERSION"}`` of the versions ``runs`` registered (the latest, per name)."""
    found: dict[str, int] = {}
    for version in _versions_of(settings.tracking_uri, settings.artifact_root, runs):
        found[version.name] = max(found.get(version.name, 0), int(version.version))
    return {name: f"{name}/{number}" for name, number in sorted(found.items())}


def _registrations(
    uri: str, runs: list[RunRow], register: bool, notes: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...], list[tuple[str, str]]]:
    """What the re-execution's ``runs`` registered (``NAME/VERSION``; only asked with ``register``), the models
    they did not (a note each), and the ``(original, new)`` versions whose predictions can be compared."""
    skipped = sorted({name for run in runs for name in run.tags.get(REGISTRATION_SKIPPED_TAG, "").split(",") if name})
    if skipped:
        notes.append(f"registration skipped: {', '.join(skipped)} (nbmlops reproduce --register registers them)")
    registered, pairs = [], []
    for version in _versions_of(uri, resolve_settings().artifact_root, runs) if register else []:
        reference = f"{version.name}/{version.version}"
        registered.append(reference)
        of = (version.tags or {}).get(REPRODUCTION_OF_TAG)
        notes.append(f"registered {reference}" + (f" ({REPRODUCTION_OF_TAG}={of})" if of else ""))
        if of and "/" in of:
            pairs.append((of, reference))
    return tuple(registered), tuple(skipped), pairs


def _versions_of(uri: str, artifact_root: str | None, runs: list[RunRow]) -> list[Any]:
    """The registered model versions made by ``runs``."""
    if not runs:
        return []
    from nbmlops.backend.registry import search_versions
    from nbmlops.backend.store import open_store

    client = open_store(uri, artifact_root).client
    return [version for run in runs for version in search_versions(client, f"run_id = '{run.run_id}'")]


def format_report(reproduction: Reproduction) -> str:
    """A readable report for the terminal: the verdict and what differs first, with its likely cause;
    each cell's comparisons; the timings left out; then params, data, environment differences and notes."""
    r, original = reproduction, reproduction.original
    lines = [f"{r.verdict}: {original.tags.get('nbmlops.kind', '')} run {original.run_id} ({original.name}, "
             f"experiment {original.experiment})"]  # fmt: skip
    if r.first_difference:
        lines.append(f"  first difference: {r.first_difference}")
    lines += [f"  {'likely cause' if i == 0 else '  or'}: {cause}" for i, cause in enumerate(r.causes)]
    lines.append(f"  new run: {r.run_id or 'none'} ({r.status}); executed notebook: {r.execution.output}")
    if r.compared:
        lines.append(f"compared (rtol={r.rtol:g}, atol={r.atol:g}):")
    else:
        lines.append("compared: nothing; the original run recorded no metric and no output dataset")
    excluded = []
    for cell in r.cells:
        if cell.compared:
            lines.append(f"  {cell.label}" + ("" if cell.new else ": no counterpart in the re-execution"))
            lines += [f"    {_mark(m.difference)}metric {m.name}: {m.difference or _value(m.original)}"
                      for m in cell.metrics]  # fmt: skip
            lines += [f"    {_mark(o.difference)}output {o.name}: {o.difference or _same(o)}" for o in cell.outputs]
        excluded += [f"{cell.label}: {name}" for name in cell.excluded]
        excluded += [f"{cell.label}: output {o.name} column(s) {', '.join(o.excluded)}"
                     for o in cell.outputs if o.excluded]  # fmt: skip
    for title, items in (
        ("excluded (timings)", excluded),
        ("params", r.params),
        ("data", r.data),
        ("environment", r.environment),
        ("notes", r.notes),
    ):
        if items:
            lines.append(f"{title}:")
            lines += [f"  {item}" for item in items]
    return "\n".join(line.rstrip() for line in lines)


def _mark(difference: str | None) -> str:
    return "ok    " if difference is None else "DIFF  "


def _value(history: tuple[tuple[int, float], ...]) -> str:
    if len(history) == 1:
        return show(history[0][1])
    return f"{len(history)} steps, {show(history[0][1])} ... {show(history[-1][1])}"


def _same(output: OutputComparison) -> str:
    if output.how == "same fingerprint":
        return f"same fingerprint {output.original[:12]}"
    return f"same content (fingerprint {output.original[:12]} -> {(output.new or '')[:12]})"


def _compared(
    old_uri: str,
    original: RunRow,
    new_uri: str,
    new: RunRow | None,
    execution: NotebookRun,
    store: SnapshotStore,
    restored: set[str],
    notes: list[str],
    rtol: float,
    atol: float,
) -> Reproduction:
    """Compare ``original`` with its re-execution ``new`` (both notebook runs, or both cell runs) cell by cell.

    ``restored``: notebook parameters given the path of a restored snapshot instead (the notes say so).
    """
    notebook = original.tags.get("nbmlops.kind") == "notebook"
    old_cells = _cell_runs(old_uri, original) if notebook else [original]
    new_cells = (_cell_runs(new_uri, new) if notebook else [new]) if new is not None else []
    stores = {run.run_id: old_uri for run in old_cells} | {run.run_id: new_uri for run in new_cells}
    sources = functools.cache(lambda run_id: cell_source(stores[run_id], run_id))

    def source(run: RunRow) -> str | None:
        return sources(run.run_id)

    pairs = match_cells(old_cells, new_cells, source) if notebook else [(original, new)]
    cells = [compare_run(cell_label(old), (old_uri, old), (new_uri, match), store, rtol, atol) for old, match in pairs]
    if notebook:
        cells.append(compare_run("notebook run", (old_uri, original), (new_uri, new), store, rtol, atol))
        matched = {match.run_id for _, match in pairs if match is not None}
        unmatched = [cell_label(run) for run in new_cells if run.run_id not in matched]
        if unmatched:
            notes.append(f"cell runs of the re-execution with no counterpart in the original: {', '.join(unmatched)}")
    notes += [f"{c.label}: metric(s) not in the original run: {', '.join(c.added)}" for c in cells if c.added]
    params: list[str] = []
    data: list[str] = []
    environment: list[str] = []
    if new is not None:
        kept = {k: original.params[k] if k in restored and k in original.params else v for k, v in new.params.items()}
        params = param_differences(original.params, kept)
        data = data_differences([original, *old_cells], [new, *new_cells]) if notebook else data_differences(
            [original], [new]
        )
        environment = environment_differences(old_uri, original, new_uri, new)
    differing = next((i for i, cell in enumerate(cells) if cell.first_difference), None)
    causes = [] if differing is None else likely_causes(cells, differing, data, environment, source)
    return Reproduction(
        original=original,
        execution=execution,
        run_id=new.run_id if new else None,
        cells=tuple(cells),
        causes=tuple(causes),
        params=tuple(params),
        data=tuple(data),
        environment=tuple(environment),
        notes=tuple(notes),
        rtol=rtol,
        atol=atol,
    )


def _cell_runs(uri: str, notebook_run: RunRow) -> list[RunRow]:
    """The cell runs of a notebook run, in execution order."""
    cells = [run for run in child_runs(uri, notebook_run.run_id) if run.tags.get("nbmlops.kind") == "cell"]
    return sorted(cells, key=lambda run: (int(run.tags.get("nbmlops.execution_count") or 0), run.start_time))


def _notebook_input(uri: str, original: RunRow, workdir: Path, notes: list[str]) -> tuple[Path, dict[str, Any]]:
    """The logged input notebook, and the parameters the run had (those the notebook still declares)."""
    folder = download_artifact(uri, original.run_id, "notebook/input", workdir)
    snapshots = sorted(folder.glob("*.ipynb")) if folder else []
    if not snapshots:
        raise NotReproducibleError(f"run {original.run_id} has no input notebook (artifact notebook/input/)")
    with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
        typed = download_artifact(uri, original.run_id, PARAMETERS_ARTIFACT, tmp)
        if typed is not None:
            values = json.loads(typed.read_text())
        else:
            values = {name: _literal(text) for name, text in original.params.items()}
            notes.append(f"no {PARAMETERS_ARTIFACT}: parameter types were guessed from the MLflow params")
    defaults = check_parameters(snapshots[0], {})
    return snapshots[0], {k: v for k, v in values.items() if k in defaults}


def _rebuilt_notebook(uri: str, original: RunRow, workdir: Path, store: SnapshotStore, notes: list[str]) -> Path:
    """A notebook of the kernel history that led to the cell, then a cell restoring inputs from their
    snapshots (when there are any), the tracked cell last."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    history = kernel_history(uri, original.run_id)
    if history is None:
        raise NotReproducibleError(
            f"part of the kernel history of run {original.run_id} is missing: a run of the same kernel that "
            "holds earlier cells (code/history.json) was deleted or never reached the store"
        )
    sources = [entry["source"] for entry in history]
    raised = [bool(entry.get("raised")) for entry in history]
    if not sources or not sources[-1].lstrip().startswith("%%track"):
        raise NotReproducibleError(
            f"run {original.run_id} has no kernel history ending with its %%track cell (code/history.json); "
            "was code capture off, or the cell run without storing history?"
        )
    first, _, body = sources[-1].lstrip().partition("\n")
    sources[-1] = f"{first} --tag {REPRODUCES_TAG}={original.run_id}\n{body}"
    if not any(_LOADS_EXTENSION.search(source) for source in sources[:-1]):
        sources.insert(0, "%load_ext nbmlops")
        raised.insert(0, False)
    cells = [new_code_cell(source) for source in sources]
    inputs, covered = snapshotted_inputs(original, store, notes)
    for cell, failed in zip(cells[:-1], raised):
        # it raised in the original session too: replay its effects, and go on as the user did; or
        # the restore cell below covers every input: a history cell that fails now cannot cost them
        if failed or (covered and not _LOADS_EXTENSION.search(cell.source)):
            cell.metadata["tags"] = ["raises-exception"]
    if inputs:
        cells.insert(len(cells) - 1, restore_cell(inputs, store))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    stem = Path(original.tags.get("nbmlops.notebook", "cell")).stem
    path = workdir / f"{stem}.ipynb"
    workdir.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def _original_folder(original: RunRow, settings: Settings) -> Path | None:
    """The folder of the notebook the run came from, when it still exists (and is not a reproduction's)."""
    for tag in ("nbmlops.notebook", "mlflow.source.name"):
        path = Path(original.tags.get(tag, ""))
        if path.is_absolute() and path.parent.is_dir() and settings.state_dir not in path.parents:
            return path.parent
    return None


def _reproduced_cell(uri: str, notebook_run_id: str, original_id: str) -> RunRow | None:
    """The new run of the tracked cell: the last cell run of the rebuilt notebook tagged as reproducing it."""
    cells = [r for r in child_runs(uri, notebook_run_id) if r.tags.get("nbmlops.kind") == "cell"]
    tagged = [r for r in cells if r.tags.get(REPRODUCES_TAG) == original_id] or cells
    tagged.sort(key=lambda r: int(r.tags.get("nbmlops.execution_count") or -1))
    return tagged[-1] if tagged else None


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
