"""Re-execute what a recorded run did, and say whether the result is the same (``nbmlops reproduce``).

A notebook run (``nbmlops.kind=notebook``) is re-executed from its logged input notebook with the
same typed parameters; a ``%%track`` cell run (``nbmlops.kind=cell``) from a notebook rebuilt out of
the kernel history it recorded. The new run is tagged ``nbmlops.reproduces=<original run id>`` and
compared with the original: metrics within a tolerance, then params, data fingerprints and
environment.

Data snapshots stand in for data that changed or disappeared since the run. A notebook run's
parameter naming a data file whose content is no longer the recorded one gets the path of the
file restored from its snapshot. A cell run's rebuilt notebook has, before the tracked cell, a
cell that rebinds each input variable from its snapshot when it is missing or differs
(:func:`restore_inputs`); when every input has a snapshot, history cells that fail (say, reading
a file that is gone) do not stop the reproduction. The report's notes say what was used.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from nbmlops.config import Settings, resolve_settings
from nbmlops.data.snapshots import SnapshotError, SnapshotStore
from nbmlops.exceptions import ConfigError, NbmlopsError
from nbmlops.runner.execute import PARAMETERS_ARTIFACT, NotebookRun, run_notebook
from nbmlops.runner.parameters import check_parameters
from nbmlops.tracking.artifact_snapshots import open_snapshot_store
from nbmlops.tracking.query import RunRecord, child_runs, download_artifact, load_run
from nbmlops.tracking.run import STORED, snapshot_state

__all__ = [
    "MetricComparison",
    "NotReproducibleError",
    "Reproduction",
    "format_report",
    "reproduce",
    "restore_inputs",
]

REPRODUCES_TAG = "nbmlops.reproduces"
#: exit codes of `nbmlops reproduce`
EXIT_REPRODUCED, EXIT_NOT_REPRODUCED = 0, 4
_MAX_PACKAGE_LINES = 30
_LOADS_EXTENSION = re.compile(r"^\s*%(re)?load_ext\s+nbmlops\b", re.MULTILINE)
#: tag of the rebuilt notebook's cell that restores inputs from snapshots
RESTORE_TAG = "nbmlops-restore"


class NotReproducibleError(NbmlopsError, ValueError):
    """The run cannot be re-executed: not a notebook or cell run, or what it needs was not recorded."""


@dataclass(frozen=True)
class MetricComparison:
    """One metric of the original run against the reproduction (``new`` is None when it is missing)."""

    name: str
    original: float
    new: float | None
    ok: bool


@dataclass(frozen=True)
class Reproduction:
    """The outcome of :func:`reproduce`.

    ``run_id`` is the new run compared with the original: the new notebook run, or for a cell run the
    new run of that cell (``execution.run_id`` is then the run of the rebuilt notebook). ``params``,
    ``data`` and ``environment`` list the differences found, one line each; ``notes`` say what could
    not be compared exactly.
    """

    original: RunRecord
    execution: NotebookRun
    run_id: str | None
    metrics: tuple[MetricComparison, ...]
    params: tuple[str, ...]
    data: tuple[str, ...]
    environment: tuple[str, ...]
    notes: tuple[str, ...]
    rtol: float
    atol: float

    @property
    def status(self) -> str:
        """Status of the new execution: FINISHED, FAILED or TIMEOUT."""
        return self.execution.status

    @property
    def reproduced(self) -> bool:
        """True when the new execution finished, was recorded, and every metric matched."""
        return self.status == "FINISHED" and self.run_id is not None and all(m.ok for m in self.metrics)

    @property
    def exit_code(self) -> int:
        """0 reproduced, 4 not."""
        return EXIT_REPRODUCED if self.reproduced else EXIT_NOT_REPRODUCED


def reproduce(
    run_id: str,
    *,
    rtol: float = 1e-9,
    atol: float = 0.0,
    settings: Settings | None = None,
    output: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    progress_bar: bool = False,
) -> Reproduction:
    """Re-execute run ``run_id`` headlessly and compare the new run with it.

    The kernel works in the original notebook's folder when it still exists (so relative data paths
    resolve), else in the project root; the notebook re-executed is kept in
    ``.nbmlops/reproduce/<run_id>/``.

    Args:
        run_id: a notebook run or a ``%%track`` cell run.
        rtol: relative tolerance for each metric.
        atol: absolute tolerance for each metric.
        settings: where the original run is read from (default: :func:`resolve_settings`); the new
            run is recorded where :func:`run_notebook` records.
        output: where to write the executed notebook (default: ``.nbmlops/outputs/``).
        timeout: seconds one cell may run.
        progress_bar: show papermill's progress bar.

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
        restored = _restore_data_parameters(original, parameters, cwd, workdir / "data", store, notes)
        defaults = check_parameters(notebook, {})
        parameters = {k: v for k, v in {**parameters, **restored}.items() if repr(defaults[k]) != repr(v)}
    else:
        notebook, parameters = _rebuilt_notebook(settings.tracking_uri, original, workdir, store, notes), {}
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
        notes += _restore_notes(execution.output)
    new_uri = resolve_settings().tracking_uri  # where run_notebook recorded the new run
    new = load_run(new_uri, execution.run_id) if execution.run_id else None
    if new is None:
        notes.append("the new run has not reached the tracking store (see the warnings above)")
    elif kind == "cell":
        new = _reproduced_cell(new_uri, new.run_id, run_id)
        if new is None:
            notes.append("the rebuilt notebook recorded no run of the tracked cell")
    differences = (
        _differences(settings.tracking_uri, original, new_uri, new, notes, set(restored)) if new else ((), (), ())
    )
    return Reproduction(
        original=original,
        execution=execution,
        run_id=new.run_id if new else None,
        metrics=tuple(
            _compare_metric(k, v, new.metrics if new else {}, rtol, atol) for k, v in sorted(original.metrics.items())
        ),
        params=differences[0],
        data=differences[1],
        environment=differences[2],
        notes=tuple(notes),
        rtol=rtol,
        atol=atol,
    )


def format_report(reproduction: Reproduction) -> str:
    """A readable report for the terminal: the verdict, the metrics table, then the differences."""
    r, original = reproduction, reproduction.original
    verdict = "REPRODUCED" if r.reproduced else "NOT REPRODUCED"
    kind = original.tags.get("nbmlops.kind", "")
    lines = [
        f"{verdict}: {kind} run {original.run_id} ({original.name}, experiment {original.experiment})",
        f"  new run: {r.run_id or 'none'} ({r.status}); executed notebook: {r.execution.output}",
    ]
    if r.execution.error:
        lines.append(f"  {r.execution.error}")
    if r.metrics:
        lines.append(f"metrics (rtol={r.rtol:g}, atol={r.atol:g}):")
        rows = [("", "name", "original", "new")]
        rows += [
            ("ok" if m.ok else "DIFF", m.name, repr(m.original), "missing" if m.new is None else repr(m.new))
            for m in r.metrics
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    else:
        lines.append("metrics: the original run has none")
    for title, items in (("params", r.params), ("data", r.data), ("environment", r.environment), ("notes", r.notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  {item}" for item in items]
    return "\n".join(line.rstrip() for line in lines)


def _notebook_input(uri: str, original: RunRecord, workdir: Path, notes: list[str]) -> tuple[Path, dict[str, Any]]:
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


def _restore_data_parameters(
    original: RunRecord, parameters: Mapping[str, Any], cwd: Path, folder: Path, store: SnapshotStore, notes: list[str]
) -> dict[str, str]:
    """For each parameter naming a data file the run recorded, whose content is no longer the
    recorded one (seen from the kernel's folder ``cwd``): the path of its snapshot, restored in ``folder``."""
    from nbmlops.data import fingerprint

    recorded = {name: digest for name, digest, context in original.datasets if context == "input"}
    restored: dict[str, str] = {}
    for name, value in parameters.items():
        digest = recorded.get(name)
        if digest is None or not isinstance(value, str):
            continue
        try:
            current: str | None = fingerprint(cwd / value)
        except (OSError, NbmlopsError):
            current = None
        if current == digest:
            continue
        what = f"{name}: {value} {'changed since the run' if current else 'is gone'}"
        state = snapshot_state(original.tags, digest)
        if state != STORED:
            notes.append(f"{what}; no snapshot of it ({state or 'none was recorded'})")
            continue
        target = folder / digest[:12] / Path(value).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            store.get(digest, target)
        except SnapshotError as exc:
            notes.append(f"{what}; its snapshot {digest[:12]} cannot be used: {exc}")
            continue
        restored[name] = str(target)
        notes.append(f"{what}; used snapshot {digest[:12]}")
    return restored


def _snapshotted_inputs(original: RunRecord, store: SnapshotStore, notes: list[str]) -> tuple[dict[str, str], bool]:
    """The cell run's input variables that have a usable snapshot (name -> fingerprint), fetched into
    the local store if need be; and whether every input has one."""
    inputs = {name: digest for name, digest, context in original.datasets if context == "input"}
    usable: dict[str, str] = {}
    for name, digest in inputs.items():
        state = snapshot_state(original.tags, digest)
        if state != STORED:
            if state:
                notes.append(f"input {name} has no snapshot ({state}): only the recorded history rebuilds it")
            continue
        try:
            if store.info(digest).kind != "file":  # a file logged by path is no variable to rebind
                usable[name] = digest
        except SnapshotError as exc:
            notes.append(f"input {name}: its snapshot {digest[:12]} cannot be used: {exc}")
    return usable, bool(inputs) and usable.keys() == inputs.keys()


def restore_inputs(namespace: dict[str, Any], inputs: Mapping[str, str], root: str | os.PathLike[str]) -> list[str]:
    """Rebind each variable of ``inputs`` (name -> fingerprint) from the snapshot store at ``root`` when
    it is missing from ``namespace`` or no longer has that fingerprint.

    Called by the cell a reproduction inserts before the tracked cell. Prints, and returns, one line
    per variable restored or that could not be.
    """
    from nbmlops.data import fingerprint

    store = SnapshotStore(Path(root))
    lines = []
    for name, digest in inputs.items():
        if name in namespace:
            try:
                current: str | None = fingerprint(namespace[name])
            except (TypeError, ValueError):  # UnsupportedDataError: not data any more
                current = None
            if current == digest:
                continue
            why = f"{name} differs from the run's input"
        else:
            why = f"{name} is missing"
        try:
            namespace[name] = store.load(digest)
        except SnapshotError as exc:
            lines.append(f"{why}; its snapshot {digest[:12]} cannot be used: {exc}")
        else:
            lines.append(f"{why}; restored from snapshot {digest[:12]}")
        print(lines[-1])
    return lines


def _restore_notes(executed: Path) -> list[str]:
    """What the restore cell of an executed rebuilt notebook printed, one note per line."""
    import nbformat

    try:
        notebook = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return []
    lines: list[str] = []
    for cell in notebook.cells:
        if RESTORE_TAG in cell.get("metadata", {}).get("tags", []):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    lines += [line for line in out.get("text", "").splitlines() if line.strip()]
                elif out.get("output_type") == "error":
                    lines.append(f"the restore cell failed: {out.get('ename')}: {out.get('evalue')}")
    return lines


def _rebuilt_notebook(uri: str, original: RunRecord, workdir: Path, store: SnapshotStore, notes: list[str]) -> Path:
    """A notebook of the kernel history that led to the cell, then a cell restoring inputs from their
    snapshots (when there are any), the tracked cell last."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
        found = download_artifact(uri, original.run_id, "code/history.json", tmp)
        history = json.loads(found.read_text()) if found else []
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
    inputs, covered = _snapshotted_inputs(original, store, notes)
    for cell, failed in zip(cells[:-1], raised):
        # it raised in the original session too: replay its effects, and go on as the user did; or
        # the restore cell below covers every input: a history cell that fails now cannot cost them
        if failed or (covered and not _LOADS_EXTENSION.search(cell.source)):
            cell.metadata["tags"] = ["raises-exception"]
    if inputs:
        restore = new_code_cell(
            "# nbmlops reproduce: the run's inputs, from their snapshots where missing or changed\n"
            "from nbmlops.runner.reproduce import restore_inputs\n"
            f"restore_inputs(globals(), {inputs!r}, {str(store.root)!r})\n"
            "del restore_inputs"
        )
        restore.metadata["tags"] = [RESTORE_TAG]
        cells.insert(len(cells) - 1, restore)
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    stem = Path(original.tags.get("nbmlops.notebook", "cell")).stem
    path = workdir / f"{stem}.ipynb"
    workdir.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def _original_folder(original: RunRecord, settings: Settings) -> Path | None:
    """The folder of the notebook the run came from, when it still exists (and is not a reproduction's)."""
    for tag in ("nbmlops.notebook", "mlflow.source.name"):
        path = Path(original.tags.get(tag, ""))
        if path.is_absolute() and path.parent.is_dir() and settings.state_dir not in path.parents:
            return path.parent
    return None


def _reproduced_cell(uri: str, notebook_run_id: str, original_id: str) -> RunRecord | None:
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


def _differences(
    old_uri: str, original: RunRecord, new_uri: str, new: RunRecord, notes: list[str], restored: set[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Params, data and environment differences; the datasets of a notebook run include its cells'.

    ``restored``: parameters given the path of a restored snapshot instead (the notes say so).
    """
    if original.tags.get("nbmlops.kind") == "notebook":
        before = _datasets([original, *child_runs(old_uri, original.run_id)])
        after = _datasets([new, *child_runs(new_uri, new.run_id)])
    else:
        before, after = _datasets([original]), _datasets([new])
    new_params = {k: original.params[k] if k in restored and k in original.params else v for k, v in new.params.items()}
    extra = sorted(set(new.metrics) - set(original.metrics))
    if extra:
        notes.append(f"metric(s) not in the original run: {', '.join(extra)}")
    return (
        tuple(_param_differences(original.params, new_params)),
        tuple(_data_differences(before, after)),
        tuple(_environment_differences(old_uri, original, new_uri, new)),
    )


def _compare_metric(name: str, old: float, new: Mapping[str, float], rtol: float, atol: float) -> MetricComparison:
    value = new.get(name)
    if value is None:
        return MetricComparison(name, old, None, False)
    if math.isnan(old) or math.isnan(value):
        ok = math.isnan(old) and math.isnan(value)
    else:
        ok = math.isclose(value, old, rel_tol=rtol, abs_tol=atol)
    return MetricComparison(name, old, value, ok)


def _param_differences(old: Mapping[str, str], new: Mapping[str, str]) -> Iterable[str]:
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            yield f"removed {name} (was {old[name]!r})"
        elif name not in old:
            yield f"added {name} = {new[name]!r}"
        elif old[name] != new[name]:
            yield f"changed {name}: {old[name]!r} -> {new[name]!r}"


def _datasets(runs: Iterable[RunRecord]) -> dict[str, set[str]]:
    """Dataset name -> the digests logged under it by these runs."""
    found: dict[str, set[str]] = {}
    for run in runs:
        for name, digest, _ in run.datasets:
            found.setdefault(name, set()).add(digest)
    return found


def _data_differences(old: Mapping[str, set[str]], new: Mapping[str, set[str]]) -> Iterable[str]:
    def short(digests: set[str]) -> str:
        return ", ".join(sorted(d[:12] for d in digests))

    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            yield f"input {name} was not logged by the new run (was {short(old[name])})"
        elif name not in old:
            yield f"input {name} is new: {short(new[name])}"
        elif old[name] != new[name]:
            yield f"input {name} changed: {short(old[name])} -> {short(new[name])}"


def _environment_differences(old_uri: str, old: RunRecord, new_uri: str, new: RunRecord) -> Iterable[str]:
    for label, tag in (("python", "nbmlops.python"), ("platform", "nbmlops.platform")):
        before, after = old.tags.get(tag), new.tags.get(tag)
        if before and after and before != after:
            yield f"{label}: {before} -> {after}"
    with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
        before_file = download_artifact(old_uri, old.run_id, "environment/requirements.txt", Path(tmp, "old"))
        after_file = download_artifact(new_uri, new.run_id, "environment/requirements.txt", Path(tmp, "new"))
        if before_file is None or after_file is None:
            yield "packages not compared: environment/requirements.txt was not recorded on both runs"
            return
        before_packages, after_packages = _packages(before_file.read_text()), _packages(after_file.read_text())
    changes = [
        f"package {name}: {before_packages.get(name, 'absent')} -> {after_packages.get(name, 'absent')}"
        for name in sorted(before_packages.keys() | after_packages.keys())
        if before_packages.get(name) != after_packages.get(name)
    ]
    yield from changes[:_MAX_PACKAGE_LINES]
    if len(changes) > _MAX_PACKAGE_LINES:
        yield f"... and {len(changes) - _MAX_PACKAGE_LINES} more package difference(s)"


def _packages(text: str) -> dict[str, str]:
    """``name==version`` lines as a mapping (a line without a version maps to "")."""
    pairs = (line.strip().partition("==") for line in text.splitlines() if line.strip())
    return {name.strip().lower(): version.strip() for name, _, version in pairs}
