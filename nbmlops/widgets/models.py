"""Registered models as plain state: models, versions, aliases, gate history, and a two-step promotion.

A promotion is asked for (:meth:`ModelsView.request_promotion` checks the request and returns what would
happen, to confirm), then confirmed (:meth:`ModelsView.confirm_promotion` runs
:func:`nbmlops.registry.promote`, the same gates as ``nbmlops models promote``) or cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nbmlops.config import Settings
from nbmlops.exceptions import NbmlopsError
from nbmlops.registry import (
    ModelNotFoundError,
    ModelReference,
    ModelVersionInfo,
    PromotionRefused,
    RegisteredModelInfo,
    get_version,
    list_models,
    list_versions,
    promote,
)
from nbmlops.registry.models import check_alias, registry_client
from nbmlops.registry.promote import Promotion, parse_beat
from nbmlops.runner.gates import parse_gate
from nbmlops.tracking import search
from nbmlops.widgets.format import STYLE, esc, number, table, timestamp

__all__ = ["ModelsView", "PromotionOutcome", "PromotionRequest"]

VERSION_METRICS = 6  # metric columns in the versions table


@dataclass(frozen=True)
class PromotionRequest:
    """A promotion waiting for confirmation."""

    name: str
    version: int
    alias: str
    gates: tuple[str, ...]
    beat: tuple[str, ...]
    allow_new_evaluation_data: bool
    current: int | None  # the version the alias points at now

    def describe(self) -> str:
        """What confirming does, in one paragraph of plain text."""
        now = f"now version {self.current}" if self.current is not None else "unset now"
        checks = ["the source run FINISHED", *(f"gate {g}" for g in self.gates), *(f"beat {b}" for b in self.beat)]
        if self.allow_new_evaluation_data:
            checks.append("new evaluation data accepted")
        return (f"Point {self.name}@{self.alias} ({now}) at version {self.version}, if these checks pass: "
                f"{'; '.join(checks)}. Confirm?")


@dataclass(frozen=True)
class PromotionOutcome:
    """What a confirmed promotion did: ``accepted``, and the reason (every check) either way."""

    accepted: bool
    message: str
    promotion: Promotion | None = None

    def to_html(self) -> str:
        colour = "finished" if self.accepted else "failed"
        verdict = "PROMOTED" if self.accepted else "REFUSED"
        checks = ""
        if self.promotion is not None and self.promotion.checks:
            items = "".join(
                f"<li>{'ok' if c.passed else 'FAIL'}: {esc(c.message)}</li>" for c in self.promotion.checks
            )
            checks = f"<ul>{items}</ul>"
        return (f"{STYLE}<div class='nbmlops-view nbmlops-verdict'><b class='nbmlops-run-status nbmlops-run-status-{colour}'>"
                f"{verdict}</b> "
                f"<span class='nbmlops-reason'>{esc(self.message)}</span>{checks}</div>")


class ModelsView:
    """The model registry of the store in ``settings``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.pending: PromotionRequest | None = None

    def models(self) -> list[RegisteredModelInfo]:
        """Every registered model, by name."""
        return list_models(self.settings)

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """The versions of model ``name``, newest first (with their aliases and decisions)."""
        return list_versions(name, self.settings)

    def request_promotion(
        self,
        name: str,
        version: int,
        alias: str,
        gates: Sequence[str] = (),
        beat: Sequence[str] = (),
        allow_new_evaluation_data: bool = False,
    ) -> str:
        """Check a promotion request and keep it for :meth:`confirm_promotion`; returns the question to confirm.

        A malformed alias, gate or beat, or a version that does not exist, raises an
        :class:`~nbmlops.exceptions.NbmlopsError` saying what is wrong (and nothing is kept).
        """
        self.pending = None
        alias = check_alias(alias.strip())
        gates = tuple(str(parse_gate(g)) for g in gates if g.strip())
        beats = tuple(str(parse_beat(b.strip())) for b in beat if b.strip())
        client = registry_client(self.settings)
        get_version(ModelReference(name, version=int(version)), client=client)
        try:
            current: int | None = get_version(ModelReference(name, alias=alias), client=client).version
        except ModelNotFoundError:
            current = None
        self.pending = PromotionRequest(name, int(version), alias, gates, beats, allow_new_evaluation_data, current)
        return self.pending.describe()

    def confirm_promotion(self) -> PromotionOutcome:
        """Run the pending promotion through every gate; the outcome says whether the alias moved and why."""
        request, self.pending = self.pending, None
        if request is None:
            return PromotionOutcome(False, "nothing to confirm: ask for a promotion first")
        try:
            promotion = promote(
                f"{request.name}/{request.version}", request.alias, gates=request.gates, beat=request.beat,
                allow_new_evaluation_data=request.allow_new_evaluation_data, settings=self.settings,
            )
        except PromotionRefused as refused:
            return PromotionOutcome(False, refused.promotion.reason, refused.promotion)
        except NbmlopsError as exc:
            return PromotionOutcome(False, str(exc))
        return PromotionOutcome(True, promotion.reason, promotion)

    def cancel_promotion(self) -> None:
        self.pending = None

    def models_html(self, models: Sequence[RegisteredModelInfo] | None = None) -> str:
        """The registered models (by default, all of them) as an escaped table (class ``nbmlops-models-table``)."""
        models = self.models() if models is None else models
        if not models:
            return (f"{STYLE}<div class='nbmlops-view nbmlops-muted'>no registered models yet (register one with "
                    "%%track --register VAR NAME or nbmlops.register)</div>")
        rows = [
            (esc(m.name), esc(m.latest_version or "-"),
             esc(", ".join(f"@{a}={v}" for a, v in sorted(m.aliases.items())) or "-"), esc(timestamp(m.updated)))
            for m in models
        ]
        return f"{STYLE}<div class='nbmlops-view'>{table(('model', 'latest', 'aliases', 'updated'), rows, 'nbmlops-models-table')}</div>"

    def versions_html(self, name: str, versions: Sequence[ModelVersionInfo] | None = None) -> str:
        """A model's versions (by default, read now), each with the metrics of the run that made it (so a
        promotion is not decided blind), and its gate history (every decision with its checks), escaped."""
        versions = self.versions(name) if versions is None else versions
        runs = self.source_runs(versions)
        counts: dict[str, int] = {}
        for source in runs.values():
            for key in source.metrics:
                counts[key] = counts.get(key, 0) + 1
        metrics = sorted(counts, key=lambda key: (-counts[key], key))[:VERSION_METRICS]
        rows = []
        for v in versions:
            last = v.decisions[-1] if v.decisions else None
            run = runs.get(v.run_id or "")
            run_cell = esc(f"{run.name} · {run.run_id[:8]}" if run is not None else (v.run_id or "-")[:8] or "-")
            rows.append((
                esc(v.version), esc(timestamp(v.created)), esc(" ".join(f"@{a}" for a in v.aliases) or "-"),
                *(esc(number(run.metrics.get(m))) if run is not None else "" for m in metrics),
                run_cell, esc(v.status),
                esc(f"{'accepted' if last.accepted else 'refused'} @{last.alias}" if last else "-"),
            ))
        header = ("version", "created", "aliases", *metrics, "run", "status", "last decision")
        history = sorted(((d.at, v.version, d) for v in versions for d in v.decisions), key=lambda item: item[0],
                         reverse=True)
        items = []
        for at, version, decision in history:
            verdict = "ACCEPTED" if decision.accepted else "REFUSED"
            was = f" (was {decision.previous})" if decision.previous is not None else ""
            checks = "".join(
                f"<li>{'ok' if c.get('passed') else 'FAIL'}: {esc(c.get('message', ''))}</li>" for c in decision.checks
            )
            reason = "" if decision.accepted else f"<div class='nbmlops-reason'>{esc(decision.reason)}</div>"
            items.append(f"<li>{esc(at)} {esc(decision.by)}: version {esc(version)} -&gt; @{esc(decision.alias)}"
                         f"{esc(was)}: <b>{verdict}</b>{reason}<ul>{checks}</ul></li>")
        gate_history = (f"<ul class='nbmlops-gate-history'>{''.join(items)}</ul>" if items
                        else "<div class='nbmlops-muted'>no promotion was attempted</div>")
        return (f"{STYLE}<div class='nbmlops-view'><b>{esc(name)}</b>: {len(versions)} version(s)"
                f"<div class='nbmlops-scroll'>{table(header, rows, 'nbmlops-versions-table')}</div>"
                f"<div><b>gate history</b></div>{gate_history}</div>")

    def source_runs(self, versions: Sequence[ModelVersionInfo]) -> dict[str, search.RunRow]:
        """The runs the versions came from (those still in the store), by run id: one read for all of them."""
        run_ids = list(dict.fromkeys(v.run_id for v in versions if v.run_id))
        if not run_ids:
            return {}
        return {row.run_id: row for row in search.get_rows(self._tracking_uri(), run_ids)}

    def _tracking_uri(self) -> str:
        from nbmlops.config import resolve_settings

        return (self.settings or resolve_settings()).tracking_uri
