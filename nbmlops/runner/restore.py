"""Data snapshots standing in for data that changed or disappeared since a run (``nbmlops reproduce``).

A notebook run's parameter naming a data file whose content is no longer the recorded one gets
the path of the file restored from its snapshot (:func:`restore_data_parameters`). A cell run's
rebuilt notebook has, before the tracked cell, a cell (:func:`restore_cell`) that rebinds each
input variable from its snapshot when it is missing or differs (:func:`restore_inputs`); what
it printed becomes the report's notes (:func:`restore_notes`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbmlops.data.snapshots import SnapshotError, SnapshotStore
from nbmlops.exceptions import NbmlopsError
from nbmlops.tracking.run import STORED, snapshot_state
from nbmlops.tracking.search import RunRow

__all__ = [
    "RESTORE_TAG",
    "read_data",
    "restore_cell",
    "restore_data_parameters",
    "restore_inputs",
    "restore_notes",
    "snapshotted_inputs",
]

#: tag of the rebuilt notebook's cell that restores inputs from snapshots
RESTORE_TAG = "nbmlops-restore"


def restore_data_parameters(
    original: RunRow, parameters: Mapping[str, Any], cwd: Path, folder: Path, store: SnapshotStore, notes: list[str]
) -> dict[str, str]:
    """For each parameter naming a data file the run recorded, whose content is no longer the
    recorded one (seen from the kernel's folder ``cwd``): the path of its snapshot, restored in
    ``folder``. Each change is a line of ``notes``."""
    from nbmlops.data import fingerprint

    recorded = read_data(original)
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


def read_data(original: RunRow) -> dict[str, str]:
    """The datasets ``original`` read (input, training or evaluation data; not its outputs): name -> fingerprint."""
    return {name: digest for name, digest, context in original.datasets if context != "output"}


def snapshotted_inputs(original: RunRow, store: SnapshotStore, notes: list[str]) -> tuple[dict[str, str], bool]:
    """The cell run's input variables (the data it read: training, evaluation or other input data) that have a
    usable snapshot (name -> fingerprint), fetched into the local store if need be; and whether every input has
    one."""
    inputs = read_data(original)
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


def restore_notes(executed: Path) -> list[str]:
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


def restore_cell(inputs: Mapping[str, str], store: SnapshotStore) -> Any:
    """A notebook cell (tagged :data:`RESTORE_TAG`) that calls :func:`restore_inputs` for ``inputs``
    (variable name -> fingerprint) on ``store``."""
    from nbformat.v4 import new_code_cell

    cell = new_code_cell(
        "# nbmlops reproduce: the run's inputs, from their snapshots where missing or changed\n"
        "from nbmlops.runner.restore import restore_inputs\n"
        f"restore_inputs(globals(), {dict(inputs)!r}, {str(store.root)!r})\n"
        "del restore_inputs"
    )
    cell.metadata["tags"] = [RESTORE_TAG]
    return cell
