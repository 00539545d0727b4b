"""Drift monitoring of a registered model, and retraining when its data has moved.

``monitor("iris@champion", "live.csv")`` compares the new data with the data the version was trained on
(its snapshot when one is stored, else the profile recorded with the training run), feature by feature
(PSI for every column, KS for numeric ones) and, when the reference rows are at hand, the model's
predictions on both. The result is a monitoring run (``nbmlops.kind=monitor``: metrics per feature, the
HTML report as an artifact). The model is loaded only through :mod:`nbmlops.registry.safe_load`: its
artifact's SHA-256, the paths of its MLmodel file and its serialization are checked before anything in it is
read as a model. With ``retrain=NOTEBOOK``, a drifted result executes the notebook headlessly;
the version it registers under the same name gets the ``challenger`` alias if its gates pass.

``monitor("iris@champion", traffic=True, since="24h")`` monitors the live traffic the version answered instead
(:mod:`nbmlops.registry.traffic_monitor`): the drift of its logged inputs, of its logged predictions against its
predictions on the training rows, plus its latency, error rate, online metrics where feedback exists and its
agreement with the version shadowing it, all recorded on the monitoring run; ``traffic_gates`` are conditions on
those metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nbmlops.backend import registry as mlflow_registry
from nbmlops.backend.models import ModelInputError, download_model, input_columns
from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import ConfigError, ModelSchemaError, MonitoringDataError
from nbmlops.registry.models import (
    FEATURES_TAG,
    ModelVersionInfo,
    get_version,
    parse_reference,
    registry_client,
)
from nbmlops.registry.safe_load import CheckedModel, check_model
from nbmlops.registry.traffic_monitor import DEFAULT_SINCE, LiveTraffic, live_traffic
from nbmlops.runner.gates import GateResult, evaluate_gates, gate_tags, parse_gate

__all__ = ["ModelSchemaError", "MonitorResult", "Retraining", "monitor", "read_data"]

CHALLENGER = "challenger"
_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet", ".json": "read_json",
            ".jsonl": "read_json", ".feather": "read_feather"}


@dataclass(frozen=True)
class Retraining:
    """What ``--retrain`` did: the headless run, the version it registered, and the challenger promotion."""

    notebook: str
    run_id: str | None
    status: str
    version: ModelVersionInfo | None = None
    promoted: bool = False
    message: str = ""


@dataclass(frozen=True)
class MonitorResult:
    """One monitoring check."""

    model: ModelVersionInfo
    data: str
    report: Any  # nbmlops.data.DriftReport
    run_key: str
    run_id: str | None
    html_path: Path
    retraining: Retraining | None = None
    notes: tuple[str, ...] = ()
    live: LiveTraffic | None = None
    gates: tuple[GateResult, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 within threshold; 5 drifted; 1 the retraining failed; 3 its model failed the challenger gates, or a
        gate on the monitoring metrics failed."""
        if self.retraining is not None and self.retraining.status != "FINISHED":
            return 1
        if self.retraining is not None and self.retraining.version is not None and not self.retraining.promoted:
            return 3
        if any(not g.passed for g in self.gates):
            return 3
        return 5 if self.report.drifted else 0

    def format(self) -> str:
        """The verdict, the feature table, notes, the retraining, and where the report is."""
        r = self.report
        verdict = (f"DRIFTED: {len(r.drifted_features)} feature(s)" + (" and the predictions" if r.prediction is not
                   None and r.prediction.drifted else "") if r.drifted else "OK: no drift")
        lines = [f"{verdict} (PSI threshold {r.threshold}) for {self.model} on {self.data}", r.format_table()]
        if self.live is not None:
            lines += self.live.lines()
        lines += [f"{'ok  ' if g.passed else 'FAIL'} {g.message}" for g in self.gates]
        lines += [f"note: {note}" for note in self.notes]
        if self.retraining is not None:
            t = self.retraining
            lines.append(f"retraining: {t.notebook} [{t.status}]" + (f" run {t.run_id}" if t.run_id else ""))
            if t.message:
                lines.append(f"  {t.message}")
        lines.append(f"report: {self.html_path}")
        return "\n".join(lines)


def read_data(path: str | os.PathLike[str]) -> Any:
    """A DataFrame from a CSV, Parquet, JSON (lines for .jsonl) or Feather file."""
    import pandas as pd

    file = Path(path)
    reader = _READERS.get(file.suffix.lower())
    if reader is None:
        raise MonitoringDataError(f"{path}: cannot read {file.suffix or 'files without a suffix'}; "
                                  f"use one of {', '.join(sorted(_READERS))}")
    if not file.is_file():
        raise MonitoringDataError(f"{path}: {'not a file' if file.exists() else 'no such file'}")
    kwargs = {"lines": True} if file.suffix.lower() == ".jsonl" else {}
    try:
        return getattr(pd, reader)(file, **kwargs)
    except (ValueError, OSError, ImportError) as exc:
        raise MonitoringDataError(f"{path}: cannot be read: {exc}") from None


def monitor(
    model: str,
    data: str | os.PathLike[str] | Any = None,
    *,
    traffic: bool = False,
    since: str | datetime | timedelta | None = DEFAULT_SINCE,
    threshold: float = 0.2,
    bins: int = 10,
    retrain: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    gates: Sequence[str] = (),
    traffic_gates: Sequence[str] = (),
    report: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    settings: Settings | None = None,
) -> MonitorResult:
    """Compare ``data`` (a path or a DataFrame), or with ``traffic=True`` the live traffic the version answered,
    with the training data of ``model`` (``NAME@alias`` or ``NAME/VERSION``) and record the result as a
    monitoring run.

    Args:
        traffic: monitor the requests the version answered (logged by ``nbmlops serve``, delivered to the store)
            instead of ``data``: their inputs' drift, the drift of the logged predictions against the model's
            predictions on the training rows, and the live metrics of
            :meth:`~nbmlops.registry.traffic_monitor.LiveTraffic.metrics` (``latency_p95_ms``, ``error_rate``,
            ``online_accuracy`` or ``online_mae``/``online_rmse`` where feedback exists, ``shadow_agreement``
            when another version shadowed it, ...).
        since: with ``traffic``, the window: a duration back from now (``30m``, ``24h``, ``7d``), a time (ISO
            text or ``datetime``), or None for all logged traffic.
        traffic_gates: conditions on the monitoring run's metrics (the drift metrics and, with ``traffic``, the
            live ones), such as ``"latency_p95_ms < 50 and error_rate < 0.01"``; a failed one makes
            :attr:`MonitorResult.exit_code` 3.
        threshold: a feature (or the predictions) drifted when its PSI is above this.
        bins: PSI bins for numeric columns (at the reference's quantiles).
        retrain: a notebook to execute headlessly when drift is found; it should register a new version of
            the same model (``%%track --register VAR NAME``), which then gets the ``challenger`` alias if
            ``gates`` pass on its run.
        parameters: the retraining notebook's parameters.
        report: where to write the HTML report (default: ``.nbmlops/monitor/``); it is also a run artifact.
        trust_pickle: trust this model explicitly (as naming it in the ``trusted_models`` setting does): it may
            use pickle, skops types outside nbmlops' list, or lack a recorded SHA-256.

    Raises:
        ModelNotFoundError, ModelSchemaError, MonitoringDataError (also: no logged traffic of the version in the
        window), DriftError (incompatible column types), UnsafeModelError (the model cannot be loaded safely),
        ConfigError (the report cannot be written there), GateSyntaxError (a malformed gate).
    """
    from nbmlops.data import compare, compare_predictions

    if not threshold > 0:
        raise MonitoringDataError(f"threshold must be a number > 0, got {threshold}")
    if traffic == (data is not None):
        raise MonitoringDataError("monitor the data or the live traffic: give one of DATA and --traffic")
    parsed_gates = [parse_gate(g) for g in traffic_gates]
    settings = settings or resolve_settings()
    client = registry_client(settings)
    ref = parse_reference(model)
    version = get_version(ref, client=client)
    live = live_traffic(version, since, settings) if traffic else None
    if live is not None:
        current, shown_data = live.inputs, live.describe()
    else:
        current = read_data(data) if isinstance(data, (str, os.PathLike)) else data
        shown_data = str(data) if isinstance(data, (str, os.PathLike)) else "a DataFrame"
    if len(current) == 0:
        raise MonitoringDataError(f"{shown_data} has no rows")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nbmlops-monitor-") as tmp:
        local = download_model(client, version.name, version.version, Path(tmp), settings.tracking_uri)
        checked = check_model(local, version, trusted=trust_pickle or version.name in settings.trusted_models)
        notes.extend(checked.notes)
        columns = input_columns(local)
        missing = [c for c in columns if c not in current.columns]
        if missing:
            raise ModelSchemaError(
                f"{shown_data} does not fit {version}: it lacks column(s) {', '.join(map(str, missing))} that the "
                f"model takes as input ({', '.join(map(str, columns))})"
            )
        if columns:
            extra = [c for c in current.columns if c not in columns]
            if extra:
                notes.append(f"ignored columns the model does not use: {', '.join(map(str, extra[:10]))}")
            current = current[columns]
        reference, source = _reference(client, settings, version)
        if source == "profile":
            notes.append("the training data has no snapshot: compared with its recorded profile "
                         "(KS is approximate; no prediction drift)")
        result = compare(reference, current, threshold=threshold, bins=bins, columns=columns or None)
        prediction = None
        if source == "snapshot" and (live is None or live.predictions is not None):
            prediction = _prediction_drift(checked, reference[columns] if columns else reference, current, version,
                                           threshold, bins, compare_predictions, notes,
                                           logged=None if live is None else live.predictions)
        if prediction is not None:
            result = dataclasses.replace(result, prediction=prediction)
    if live is not None:
        notes.extend(live.notes)
    metrics = result.to_metrics() | (live.metrics() if live is not None else {})
    checked_gates = tuple(evaluate_gates(parsed_gates, metrics))
    return _record(version, shown_data, current, result, notes, retrain, parameters, gates, report, settings,
                   live, checked_gates)


def _reference(client: Any, settings: Settings, version: ModelVersionInfo) -> tuple[Any, str]:
    """The training features: the snapshot's rows when stored, else the profile logged with the run."""
    from nbmlops.data.snapshots import SnapshotError
    from nbmlops.tracking.artifact_snapshots import open_snapshot_store

    digest = version.tags.get(FEATURES_TAG)
    if not digest:
        raise MonitoringDataError(
            f"{version} records no training features (register it with training data: "
            "nbmlops.register(..., training_data=X) or a %%track cell that reads them)"
        )
    store = open_snapshot_store(settings)
    if digest in store:
        try:
            return store.load(digest), "snapshot"
        except SnapshotError as exc:
            raise MonitoringDataError(f"the training data snapshot of {version} is unusable: {exc}") from None
    run = mlflow_registry.get_run(client, version.run_id) if version.run_id else None
    for item in (run.inputs.dataset_inputs if run is not None and run.inputs is not None else ()):
        if item.dataset.digest == digest and item.dataset.profile:
            return json.loads(item.dataset.profile), "profile"
    raise MonitoringDataError(
        f"{version} was trained on data {digest[:12]}, but neither a snapshot nor a profile of it is recorded"
    )


def _prediction_drift(checked: CheckedModel, reference: Any, current: Any, version: ModelVersionInfo, threshold: float,
                      bins: int, compare_predictions: Any, notes: list[str], logged: Any = None) -> Any:
    """The drift of the model's predictions on ``current`` (or of the ``logged`` ones) from its predictions on
    the reference rows."""
    model = checked.load()
    try:
        before = model.predict(reference)
        after = model.predict(current) if logged is None else logged
    except ModelInputError as exc:
        raise ModelSchemaError(f"the data does not fit {version}'s input schema: {exc}") from None
    except (ValueError, TypeError) as exc:
        notes.append(f"the model could not score the data ({type(exc).__name__}: {exc}); no prediction drift")
        return None
    return compare_predictions(before, after, threshold=threshold, bins=bins)


def _record(version: ModelVersionInfo, shown_data: str, current: Any, result: Any, notes: list[str],
            retrain: Any, parameters: Mapping[str, Any] | None, gates: Sequence[str],
            report: str | os.PathLike[str] | None, settings: Settings, live: LiveTraffic | None = None,
            checked_gates: tuple[GateResult, ...] = ()) -> MonitorResult:
    from nbmlops.tracking.run import Run
    from nbmlops.tracking.session import get_session

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    html_path = Path(report) if report else settings.state_dir / "monitor" / f"{version.name}-v{version.version}-{stamp}.html"
    html = result.to_html(f"Drift of {version} on {shown_data}")
    if live is not None or checked_gates:
        head, _, rest = html.partition("</h1>")
        html = f"{head}</h1>{_live_html(live, checked_gates)}{rest}"
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(html)
    except OSError as exc:
        raise ConfigError("report", f"cannot write {html_path}: {exc.strerror or exc}", "argument") from None
    tags = {"nbmlops.kind": "monitor", "nbmlops.model": version.name, "nbmlops.model_version": str(version.version),
            "nbmlops.drifted": str(result.drifted).lower(), "nbmlops.monitored_data": shown_data}
    tags |= (live.tags() if live is not None else {}) | gate_tags(checked_gates)
    run = Run(f"monitor {version}", experiment=f"monitor/{version.name}", tags=tags,
              params={"threshold": result.threshold, "reference": result.reference_source})
    with run:
        run.log_metrics(result.to_metrics() | (live.metrics() if live is not None else {}))
        run.log_dataset(current, "monitored_data", context="monitoring")
        run.log_text(html, "drift/report.html")
        if notes:
            run.log_text("\n".join(notes) + "\n", "drift/notes.txt")
    session = get_session()
    session.flush(settings.flush_timeout)
    run_id = session.run_ids.get(run.key, (None, None))[0]
    retraining = None
    if retrain is not None and result.drifted:
        retraining = _retrain(version, str(retrain), parameters or {}, gates, run_id, settings)
    return MonitorResult(version, shown_data, result, run.key, run_id, html_path, retraining, tuple(notes), live,
                         checked_gates)


def _live_html(live: LiveTraffic | None, checked_gates: Sequence[GateResult]) -> str:
    """The report's section on the live traffic and the gates."""
    import html

    parts = [live.html()] if live is not None else []
    if checked_gates:
        items = "".join(f'<li class="{"ok" if g.passed else "badge"}">{html.escape(g.message)}</li>'
                        for g in checked_gates)
        parts.append(f"<section><h2>Gates</h2><ul>{items}</ul></section>")
    return "".join(parts)


def _retrain(version: ModelVersionInfo, notebook: str, parameters: Mapping[str, Any], gates: Sequence[str],
             monitor_run: str | None, settings: Settings) -> Retraining:
    from nbmlops.registry.promote import PromotionRefused, promote
    from nbmlops.runner import run_notebook

    tags = {"nbmlops.retrains": f"{version}"} | ({"nbmlops.monitor_run": monitor_run} if monitor_run else {})
    execution = run_notebook(notebook, parameters=parameters, name=f"retrain {version.name}", tags=tags,
                             progress_bar=False)
    if execution.status != "FINISHED" or not execution.run_id:
        return Retraining(notebook, execution.run_id, execution.status,
                          message=f"the retraining run failed: {execution.error or execution.failure or execution.status}")
    new = _registered_by(version.name, execution.run_id, execution.run_key, settings)
    if new is None:
        return Retraining(notebook, execution.run_id, "FAILED",
                          message=f"the notebook registered no new version of {version.name} "
                                  f"(register it with %%track --register VAR {version.name})")
    try:
        promote(f"{new.name}/{new.version}", CHALLENGER, gates=gates, settings=settings)
    except PromotionRefused as refused:
        return Retraining(notebook, execution.run_id, "FINISHED", new, False,
                          f"registered {new}; not made @{CHALLENGER}: {refused}")
    return Retraining(notebook, execution.run_id, "FINISHED", new, True, f"registered {new} as @{CHALLENGER}")


def _registered_by(name: str, run_id: str, run_key: str, settings: Settings) -> ModelVersionInfo | None:
    """The newest version of ``name`` registered by the notebook run or one of its cells."""
    from nbmlops.registry.models import registered_by

    mine = [v for v in registered_by(run_id, run_key, settings) if v.name == name]
    return max(mine, key=lambda v: v.version) if mine else None
