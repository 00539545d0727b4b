"""The data snapshots that runs whose records still wait in a journal (not yet delivered to the tracking store)
need: for ``nbmlops data gc``, which must not delete what a run recorded during an outage."""

from __future__ import annotations

from pathlib import Path

from nbmlops.journal import Cursor, list_journals, read_records
from nbmlops.tracking.run import SNAPSHOT_TAG

__all__ = ["WAITING", "journal_references"]

WAITING = "needed by runs whose records wait in a journal"


def journal_references(journal_dir: Path) -> dict[str, str]:
    """Every fingerprint a record not yet delivered from a journal in ``journal_dir`` names (a snapshot tag
    or a dataset): fingerprint -> :data:`WAITING`. Damaged parts of a journal are skipped."""
    found: dict[str, str] = {}
    for path in list_journals(journal_dir):
        try:
            records = list(read_records(path, Cursor.load(path).offset))
        except OSError:  # delivered and removed meanwhile
            continue
        for _, record in records:
            if not isinstance(record, dict):
                continue
            if record.get("t") == "tags":
                found.update(dict.fromkeys((k[len(SNAPSHOT_TAG):] for k in record.get("tags", {})
                                            if k.startswith(SNAPSHOT_TAG)), WAITING))
            elif record.get("t") == "dataset" and isinstance(record.get("digest"), str):
                found[record["digest"]] = WAITING
    return found
