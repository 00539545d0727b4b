"""Runs side by side: metrics, params, dataset fingerprints, environment and cell code, differences marked.

Each field holds one value per run; a field whose values are not all equal is a difference. The code of
each run (its ``code/cell.py``) is diffed against the first run's. The table answers first: metrics, then
params, then data, the runs' own facts and the environment; by default only the fields that differ; each run's
column is headed by its name, start time and short id.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbmlops.tracking import search
from nbmlops.tracking.context import parse_packages
from nbmlops.tracking.search import RunRow
from nbmlops.widgets.format import (
    STYLE,
    cell_label,
    duration,
    esc,
    is_user_param,
    number,
    run_heading,
    status_badge,
    timestamp,
)

__all__ = ["CodeDiff", "Comparison", "Field", "compare_runs"]

CODE_ARTIFACT = "code/cell.py"
REQUIREMENTS_ARTIFACT = "environment/requirements.txt"
_ENVIRONMENT_TAGS = {
    "python": "nbmlops.python",
    "platform": "nbmlops.platform",
    "git commit": "mlflow.source.git.commit",
    "git branch": "mlflow.source.git.branch",
    "git dirty": "nbmlops.git.dirty",
}
_SECTIONS = ("metrics", "params", "data", "run", "environment")


@dataclass(frozen=True)
class Field:
    """One compared field: ``section`` (run, params, metrics, data, environment), ``key``, a value per run.

    ``compared`` is False for fields shown for reference only (the run id, the start time), never marked.
    """

    section: str
    key: str
    values: tuple[str, ...]
    compared: bool = True

    @property
    def differs(self) -> bool:
        return self.compared and len(set(self.values)) > 1


@dataclass(frozen=True)
class CodeDiff:
    """The cell source of run ``other`` against that of run ``base``, as unified-diff lines.

    ``lines`` holds ``(kind, text)``: kind ``+`` added, ``-`` removed, `` `` context, ``@`` a hunk header.
    ``note`` says why there is no diff (no code recorded).
    """

    base: str
    other: str
    lines: tuple[tuple[str, str], ...]
    note: str = ""

    @property
    def changed(self) -> bool:
        return any(kind in "+-" for kind, _ in self.lines)


@dataclass(frozen=True)
class Comparison:
    """Two or more runs side by side."""

    runs: tuple[RunRow, ...]
    fields: tuple[Field, ...]
    code: tuple[CodeDiff, ...]

    def differences(self) -> list[Field]:
        """The fields whose values differ between the runs."""
        return [f for f in self.fields if f.differs]

    def field(self, section: str, key: str) -> Field:
        """The field ``key`` of ``section``; KeyError when no run has it."""
        for candidate in self.fields:
            if candidate.section == section and candidate.key == key:
                return candidate
        raise KeyError(f"{section}/{key}")

    def to_html(self, only_differences: bool = True) -> str:
        """An escaped HTML table (class ``nbmlops-compare-table``): a column per run headed by its name, start
        time and short id; metrics, then params, data, run and environment; differing rows marked
        ``nbmlops-differs``, and with ``only_differences`` (the default) no other row. Then the code diffs
        (class ``nbmlops-code-diff``)."""
        columns = len(self.runs) + 1
        head = "<th></th>" + "".join(
            f"<th title='{esc(r.run_id)}'>{run_heading(r.name, r.run_id, r.start_time)}</th>" for r in self.runs
        )
        body = []
        for section in _SECTIONS:
            fields = [f for f in self.fields if f.section == section and (f.differs or not only_differences)]
            if not fields:
                continue
            body.append(f"<tr><td class='nbmlops-section' colspan='{columns}'>{esc(section)}</td></tr>")
            for f in fields:
                css = " class='nbmlops-differs'" if f.differs else ""
                shown = [status_badge(v) if (section, f.key) == ("run", "status") else esc(v) if v != ""
                         else "<span class='nbmlops-muted' title='not recorded'>&mdash;</span>" for v in f.values]
                body.append(f"<tr{css}><td class='nbmlops-key'>{esc(f.key)}</td>"
                            + "".join(f"<td>{v}</td>" for v in shown) + "</tr>")
        differing = len(self.differences())
        if not body:
            body.append(f"<tr><td colspan='{columns}' class='nbmlops-empty'>These runs have the same metrics, params, "
                        "data and environment.</td></tr>")
        diffs = "".join(_diff_html(diff) for diff in self.code)
        summary = f"{differing} of {len(self.fields)} fields differ" + (
            "; showing only those" if only_differences else "")
        return (
            f"{STYLE}<div class='nbmlops-view'><div class='nbmlops-muted'>{esc(summary)}</div>"
            f"<div class='nbmlops-scroll'><table class='nbmlops-compare-table{' nbmlops-only-differences' if only_differences else ''}'>"
            f"<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{diffs}</div>"
        )


def compare_runs(tracking_uri: str, run_ids: Sequence[str]) -> Comparison:
    """Read the runs ``run_ids`` (with their cell code and requirements) and compare them, in that order."""
    runs = tuple(search.get_rows(tracking_uri, list(dict.fromkeys(run_ids))))
    code = [search.read_artifact_text(tracking_uri, r.run_id, CODE_ARTIFACT) for r in runs]
    requirements = [search.read_artifact_text(tracking_uri, r.run_id, REQUIREMENTS_ARTIFACT) for r in runs]
    fields = _run_fields(runs) + _keyed("params", [r.params for r in runs], str)
    fields += _keyed("metrics", [r.metrics for r in runs], number)
    fields += _keyed("data", [{f"{n} ({c or 'input'})": d for n, d, c in r.datasets} for r in runs], str)
    fields += _environment(runs, requirements)
    diffs = tuple(_code_diff(runs[0], code[0], other, text) for other, text in zip(runs[1:], code[1:]))
    return Comparison(runs, tuple(fields), diffs)


def _run_fields(runs: Sequence[RunRow]) -> list[Field]:
    rows = {
        "run id": [r.run_id for r in runs],
        "name": [r.name for r in runs],
        "status": [r.status for r in runs],
        "kind": [r.tags.get("nbmlops.kind", "") for r in runs],
        "cell": [cell_label(r) or r.cell for r in runs],
        "start": [timestamp(r.start_time) for r in runs],
        "duration": [duration(r.duration_s()) for r in runs],
    }
    return [Field("run", key, tuple(values), compared=key not in ("run id", "start")) for key, values in rows.items()]


def _keyed(section: str, maps: Sequence[Mapping[str, Any]], show: Callable[[Any], str]) -> list[Field]:
    """A field per key of ``maps``; params the user set before estimator params (see ``is_user_param``)."""
    keys = sorted({key for mapping in maps for key in mapping},
                  key=lambda key: (section == "params" and not is_user_param(key), key))
    return [Field(section, key, tuple(show(m[key]) if key in m else "" for m in maps)) for key in keys]


def _environment(runs: Sequence[RunRow], requirements: Sequence[str | None]) -> list[Field]:
    fields = [
        Field("environment", label, tuple(r.tags.get(tag, "") for r in runs))
        for label, tag in _ENVIRONMENT_TAGS.items()
        if any(tag in r.tags for r in runs)
    ]
    packages = [parse_packages(text) for text in requirements]
    if any(packages):
        names = sorted({name for p in packages for name in p})
        changed = [n for n in names if len({p.get(n, "") for p in packages}) > 1]
        for name in changed:
            fields.append(Field("environment", f"package {name}", tuple(p.get(name, "") for p in packages)))
        fields.append(Field("environment", "packages installed", tuple(str(len(p)) for p in packages), compared=False))
    return fields


def _code_diff(base: RunRow, base_code: str | None, other: RunRow, other_code: str | None) -> CodeDiff:
    names = (base.name or base.run_id[:8], other.name or other.run_id[:8])
    if base_code is None or other_code is None:
        missing = [n for n, c in zip(names, (base_code, other_code)) if c is None]
        return CodeDiff(*names, (), f"no cell code recorded for {', '.join(missing)}")
    lines = []
    for line in difflib.unified_diff(base_code.splitlines(), other_code.splitlines(), names[0], names[1], lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        kind = "@" if line.startswith("@@") else line[:1] or " "
        lines.append((kind, line if kind == "@" else line[1:]))
    return CodeDiff(*names, tuple(lines), "" if lines else "identical code")


def _diff_html(diff: CodeDiff) -> str:
    title = f"code: {diff.other} against {diff.base}"
    if not diff.lines:
        return f"<div><b>{esc(title)}</b> <span class='nbmlops-muted'>{esc(diff.note)}</span></div>"
    css = {"+": "nbmlops-add", "-": "nbmlops-del", "@": "nbmlops-hunk", " ": ""}
    mark = {"+": "+", "-": "-", "@": "", " ": " "}
    lines = "\n".join(
        f"<span class='{css[kind]}'>{esc(mark[kind] + text)}</span>" for kind, text in diff.lines
    )
    return f"<div><b>{esc(title)}</b><pre class='nbmlops-code-diff'>{lines}</pre></div>"
