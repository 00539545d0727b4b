"""What changed between a run and its re-execution besides the results, and the likely cause of a
difference (``nbmlops reproduce``).

The differences are read from what both runs recorded: params, input data fingerprints (dataset
inputs of any context but ``output``), environment (``nbmlops.python``, ``nbmlops.platform``,
``environment/requirements.txt``). The likely cause of a differing cell is named from the same
record, likeliest first: unseeded randomness (the ``nbmlops.nondeterministic`` tag of that cell,
or of a cell before it), changed input data, a changed environment, changed code (the cell's
source, its params, the git commit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from nbmlops.runner.compare import CellComparison
from nbmlops.tracking.context import parse_packages
from nbmlops.tracking.query import artifact_text
from nbmlops.tracking.randomness import NONDETERMINISTIC_TAG
from nbmlops.tracking.search import RunRow

__all__ = [
    "data_differences",
    "environment_differences",
    "likely_causes",
    "param_differences",
]

_MAX_PACKAGE_LINES = 30
_GIT_COMMIT_TAG = "mlflow.source.git.commit"
_NOT_COMPARED = "packages not compared"


def param_differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """One line per param removed, added or changed."""
    lines = []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            lines.append(f"removed {name} (was {old[name]!r})")
        elif name not in old:
            lines.append(f"added {name} = {new[name]!r}")
        elif old[name] != new[name]:
            lines.append(f"changed {name}: {old[name]!r} -> {new[name]!r}")
    return lines


def data_differences(old: Iterable[RunRow], new: Iterable[RunRow]) -> list[str]:
    """One line per input dataset name whose fingerprints differ between the two sets of runs."""
    before, after = _inputs(old), _inputs(new)

    def short(digests: set[str]) -> str:
        return ", ".join(sorted(d[:12] for d in digests))

    lines = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            lines.append(f"input {name} was not logged by the new run (was {short(before[name])})")
        elif name not in before:
            lines.append(f"input {name} is new: {short(after[name])}")
        elif before[name] != after[name]:
            lines.append(f"input {name} changed: {short(before[name])} -> {short(after[name])}")
    return lines


def environment_differences(old_uri: str, old: RunRow, new_uri: str, new: RunRow) -> list[str]:
    """Python version, platform and package differences (at most 30 package lines, then a count)."""
    lines = []
    for label, tag in (("python", "nbmlops.python"), ("platform", "nbmlops.platform")):
        before, after = old.tags.get(tag), new.tags.get(tag)
        if before and after and before != after:
            lines.append(f"{label}: {before} -> {after}")
    before_text = artifact_text(old_uri, old.run_id, "environment/requirements.txt")
    after_text = artifact_text(new_uri, new.run_id, "environment/requirements.txt")
    if before_text is None or after_text is None:
        return [*lines, f"{_NOT_COMPARED}: environment/requirements.txt was not recorded on both runs"]
    before_packages, after_packages = parse_packages(before_text), parse_packages(after_text)
    changes = [
        f"package {name}: {before_packages.get(name, 'absent')} -> {after_packages.get(name, 'absent')}"
        for name in sorted(before_packages.keys() | after_packages.keys())
        if before_packages.get(name) != after_packages.get(name)
    ]
    lines += changes[:_MAX_PACKAGE_LINES]
    if len(changes) > _MAX_PACKAGE_LINES:
        lines.append(f"... and {len(changes) - _MAX_PACKAGE_LINES} more package difference(s)")
    return lines


def likely_causes(
    cells: Sequence[CellComparison],
    differing: int,
    data: Sequence[str],
    environment: Sequence[str],
    source: Callable[[RunRow], str | None],
) -> list[str]:
    """The likely causes of the difference in ``cells[differing]``, likeliest first (never empty).

    ``data`` and ``environment`` are the run-level differences; ``source(run)`` a cell run's code.
    """
    cell = cells[differing]
    causes = []
    flagged = next((run.tags[NONDETERMINISTIC_TAG] for run in (cell.original, cell.new) if run and NONDETERMINISTIC_TAG
                    in run.tags), None)  # fmt: skip
    if flagged:
        causes.append(f"an unseeded estimator or random draw in this cell: {flagged}")
    else:
        causes += [
            f"an unseeded estimator or random draw in an earlier cell, {earlier.label}: {tag}"
            for earlier in cells[:differing]
            if (tag := earlier.original.tags.get(NONDETERMINISTIC_TAG))
        ]
    changed_inputs = data_differences([cell.original], [cell.new]) if cell.new is not None else []
    if changed_inputs or data:
        causes.append("changed input data: " + "; ".join(changed_inputs or data))
    changed_environment = [line for line in environment if not line.startswith(_NOT_COMPARED)]
    if changed_environment:
        causes.append("a changed environment: " + "; ".join(changed_environment[:3]))
    if cell.new is not None:
        causes += _code_changes(cell.original, cell.new, source)
    return causes or [
        "nothing recorded explains it: no unseeded randomness was flagged, and inputs, environment and code are "
        "unchanged; look for what the run does not record (files read outside tracked inputs, the clock, services)"
    ]


def _code_changes(old: RunRow, new: RunRow, source: Callable[[RunRow], str | None]) -> list[str]:
    causes = []
    if old.tags.get("nbmlops.kind") == "cell":
        before, after = source(old), source(new)
        if before is not None and after is not None and before != after:
            causes.append("changed code: the cell's source differs")
    params = param_differences(old.params, new.params)
    if params:
        causes.append("changed code or settings: params " + "; ".join(params[:3]))
    commit, now = old.tags.get(_GIT_COMMIT_TAG), new.tags.get(_GIT_COMMIT_TAG)
    if commit and now and commit != now:
        causes.append(f"changed code: git commit {commit[:12]} -> {now[:12]}")
    return causes


def _inputs(runs: Iterable[RunRow]) -> dict[str, set[str]]:
    """Input dataset name -> the digests logged under it (outputs left out: they are compared as results)."""
    found: dict[str, set[str]] = {}
    for run in runs:
        for name, digest, context in run.datasets:
            if context != "output":
                found.setdefault(name, set()).add(digest)
    return found
