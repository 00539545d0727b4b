"""One execution of a tracked cell: what to record before the body runs and after it ends."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from nbmlops.config import CAPTURE_KINDS, Settings, resolve_settings
from nbmlops.tracking.capture import analyse_cell
from nbmlops.tracking.randomness import NONDETERMINISTIC_TAG, unseeded_randomness
from nbmlops.tracking.results import is_score_like, read_results
from nbmlops.tracking.run import Run, end_for, experiment_for
from nbmlops.tracking.session import get_session
from nbmlops.tracking.summary import Summary
from nbmlops.tracking.values import dataset_context, is_data, is_metric_value, number_list

__all__ = ["CellContext", "CellOptions", "TrackedCell"]

#: per cell key, the metrics and params of this kernel's last finished run of that cell (the summary's
#: deltas and changed params)
_previous_runs: dict[str, tuple[dict[str, float], dict[str, str]]] = {}
#: per tracking store, which run holds this kernel's history so far, up to which execution count, and a digest
#: of that history (see ``TrackedCell._log_code``)
_stored_history: dict[str, dict[str, Any]] = {}
_history_lock = threading.Lock()
#: variables an earlier cell recorded as scores or settings (name -> id of the value): a later cell
#: that reads them reads no data
_not_data: dict[str, int] = {}


@dataclass
class CellOptions:
    """The options of one ``%%track`` cell."""

    name: str | None = None
    experiment: str | None = None
    params: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    no_capture: frozenset[str] = frozenset()
    register: tuple[str, str] | None = None  # (variable, registered model name)


@dataclass
class CellContext:
    """Where the cell runs: its notebook, cell id, execution count, the kernel history before it, and
    which execution counts of that history raised."""

    notebook: str | None = None
    cell_id: str | None = None
    execution_count: int | None = None
    history: list[str] = field(default_factory=list)
    raised: frozenset[int] = frozenset()


def _history_digest(sources: list[str]) -> str:
    """What a kernel history holds, to tell whether a later history continues it (the same kernel, not a new one)."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(len(source).to_bytes(8, "little"))
        digest.update(source.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class TrackedCell:
    """Records one cell execution as one run: call :meth:`start`, run the body, then :meth:`finish`."""

    def __init__(
        self,
        source: str,
        tree: ast.Module,
        namespace: MutableMapping[str, Any],
        options: CellOptions,
        context: CellContext,
        settings: Settings | None = None,
    ) -> None:
        self.source = source
        self.tree = tree
        self.namespace = namespace
        self.options = options
        self.context = context
        self.settings = settings or resolve_settings(experiment=options.experiment)
        self.capture = set(self.settings.capture) - set(options.no_capture)
        self.analysis = analyse_cell(tree)
        self.cell_key = context.cell_id or options.name or hashlib.sha1(source.encode()).hexdigest()[:16]
        self.run: Run | None = None
        self._figures_before: set[int] = set()
        self._nondeterministic: list[str] = []

    def start(self) -> Run:
        """Start the run and record what is known before the body runs: params, code, input data."""
        session = get_session()
        session.redactor.learn_source(self.source)
        notebook = self.context.notebook
        source = (notebook, "NOTEBOOK") if notebook else ("interactive", "LOCAL")
        name = self.options.name or (f"cell {self.context.execution_count}" if self.context.execution_count else "cell")
        tags = {"nbmlops.kind": "cell", "nbmlops.cell_key": self.cell_key, **self.options.tags}
        if notebook:
            tags["nbmlops.notebook"] = notebook
        if self.context.cell_id:
            tags["nbmlops.cell_id"] = self.context.cell_id
        if self.context.execution_count is not None:
            tags["nbmlops.execution_count"] = str(self.context.execution_count)
        experiment = self.options.experiment or self.settings.experiment
        if experiment is None:
            experiment = experiment_for(notebook or "interactive", self.settings.root)
        capture = tuple(k for k in CAPTURE_KINDS if k in self.capture)
        settings = replace(self.settings, capture=capture)
        params = dict(self.analysis.literals) if "params" in self.capture else {}
        self.run = Run(name, experiment=experiment, params=params, tags=tags, source=source, settings=settings)
        self.run.start()
        if "code" in self.capture:
            session.background(self._log_code, session.redactor)
        for name in self._input_names():
            self._log_dataset(name, dataset_context(name))
        if "figures" in self.capture and "matplotlib.pyplot" in sys.modules:
            self._figures_before = set(sys.modules["matplotlib.pyplot"].get_fignums())
        return self.run

    def _log_dataset(self, name: str, context: str) -> None:
        assert self.run is not None
        try:
            self.run.log_dataset(self.namespace[name], name, context=context)
        except Exception as exc:  # one odd object must not cost the run
            sys.stderr.write(f"nbmlops: {name} not logged as a dataset: {type(exc).__name__}: {exc}\n")

    def _input_names(self) -> list[str]:
        """What the cell reads before binding it: named ``--data``, and data (not scores, not settings)."""
        ns = self.namespace
        names = [n for n in self.options.data if n in ns]
        if "data" in self.capture:
            for name in self.analysis.read:
                value = ns.get(name)
                if name in ns and is_data(value) and _not_data.get(name) != id(value) and not is_score_like(name, value):
                    names.append(name)
        return list(dict.fromkeys(names))

    def _log_code(self, redactor: Any) -> None:
        """The cell's code, and the kernel history it adds to what the last tracked cell of this kernel stored
        (``code/history.json``: the cells after that one, and which run holds the ones before; see
        :func:`~nbmlops.tracking.query.kernel_history`), so that a session's history is stored once in all."""
        assert self.run is not None
        self.run.log_text(redactor.redact_source(self.source), "code/cell.py")
        raised = self.context.raised
        history = self.context.history
        with _history_lock:
            last = _stored_history.setdefault(self.run.settings.tracking_uri, {})  # the chain stays in one store
            run_key, upto = last.get("run"), int(last.get("upto", 0))
            if not (run_key and 0 < upto < len(history) and _history_digest(history[: upto + 1]) == last["digest"]):
                run_key, upto = None, 0  # not the history the last run stored (another kernel): store it all
            cells = [
                {"n": n, "source": redactor.redact_source(src), **({"raised": True} if n in raised else {})}
                for n, src in enumerate(history)
                if n > upto
            ]
            if not cells:
                return
            last.update(run=self.run.key, upto=len(history) - 1, digest=_history_digest(history))
            stored = {"format": 2, "before": {"run_key": run_key, "upto": upto} if run_key else None, "cells": cells}
            self.run.log_text(json.dumps(stored, indent=1), "code/history.json")

    def finish(self, exc: BaseException | None) -> Summary:
        """Record what the body produced, end the run by how the body ended, and summarise it."""
        run = self.run
        assert run is not None
        registered = None
        try:
            if exc is None or not isinstance(exc, KeyboardInterrupt):
                self._capture_results(run)
            if exc is None and self.options.register:
                registered = self._register(run, *self.options.register)
        finally:
            end_for(run, exc)
        session = get_session()
        previous = _previous_runs.get(self.cell_key)
        summary = Summary(
            name=run.name or "cell",
            experiment=run.experiment,
            status=run.status or "FINISHED",
            duration_s=((run.ended or run.started) - run.started) / 1000,
            params=dict(run.params),
            metrics=dict(run.metrics),
            series={k: list(s.values) for k, s in run.series.items() if s.count > 1},
            steps={k: s.count for k, s in run.series.items() if s.count > 1},
            previous=previous[0] if previous else None,
            previous_params=previous[1] if previous else None,
            datasets=dict(run.datasets),
            outputs=dict(run.outputs),
            nondeterministic=list(self._nondeterministic),
            run_key=run.key,
            pending=session.pending,
            store_error=session.store_error,
            handed_off=session.handoff,
            registered=registered,
        )
        if run.status == "FINISHED":
            _previous_runs[self.cell_key] = (dict(run.metrics), dict(run.params))
        return summary

    def _register(self, run: Run, variable: str, name: str) -> str | None:
        """Stage the model in ``variable`` for registration as ``name``; a problem is a warning, not an error."""
        from nbmlops.tracking.staging import features_of, stage_model

        if variable not in self.namespace:
            sys.stderr.write(f"nbmlops: --register {variable}: no such variable after the cell; nothing registered\n")
            return None
        ns = self.namespace
        evaluation = {n: fp for n, fp in run.datasets.items() if dataset_context(n) == "evaluation"}
        training = {n: fp for n, fp in run.datasets.items() if n not in evaluation}
        # data the cell made itself (it read a file, say): named as training or evaluation data, it is that
        made = {n: fp for n, fp in run.outputs.items() if n not in run.datasets}
        for n, fp in made.items():
            if dataset_context(n) == "training":
                training[n] = fp
            elif dataset_context(n) == "evaluation":
                evaluation[n] = fp
        model = ns[variable]
        candidates = {n: ns[n] for n in {**training, **made} if n in ns and n not in evaluation}
        found = features_of(model, candidates)
        if found is not None and found[0] in made:  # the cell made the data the model was fitted on
            training.setdefault(found[0], made[found[0]])
        try:
            key = stage_model(model, name, run, features=found[1] if found else None, training=training,
                              evaluation=evaluation)
        except Exception as exc:  # the cell's work stands even when its model cannot be registered
            sys.stderr.write(f"nbmlops: --register {variable} {name}: {type(exc).__name__}: {exc}\n")
            return None
        return name if key is not None else None

    def previous_from_store(self, run_id: str, experiment_id: str) -> tuple[dict[str, float], dict[str, str]] | None:
        """Metrics and params of the previous finished run of this cell in the store (say, before a kernel
        restart), or None when there is none."""
        from nbmlops.backend.store import open_store

        store = open_store(self.settings.tracking_uri, self.settings.artifact_root)
        return store.previous_values(experiment_id, self.cell_key, run_id)

    def _capture_results(self, run: Run) -> None:
        """Params, metrics, series, output data, nondeterminism and figures, read after the body."""
        ns = self.namespace
        scores = frozenset(n for n, ident in _not_data.items() if n in ns and id(ns[n]) == ident)
        found = read_results(self.analysis, ns, self.capture, scores)
        params = {**found.params}
        for name in self.options.params:
            if name in ns:
                params[name] = ns[name]
                found.metrics.pop(name, None)
        for name in self.options.metrics:
            value: Any = ns.get(name)
            numbers = number_list(value)
            if name in ns and is_metric_value(value):
                found.metrics[name] = float(value)
            elif numbers is not None:
                found.series[name] = numbers
            else:
                sys.stderr.write(f"nbmlops: --metrics {name}: not a number after the cell, not logged\n")
        params.update(found.estimator_params)
        run.log_params({k: v for k, v in params.items() if k not in run.params})
        run.log_metrics({k: v for k, v in found.metrics.items() if k not in run.metrics})
        for key, values in found.series.items():
            if key not in run.metrics:
                run.log_metric_series(key, values)
        for name in found.not_data:
            _not_data[name] = id(ns[name])
        for name in dict.fromkeys([*self.options.data, *found.outputs]):
            if name in ns and name not in run.outputs and (name not in run.datasets or name in self.analysis.assigned):
                self._log_dataset(name, "output")
        if self.capture:  # what the summary and reproduce say about a changed result
            self._nondeterministic = unseeded_randomness(self.analysis, ns, [*self.context.history, self.source])
            if self._nondeterministic:
                run.set_tags({NONDETERMINISTIC_TAG: "; ".join(self._nondeterministic)[:5000]})
        if "figures" in self.capture and "matplotlib.pyplot" in sys.modules:
            plt = sys.modules["matplotlib.pyplot"]
            for number in sorted(set(plt.get_fignums()) - self._figures_before):
                run.log_figure(plt.figure(number), f"figures/figure_{number}.png")
