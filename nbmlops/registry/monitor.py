"""Drift monitoring of a registered model, and retraining when its data has moved.

``monitor("iris@champion", "live.csv")`` compares the new data with the data the version was trained on
(its snapshot when one is stored, else the profile recorded with the training run), feature by feature
(PSI for every column, KS for numeric ones) and, when the reference rows are at hand, the model's
predictions on both. The result is a monitoring run (``nbmlops.kind=monitor``: metrics per feature, the
HTML report as an artifact). The model is loaded only through :mod:`nbmlops.registry.safe_load`: its
artifact's SHA-256, the paths of its MLmodel file and its serialization are checked before anything in it is
read as a model. With ``retrain=NOTEBOOK``, a drifted result executes the notebook headlessly;
the version it registers under the same name gets the ``challenger`` alias if its gates pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
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

    @property
    def exit_code(self) -> int:
        """0 within threshold; 5 drifted; 1 the retraining failed; 3 its model failed the challenger gates."""
        if self.retraining is not None and self.retraining.status != "FINISHED":
            return 1
        if self.retraining is not None and self.retraining.version is not None and not self.retraining.promoted:
            return 3
        return 5 if self.report.drifted else 0

    def format(self) -> str:
        """The verdict, the feature table, notes, the retraining, and where the report is."""
        r = self.report
        verdict = (f"DRIFTED: {len(r.drifted_features)} feature(s)" + (" and the predictions" if r.prediction is not
                   None and r.prediction.drifted else "") if r.drifted else "OK: no drift")
        lines = [f"{verdict} (PSI threshold {r.threshold}) for {self.model} on {self.data}", r.format_table()]
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
    data: str | os.PathLike[str] | Any,
    *,
    threshold: float = 0.2,
    bins: int = 10,
    retrain: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    gates: Sequence[str] = (),
    report: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    settings: Settings | None = None,
) -> MonitorResult:
    """Compare ``data`` (a path or a DataFrame) with the training data of ``model`` (``NAME@alias`` or
    ``NAME/VERSION``) and record the result as a monitoring run.

    Args:
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
        ModelNotFoundError, ModelSchemaError, MonitoringDataError, DriftError (incompatible column types),
        UnsafeModelError (the model cannot be loaded safely), ConfigError (the report cannot be written there).
    """
    from nbmlops.data import compare, compare_predictions

    if not threshold > 0:
        raise MonitoringDataError(f"threshold must be a number > 0, got {threshold}")
    settings = settings or resolve_settings()
    client = registry_client(settings)
    ref = parse_reference(model)
    version = get_version(ref, client=client)
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
        if source == "snapshot":
            prediction = _prediction_drift(checked, reference[columns] if columns else reference, current, version,
                                           threshold, bins, compare_predictions, notes)
        if prediction is not None:
            result = dataclasses.replace(result, prediction=prediction)
    return _record(version, shown_data, current, result, notes, retrain, parameters, gates, report, settings)


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
                      bins: int, compare_predictions: Any, notes: list[str]) -> Any:
    model = checked.load()
    try:
        before = model.predict(reference)
        after = model.predict(current)
    except ModelInputError as exc:
        raise ModelSchemaError(f"the data does not fit {version}'s input schema: {exc}") from None
    except (ValueError, TypeError) as exc:
        notes.append(f"the model could not score the data ({type(exc).__name__}: {exc}); no prediction drift")
        return None
    return compare_predictions(before, after, threshold=threshold, bins=bins)


def _record(version: ModelVersionInfo, shown_data: str, current: Any, result: Any, notes: list[str],
            retrain: Any, parameters: Mapping[str, Any] | None, gates: Sequence[str],
            report: str | os.PathLike[str] | None, settings: Settings) -> MonitorResult:
    from nbmlops.tracking.run import Run
    from nbmlops.tracking.session import get_session

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    html_path = Path(report) if report else settings.state_dir / "monitor" / f"{version.name}-v{version.version}-{stamp}.html"
    html = result.to_html(f"Drift of {version} on {shown_data}")
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(html)
    except OSError as exc:
        raise ConfigError("report", f"cannot write {html_path}: {exc.strerror or exc}", "argument") from None
    tags = {"nbmlops.kind": "monitor", "nbmlops.model": version.name, "nbmlops.model_version": str(version.version),
            "nbmlops.drifted": str(result.drifted).lower(), "nbmlops.monitored_data": shown_data}
    run = Run(f"monitor {version}", experiment=f"monitor/{version.name}", tags=tags,
              params={"threshold": result.threshold, "reference": result.reference_source})
    with run:
        run.log_metrics(result.to_metrics())
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
    return MonitorResult(version, shown_data, result, run.key, run_id, html_path, retraining, tuple(notes))


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
