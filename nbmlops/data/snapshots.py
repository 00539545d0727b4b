"""A content-addressed store of data snapshots, as Parquet files keyed by fingerprint.

A snapshot of a DataFrame, Series or ndarray lives at ``<root>/<fp[:2]>/<fp>.parquet`` with a
JSON sidecar ``<fp>.json`` (kind, shape, dtypes, profile, creation time, file size, library
versions). The default root is ``.nbmlops/data`` under the project root.

How each kind is stored, so that it loads back with the same fingerprint:

- DataFrame: as is, index included (``preserve_index=True``, so a ``RangeIndex`` comes back as
  an equal int64 index, which fingerprints alike); pandas' own Parquet metadata restores dtypes.
- Series: as a one-column frame with its index; the name is kept in the file's metadata.
- ndarray: its values in C order as one column named ``values``; the dtype and shape are kept in
  the file's metadata and restored on load (any tool reading the file sees a plain column).

What Parquet cannot carry back exactly (an object column mixing ints and strings, complex or
structured arrays, some extension types, names that are not JSON values) is refused by
:meth:`SnapshotStore.save` with :class:`UnsupportedSnapshotError`: every write is read back and
fingerprinted before it is published, so a stored snapshot is never later found corrupt because
of its type. A file damaged after it was stored fails Parquet's page checksums or the fingerprint
check on load, and is refused with :class:`CorruptSnapshotError`.

Writes go to a temporary file in the same folder, are fsynced and verified, then renamed into
place: savers of the same data in several processes leave one complete snapshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbmlops.data.fingerprint import fingerprint as _fingerprint
from nbmlops.data.profile import profile as _profile
from nbmlops.exceptions import NbmlopsError

__all__ = [
    "CorruptSnapshotError",
    "Snapshot",
    "SnapshotError",
    "SnapshotNotFoundError",
    "SnapshotStore",
    "UnsupportedSnapshotError",
    "load",
]

DEFAULT_MAX_BYTES = 1 << 30  # objects larger in memory are fingerprinted, not snapshotted
_META_KEY = b"nbmlops"
_SERIES_COLUMN = "__nbmlops_series__"
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")


class SnapshotError(NbmlopsError):
    """Root of the snapshot store's errors."""


class SnapshotNotFoundError(SnapshotError, LookupError):
    """No snapshot is stored under this fingerprint.

    Attributes:
        fingerprint: the fingerprint asked for.
    """

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__(f"no data snapshot with fingerprint {fingerprint!r}")


class CorruptSnapshotError(SnapshotError):
    """A stored snapshot no longer holds the data its fingerprint names.

    Attributes:
        fingerprint: the snapshot's fingerprint.
        path: the damaged file.
        reason: what the check found, in one line.
    """

    def __init__(self, fingerprint: str, path: Path, reason: str) -> None:
        self.fingerprint = fingerprint
        self.path = path
        self.reason = reason
        super().__init__(f"data snapshot {fingerprint} at {path} is corrupt: {reason}")


class UnsupportedSnapshotError(SnapshotError, ValueError):
    """An object cannot be stored (or written in a format) so that it reads back exactly.

    Attributes:
        fingerprint: the object's fingerprint.
        reason: why, in one line.
    """

    def __init__(self, fingerprint: str, reason: str) -> None:
        self.fingerprint = fingerprint
        self.reason = reason
        super().__init__(f"cannot snapshot data {fingerprint}: {reason}")


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot, as described by its sidecar."""

    fingerprint: str
    path: Path
    kind: str
    shape: tuple[int, ...]
    bytes: int
    created: datetime
    profile: dict[str, Any] = field(hash=False, compare=False, repr=False)


class SnapshotStore:
    """Snapshots under ``root`` (default: ``<project>/.nbmlops/data``), keyed by fingerprint."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from nbmlops.config import resolve_settings

            root = resolve_settings().state_dir / "data"
        self.root = Path(root)

    def path_of(self, fingerprint: str) -> Path:
        """The Parquet file a snapshot with this fingerprint is (or would be) stored in."""
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            raise SnapshotNotFoundError(str(fingerprint))
        return self.root / fingerprint[:2] / f"{fingerprint}.parquet"

    def __contains__(self, fingerprint: object) -> bool:
        try:
            return self.path_of(fingerprint).is_file()  # type: ignore[arg-type]
        except SnapshotNotFoundError:
            return False

    def save(
        self, obj: object, max_bytes: int | None = DEFAULT_MAX_BYTES, *, digest: str | None = None
    ) -> Snapshot | None:
        """Store ``obj`` (DataFrame, Series or ndarray) unless it is stored already.

        ``digest`` is ``fingerprint(obj)`` when the caller has it (it is checked after writing).
        Returns the snapshot, or None when ``obj`` takes more than ``max_bytes`` in memory
        (``None`` means no limit) and is not stored yet.

        Raises:
            UnsupportedSnapshotError: ``obj`` does not read back from Parquet with the same
                fingerprint (nothing is left behind).
            UnsupportedDataError: ``obj`` cannot be fingerprinted.
        """
        fp = digest or _fingerprint(obj)
        kind = _kind(obj)
        if kind is None:
            raise UnsupportedSnapshotError(fp, f"{type(obj).__qualname__} is not snapshotted")
        path = self.path_of(fp)
        if path.is_file():
            sidecar = path.with_suffix(".json")
            return self._read_sidecar(sidecar) if sidecar.is_file() else self._describe(obj, kind, fp)
        if max_bytes is not None and _memory_bytes(obj) > max_bytes:
            return None
        table = _to_table(obj, kind, fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _temporary(path) as tmp:
            _write_parquet(table, tmp)
            try:
                back = _read(tmp)
                back_fp = _fingerprint(back)
            except Exception as exc:  # whatever fails here, the type does not round-trip
                raise UnsupportedSnapshotError(fp, f"does not read back from Parquet: {exc}") from exc
            if back_fp != fp:
                raise UnsupportedSnapshotError(fp, _mismatch(obj, back))
            os.replace(tmp, path)
        _sync_dir(path.parent)
        return self._describe(obj, kind, fp)

    def load(self, fingerprint: str) -> Any:
        """Return the stored object, after checking that its fingerprint still matches.

        Raises:
            SnapshotNotFoundError: nothing is stored under ``fingerprint``.
            CorruptSnapshotError: the file cannot be read, or holds other data.
        """
        path = self.path_of(fingerprint)
        if not path.is_file():
            raise SnapshotNotFoundError(fingerprint)
        try:
            obj = _read(path)
            actual = _fingerprint(obj)
        except Exception as exc:  # any failure to decode a stored file is damage
            raise CorruptSnapshotError(fingerprint, path, f"unreadable ({exc})") from exc
        if actual != fingerprint:
            raise CorruptSnapshotError(fingerprint, path, f"its content has fingerprint {actual}")
        return obj

    def info(self, fingerprint: str) -> Snapshot:
        """Describe a stored snapshot from its sidecar (without reading the data).

        Raises:
            SnapshotNotFoundError: nothing is stored under ``fingerprint``.
        """
        sidecar = self.path_of(fingerprint).with_suffix(".json")
        if not sidecar.is_file():
            raise SnapshotNotFoundError(fingerprint)
        return self._read_sidecar(sidecar)

    def list(self) -> list[Snapshot]:
        """Every stored snapshot, newest first."""
        found = [
            self._read_sidecar(p)
            for p in self.root.glob("??/*.json")
            if _FINGERPRINT.fullmatch(p.stem) and p.with_suffix(".parquet").is_file()
        ]
        return sorted(found, key=lambda s: s.created, reverse=True)

    def get(self, fingerprint: str, path: str | os.PathLike[str]) -> Path:
        """Write a verified snapshot to ``path``; the extension picks the format.

        ``.parquet`` copies the stored file; ``.csv`` writes the frame, Series or (at most 2-D)
        array as text; ``.npy`` writes the values as a numpy array (no pickled objects).

        Raises:
            SnapshotNotFoundError, CorruptSnapshotError: as :meth:`load`.
            UnsupportedSnapshotError: the extension is unknown or cannot hold this data.
        """
        import numpy as np
        import pandas as pd

        obj, target = self.load(fingerprint), Path(path)
        suffix = target.suffix.lower()
        if suffix == ".parquet":
            shutil.copyfile(self.path_of(fingerprint), target)
        elif suffix == ".csv" and (not isinstance(obj, np.ndarray) or obj.ndim <= 2):
            (pd.DataFrame(obj) if isinstance(obj, np.ndarray) else obj).to_csv(target)
        elif suffix == ".npy":
            try:
                np.save(target, obj if isinstance(obj, np.ndarray) else obj.to_numpy(), allow_pickle=False)
            except ValueError as exc:
                raise UnsupportedSnapshotError(fingerprint, f"cannot write .npy: {exc}") from exc
        else:
            raise UnsupportedSnapshotError(
                fingerprint, f"cannot write {target.name!r}: use .parquet, .csv or .npy"
            )
        return target

    def _describe(self, obj: Any, kind: str, fp: str) -> Snapshot:
        """Write the sidecar of a stored snapshot and return its description."""
        import pandas as pd
        import pyarrow as pa

        path = self.path_of(fp)
        if kind == "DataFrame":
            dtypes = [[str(name), str(dtype)] for name, dtype in obj.dtypes.items()]
        else:
            dtypes = [[str(getattr(obj, "name", None) or "values"), str(obj.dtype)]]
        record = {
            "fingerprint": fp,
            "kind": kind,
            "shape": list(obj.shape),
            "dtypes": dtypes,
            "bytes": path.stat().st_size,
            "created": datetime.now(timezone.utc).isoformat(),
            "versions": {"pandas": pd.__version__, "pyarrow": pa.__version__},
            "rebuild": _rebuild_info(obj, kind),
            "profile": _profile(obj),
        }
        sidecar = path.with_suffix(".json")
        with _temporary(sidecar) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, sidecar)
        return self._read_sidecar(sidecar)

    def _read_sidecar(self, sidecar: Path) -> Snapshot:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        return Snapshot(
            fingerprint=record["fingerprint"],
            path=sidecar.with_suffix(".parquet"),
            kind=record["kind"],
            shape=tuple(record["shape"]),
            bytes=record["bytes"],
            created=datetime.fromisoformat(record["created"]),
            profile=record["profile"],
        )


def load(fingerprint: str) -> Any:
    """Load a snapshot from the project's default store (see :meth:`SnapshotStore.load`)."""
    return SnapshotStore().load(fingerprint)


# --- conversion to and from Arrow ---


def _kind(obj: object) -> str | None:
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return type(obj).__name__
    if np is not None and isinstance(obj, np.ndarray):
        return "ndarray"
    return None


def _memory_bytes(obj: Any) -> int:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    usage = obj.memory_usage(index=True, deep=True)
    return int(usage) if np.isscalar(usage) else int(usage.sum())


def _rebuild_info(obj: Any, kind: str) -> dict[str, Any]:
    """What the Parquet table alone does not say about the object."""
    if kind == "ndarray":
        return {"kind": kind, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    info: dict[str, Any] = {"kind": kind, "strings": _string_columns(obj)}
    if kind == "Series":
        info["name"] = obj.name
    return info


def _string_columns(obj: Any) -> dict[str, Any]:
    """The text columns whose dtype Arrow does not bring back: position -> how to rebuild.

    An ``object`` column reads back as ``str`` and a ``string[python]`` one as
    ``string[pyarrow]``; they are rebuilt as ``"object"`` or ``[storage, na_is_nan]``.
    """
    import pandas as pd

    dtypes = obj.dtypes.tolist() if hasattr(obj, "columns") else [obj.dtype]
    specs: dict[str, Any] = {}
    for i, dtype in enumerate(dtypes):
        if isinstance(dtype, pd.StringDtype):
            specs[str(i)] = [dtype.storage, dtype.na_value is not pd.NA]
        elif str(dtype) == "object":
            specs[str(i)] = "object"
    return specs


def _to_table(obj: Any, kind: str, fp: str) -> Any:
    import pyarrow as pa

    try:
        meta = json.dumps(_rebuild_info(obj, kind)).encode()
        if kind == "ndarray":
            table = pa.table({"values": pa.array(obj.reshape(-1))})
        else:
            frame = obj.to_frame(_SERIES_COLUMN) if kind == "Series" else obj
            table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise UnsupportedSnapshotError(fp, f"cannot convert to Arrow: {exc}") from exc
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: meta})


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, write_page_checksum=True)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _read(path: Path) -> Any:
    """Rebuild the object stored in a snapshot file."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(path, page_checksum_verification=True)
    info = json.loads(table.schema.metadata[_META_KEY])
    if info["kind"] == "ndarray":
        values = table.column("values").to_numpy(zero_copy_only=False)
        return values.astype(np.dtype(info["dtype"]), copy=False).reshape(info["shape"])
    frame = table.to_pandas()
    fields = [c["field_name"] for c in table.schema.pandas_metadata["columns"]]
    for pos, spec in info["strings"].items():
        i = int(pos)
        if spec == "object":  # None stays None, as Arrow gives it, rather than becoming NaN
            values = pd.Series(
                table.column(fields[i]).to_numpy(zero_copy_only=False), frame.index, object
            )
        else:
            storage, na_is_nan = spec
            values = frame.iloc[:, i].astype(pd.StringDtype(storage, np.nan if na_is_nan else pd.NA))
        frame.isetitem(i, values)
    if info["kind"] == "Series":
        series = frame[_SERIES_COLUMN]
        series.name = info["name"]
        return series
    return frame


def _mismatch(obj: Any, back: Any) -> str:
    """Say which columns changed type on the way through Parquet."""
    before = getattr(obj, "dtypes", None)
    after = getattr(back, "dtypes", None)
    if hasattr(before, "items") and hasattr(after, "items") and len(before) == len(after):
        changed = [
            f"{name!r} {a} -> {b}"
            for (name, a), b in zip(before.items(), after.tolist())
            if str(a) != str(b)
        ]
        if changed:
            return "does not round-trip through Parquet: " + ", ".join(changed)
    return "does not read back from Parquet with the same content (mixed or unusual types?)"


# --- files ---


class _temporary:
    """A unique temporary path next to ``target``, removed on exit unless renamed away."""

    def __init__(self, target: Path) -> None:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        self.path = Path(name)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening folders)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
