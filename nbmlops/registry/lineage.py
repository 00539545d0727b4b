"""Lineage: from a model version (or a run) back to the run, notebook, cell, commit and data that made it,
and on to the runs that produced that data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbmlops.backend import registry as mlflow_registry
from nbmlops.config import Settings, resolve_settings
from nbmlops.registry.models import ModelVersionInfo, get_version, parse_reference, registry_client

__all__ = ["DatasetLink", "Lineage", "format_lineage", "lineage", "run_to_reproduce"]

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class DatasetLink:
    """A dataset a run used: its fingerprint, role, whether a snapshot is stored, and the runs that output it."""

    name: str
    fingerprint: str
    context: str
    snapshot: bool
    producers: tuple[tuple[str, str], ...]  # (run id, run name)


@dataclass(frozen=True)
class Lineage:
    """The chain behind a model version or a run."""

    version: ModelVersionInfo | None
    run_id: str
    run_name: str
    run_status: str
    experiment: str
    notebook: str
    cell_id: str
    commit: str
    dirty: bool
    parent_run_id: str | None
    parameters: dict[str, str]
    datasets: tuple[DatasetLink, ...]


def lineage(target: str, settings: Settings | None = None) -> Lineage:
    """The lineage of ``NAME@alias``, ``NAME/VERSION``, a bare ``NAME`` (its latest version) or a run id.

    Raises:
        ModelNotFoundError: no such model, version or alias; RunNotFoundError: no such run.
    """
    from nbmlops.data import SnapshotStore
    from nbmlops.tracking.query import load_run

    settings = settings or resolve_settings()
    client = registry_client(settings)
    version = None
    if _RUN_ID.fullmatch(target.strip()):
        run_id = target.strip()
    else:
        version = get_version(parse_reference(target), client=client)
        run_id = version.run_id or ""
    run = load_run(settings.tracking_uri, run_id)
    parent = load_run(settings.tracking_uri, run.parent_run_id) if run.parent_run_id else None
    snapshots = SnapshotStore(settings.data_dir)  # this machine's: the run's tags tell of shared ones
    used = list(run.datasets) + [d for d in (parent.datasets if parent else ()) if d not in run.datasets]
    tags: Mapping[str, str] = {**(parent.tags if parent else {}), **run.tags}
    mine = {run.run_id, *([parent.run_id] if parent else [])}
    links = tuple(
        DatasetLink(name, digest, context, _snapshot(tags, digest, snapshots), tuple(_producers(client, digest, mine)))
        for name, digest, context in used
    )
    tags = run.tags
    return Lineage(
        version=version,
        run_id=run.run_id,
        run_name=run.name or "",
        run_status=run.status,
        experiment=run.experiment,
        notebook=tags.get("nbmlops.notebook") or tags.get("mlflow.source.name", ""),
        cell_id=tags.get("nbmlops.cell_id", ""),
        commit=tags.get("mlflow.source.git.commit", ""),
        dirty=tags.get("nbmlops.git.dirty") == "true",
        parent_run_id=parent.run_id if parent else None,
        parameters=dict(parent.params) if parent else {},
        datasets=links,
    )


def run_to_reproduce(target: str, settings: Settings | None = None) -> str:
    """The run that ``nbmlops reproduce TARGET`` re-executes: a run id as it is; for ``NAME/VERSION`` or
    ``NAME@alias``, the run that registered the version, or the headless notebook run its cell ran in
    (re-executed from its logged input notebook with the same parameters).

    Raises:
        ModelNotFoundError: no such model, version or alias; RunNotFoundError: no such run.
    """
    from nbmlops.tracking.query import load_run

    if _RUN_ID.fullmatch(target.strip()) or not any(mark in target for mark in "/@"):
        return target.strip()
    settings = settings or resolve_settings()
    version = get_version(parse_reference(target), client=registry_client(settings))
    run = load_run(settings.tracking_uri, version.run_id or "")
    if run.parent_run_id:
        parent = load_run(settings.tracking_uri, run.parent_run_id)
        if parent.tags.get("nbmlops.kind") == "notebook":
            return parent.run_id
    return run.run_id


def _snapshot(tags: Mapping[str, str], digest: str, snapshots: Any) -> bool:
    """Whether the data is snapshotted: as the run recorded it (``nbmlops.snapshot.<fp>``), or found here."""
    return tags.get(f"nbmlops.snapshot.{digest}") == "stored" or digest in snapshots


def _producers(client: Any, digest: str, exclude: set[str]) -> list[tuple[str, str]]:
    """Runs that logged ``digest`` as an output dataset."""
    found: dict[str, str] = {}
    for run in mlflow_registry.runs_with_dataset(client, digest):
        if run.info.run_id in exclude or run.inputs is None:
            continue
        for item in run.inputs.dataset_inputs:
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
            if item.dataset.digest == digest and context == "output":
                found[run.info.run_id] = run.info.run_name or ""
    return sorted(found.items())


def format_lineage(chain: Lineage) -> str:
    """The chain as an indented tree for the terminal."""
    lines = []
    indent = ""
    if chain.version is not None:
        v = chain.version
        aliases = " ".join(f"@{a}" for a in v.aliases)
        lines.append(f"model {v.name} version {v.version}" + (f"  {aliases}" if aliases else ""))
        indent = "  "
    lines.append(f"{indent}run {chain.run_id}  {chain.run_name!s}  [{chain.run_status}]  experiment {chain.experiment}")
    inner = indent + "  "
    if chain.notebook:
        lines.append(f"{inner}notebook  {chain.notebook}" + (f"  cell {chain.cell_id}" if chain.cell_id else ""))
    if chain.commit:
        lines.append(f"{inner}commit    {chain.commit}" + ("  (with uncommitted changes)" if chain.dirty else ""))
    if chain.parent_run_id:
        params = ", ".join(f"{k}={v}" for k, v in sorted(chain.parameters.items()))
        lines.append(f"{inner}headless  run {chain.parent_run_id}" + (f"  parameters: {params}" if params else ""))
    if not chain.datasets:
        lines.append(f"{inner}data      none recorded")
    for link in chain.datasets:
        stored = "snapshot stored" if link.snapshot else "fingerprint only"
        lines.append(f"{inner}data      {link.name} ({link.context})  {link.fingerprint}  {stored}")
        for run_id, name in link.producers:
            lines.append(f"{inner}            produced by run {run_id}  {name}")
    return "\n".join(lines)
