"""Registered models and versions as text tables, for ``nbmlops models list|show``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from nbmlops.registry.models import ModelVersionInfo, RegisteredModelInfo

__all__ = ["format_models", "format_versions"]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M") if ms else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (header, *rows)]


def format_models(models: Sequence[RegisteredModelInfo]) -> str:
    """One line per registered model: name, latest version, aliases, last update."""
    if not models:
        return "no registered models yet (register one with %%track --register VAR NAME or nbmlops.register)"
    rows = [
        (
            m.name,
            str(m.latest_version or "-"),
            ", ".join(f"@{alias}={version}" for alias, version in sorted(m.aliases.items())) or "-",
            _when(m.updated),
        )
        for m in models
    ]
    return "\n".join(_table(("NAME", "LATEST", "ALIASES", "UPDATED (UTC)"), rows))


def format_versions(name: str, versions: Sequence[ModelVersionInfo]) -> str:
    """A model's versions (newest first) with aliases, source run and data, then its gate history."""
    lines = [f"model {name}: {len(versions)} version(s)", ""]
    rows = []
    for v in versions:
        features = v.tags.get("nbmlops.data.features", "")
        evaluation = ",".join(fp[:12] for fp in v.datasets("evaluation").values())
        last = v.decisions[-1] if v.decisions else None
        rows.append((
            str(v.version),
            _when(v.created),
            " ".join(f"@{a}" for a in v.aliases) or "-",
            v.run_id or "-",
            features[:12] or "-",
            evaluation or "-",
            (f"{'accepted' if last.accepted else 'refused'} @{last.alias}" if last else "-"),
        ))
    lines += _table(("VERSION", "CREATED (UTC)", "ALIASES", "RUN", "TRAINED ON", "EVALUATED ON", "LAST DECISION"),
                    rows)
    history = sorted(((d.at, v.version, d) for v in versions for d in v.decisions), key=lambda item: item[0])
    lines += ["", "gate history:" if history else "gate history: no promotion was attempted"]
    for at, version, decision in history:
        verdict = "ACCEPTED" if decision.accepted else "REFUSED"
        was = f" (was {decision.previous})" if decision.previous is not None else ""
        lines.append(f"  {at}  {decision.by}  version {version} -> @{decision.alias}{was}: {verdict}")
        for check in decision.checks:
            mark = "ok  " if check.get("passed") else "FAIL"
            lines.append(f"      {mark} {check.get('message', '')}")
        if not decision.accepted and not decision.checks:
            lines.append(f"      {decision.reason}")
        elif not decision.accepted and decision.reason.startswith("alias changed"):
            lines.append(f"      {decision.reason}")
    return "\n".join(lines)
