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

Every write is read back and fingerprinted before it is published. Data of numpy numbers, booleans,
datetimes and timedeltas and of pandas' ``str`` (pyarrow-backed strings), in the columns and the index
(the usual large frame), is written and read back one row group of about 8 MiB at a time,
fingerprinted as it comes back: a snapshot holds no second copy of the data in memory, and a write
that does not read back (page checksums, a damaged footer) or holds other data is refused with
:class:`CorruptSnapshotError`. Other data (object columns, categoricals, nullable and timezone-aware
columns, a MultiIndex) is read back whole, and can take two to three times its size in memory meanwhile.
What Parquet cannot carry back exactly (an object column mixing ints and strings, complex or
structured arrays, some extension types, names that are not JSON values) is refused by
:meth:`SnapshotStore.save` with :class:`UnsupportedSnapshotError`, so a stored snapshot is never
later found corrupt because of its type. A file damaged after it was stored fails Parquet's page
checksums or the fingerprint check on load, and is refused with :class:`CorruptSnapshotError`.

A file (a path given to :meth:`SnapshotStore.save`) is stored as its raw bytes at
``<fp[:2]>/<fp>.bin`` (kind ``file``), its sidecar naming the original file;
:meth:`SnapshotStore.load` returns those bytes (whose fingerprint is the file's) and
:meth:`SnapshotStore.get` writes them back as a file.

Writes go to a temporary file in the same folder, are fsynced and verified, then renamed into
place: savers of the same data in several processes leave one complete snapshot. When the caller
passes the fingerprint it took earlier (``save(obj, digest=...)``) and the object no longer has
it (changed in place since, or a file rewritten), nothing is stored:
:class:`StaleFingerprintError`.

A store can have a *remote* (see :class:`SnapshotRemote`; nbmlops' own is the MLflow artifact
store, :mod:`nbmlops.tracking.artifact_snapshots`): :meth:`SnapshotStore.push` uploads a stored
snapshot there, and :meth:`~SnapshotStore.load`, :meth:`~SnapshotStore.get` and
:meth:`~SnapshotStore.info` download one that is not stored locally, verify it, and keep it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from nbmlops.data.fingerprint import fingerprint as _fingerprint
from nbmlops.data.profile import profile as _profile
from nbmlops.exceptions import (
    CorruptSnapshotError,
    SnapshotError,
    SnapshotNotFoundError,
    StaleFingerprintError,
    UnsupportedSnapshotError,
)

__all__ = [
    "CorruptSnapshotError",
    "Snapshot",
    "SnapshotError",
    "SnapshotNotFoundError",
    "SnapshotRemote",
    "SnapshotStore",
    "StaleFingerprintError",
    "UnsupportedSnapshotError",
    "load",
]

DEFAULT_MAX_BYTES = 256 << 20  # objects larger in memory are fingerprinted, not snapshotted (as config's default)
_ROW_GROUP_BYTES = 8 << 20  # data per Parquet row group of a streamed write: the largest copy it holds
_META_KEY = b"nbmlops"
_SERIES_COLUMN = "__nbmlops_series__"
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_SUFFIXES = (".parquet", ".bin")  # data files: of frames, Series and arrays; of files
_COPY_BYTES = 1 << 22


class SnapshotRemote(Protocol):
    """A shared place a :class:`SnapshotStore` uploads to and downloads from, by fingerprint."""

    def upload(self, fingerprint: str, files: Sequence[Path]) -> bool:
        """Upload a snapshot's files, data file first; False when it was there already."""

    def download(self, fingerprint: str, folder: Path) -> list[Path]:
        """Download a snapshot's files into ``folder``; an empty list when the remote lacks it."""


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot, as described by its sidecar (``name``: a file's original name)."""

    fingerprint: str
    path: Path
    kind: str
    shape: tuple[int, ...]
    bytes: int
    created: datetime
    profile: dict[str, Any] = field(hash=False, compare=False, repr=False)
    name: str | None = None


class SnapshotStore:
    """Snapshots under ``root`` (default: the project's, see ``Settings.data_dir``), keyed by fingerprint.

    ``remote``: where :meth:`push` shares snapshots and from where :meth:`load`, :meth:`get` and
    :meth:`info` fetch those not stored here.
    """

    def __init__(self, root: Path | None = None, remote: SnapshotRemote | None = None) -> None:
        if root is None:
            from nbmlops.config import resolve_settings

            root = resolve_settings().data_dir
        self.root = Path(root)
        self.remote = remote

    def path_of(self, fingerprint: str) -> Path:
        """The file a snapshot with this fingerprint is stored in (if none is: where a frame would be)."""
        for path in self._candidates(fingerprint):
            if path.is_file():
                return path
        return self._candidates(fingerprint)[0]

    def _candidates(self, fingerprint: str) -> list[Path]:
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            raise SnapshotNotFoundError(str(fingerprint))
        return [self.root / fingerprint[:2] / f"{fingerprint}{suffix}" for suffix in _SUFFIXES]

    def __contains__(self, fingerprint: object) -> bool:
        """Whether the snapshot is stored here (the remote is not asked)."""
        try:
            return any(p.is_file() for p in self._candidates(fingerprint))  # type: ignore[arg-type]
        except SnapshotNotFoundError:
            return False

    def save(
        self,
        obj: object,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        *,
        digest: str | None = None,
        profile: dict[str, Any] | None = None,
    ) -> Snapshot | None:
        """Store ``obj`` (DataFrame, Series, ndarray, or the path of a file) unless it is stored already
        (then the stored snapshot is marked as used now, which :func:`~nbmlops.data.gc.gc` respects).

        ``digest`` is ``fingerprint(obj)`` when the caller has it (it is checked after writing);
        ``profile`` is ``profile(obj)`` when the caller has it (the sidecar keeps it).
        Returns the snapshot, or None when ``obj`` takes more than ``max_bytes`` in memory (a
        file: on disk; ``None`` means no limit) and is not stored yet. The remote is not written:
        see :meth:`push`.

        Raises:
            UnsupportedSnapshotError: ``obj`` does not read back from Parquet with the same
                fingerprint, or is a directory (nothing is left behind).
            CorruptSnapshotError: the file written does not read back, or holds other data
                (numbers, booleans and datetimes, which are verified row group by row group).
            StaleFingerprintError: ``obj`` no longer has the fingerprint ``digest``.
            UnsupportedDataError: ``obj`` cannot be fingerprinted.
        """
        fp = digest or _fingerprint(obj)
        kind = _kind(obj)
        if kind is None:
            raise UnsupportedSnapshotError(fp, f"{type(obj).__qualname__} is not snapshotted")
        if kind == "file":
            return self._save_file(Path(obj), max_bytes, fp)  # type: ignore[arg-type]
        path = self._candidates(fp)[0]
        stored = self._reuse(path)
        if stored is not None:
            return stored
        if max_bytes is not None and _memory_bytes(obj) > max_bytes:
            return None
        streamed = _streamable(obj, kind)
        table = None if streamed else _to_table(obj, kind, fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _temporary(path) as tmp:
            if streamed:
                _write_chunks(obj, kind, fp, tmp)
            else:
                _write_parquet(table, tmp)
            self._check_written(tmp, obj, fp, streamed, digest)
            os.replace(tmp, path)
        _sync_dir(path.parent)
        return self._describe(obj, kind, fp, profile)

    def _check_written(self, tmp: Path, obj: Any, fp: str, streamed: bool, digest: str | None) -> None:
        """Read the file just written back and check that it holds the data ``fp`` names.

        Numbers, booleans and datetimes (``streamed``) are read back one row group at a time and
        fingerprinted as they come, so no second copy of the data is ever held; a file that does not
        read back is damaged (:class:`CorruptSnapshotError`). Other data is read back whole, and a
        failure there means its types do not round-trip (:class:`UnsupportedSnapshotError`). Either
        way, when ``obj`` no longer has the fingerprint ``digest``: :class:`StaleFingerprintError`.
        """
        if streamed:
            try:
                back_fp, template = _streamed_fingerprint(tmp)
            except Exception as exc:  # checksums, truncation, a damaged footer: the write is bad
                raise CorruptSnapshotError(fp, tmp, f"the file written does not read back ({exc})") from exc
            if back_fp != fp:
                _raise_if_stale(obj, fp)
                if hasattr(template, "index") and _fingerprint(obj[:0]) != _fingerprint(template):  # labels, dtypes
                    raise UnsupportedSnapshotError(fp, _mismatch(obj, template))
                raise CorruptSnapshotError(fp, tmp, f"the file written holds data with fingerprint {back_fp}")
            return
        try:
            back = _read(tmp)
            back_fp = _fingerprint(back)
        except Exception as exc:  # whatever fails here, the type does not round-trip
            raise UnsupportedSnapshotError(fp, f"does not read back from Parquet: {exc}") from exc
        if back_fp != fp:
            if digest is not None:
                _raise_if_stale(obj, digest)
            raise UnsupportedSnapshotError(fp, _mismatch(obj, back))

    def _save_file(self, source: Path, max_bytes: int | None, fp: str) -> Snapshot | None:
        path = self._candidates(fp)[1]
        stored = self._reuse(path)
        if stored is not None:
            return stored
        try:
            size = source.stat().st_size
        except OSError:
            raise StaleFingerprintError(fp, None) from None
        if max_bytes is not None and size > max_bytes:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        with _temporary(path) as tmp:
            try:
                actual = _copy_hashed(source, tmp)
            except OSError:
                raise StaleFingerprintError(fp, None) from None
            if actual != fp:
                raise StaleFingerprintError(fp, actual)
            os.replace(tmp, path)
        _sync_dir(path.parent)
        return self._describe_file(source.name, fp)

    def _reuse(self, path: Path) -> Snapshot | None:
        """The snapshot stored at ``path``, marked as used now; None when it is not (completely) stored.

        The sidecar's modification time is set first, then the data file is looked for: a
        :func:`~nbmlops.data.gc.gc` running meanwhile either sees the new time and keeps the snapshot,
        or has removed it before, and then it is written again (see :mod:`nbmlops.data.gc`).
        """
        sidecar = path.with_suffix(".json")
        try:
            os.utime(sidecar)
        except FileNotFoundError:
            return None
        except OSError:  # a store this process may not write to: used, but not marked
            pass
        if not path.is_file():
            return None
        try:
            return self._read_sidecar(sidecar)
        except FileNotFoundError:  # removed since
            return None

    def push(self, fingerprint: str) -> bool:
        """Upload a stored snapshot to the remote; False when it was there already.

        Raises:
            SnapshotNotFoundError: it is not stored here.
            SnapshotError: the store has no remote.
        """
        if self.remote is None:
            raise SnapshotError(f"the snapshot store {self.root} has no remote to push to")
        path = self.path_of(fingerprint)
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            raise SnapshotNotFoundError(fingerprint)
        return self.remote.upload(fingerprint, [path, sidecar])

    def load(self, fingerprint: str) -> Any:
        """Return the stored object, after checking that its fingerprint still matches.

        A file snapshot loads as its ``bytes`` (their fingerprint is the file's).

        Raises:
            SnapshotNotFoundError: nothing is stored under ``fingerprint`` (here or on the remote).
            CorruptSnapshotError: the file cannot be read, or holds other data.
        """
        path = self._local(fingerprint)
        try:
            obj = path.read_bytes() if path.suffix == ".bin" else _read(path)
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
        sidecar = self._local(fingerprint).with_suffix(".json")
        if not sidecar.is_file():
            raise SnapshotNotFoundError(fingerprint)
        return self._read_sidecar(sidecar)

    def list(self) -> list[Snapshot]:
        """Every snapshot stored here, newest first."""
        found = [
            self._read_sidecar(p)
            for p in self.root.glob("??/*.json")
            if _FINGERPRINT.fullmatch(p.stem) and any(p.with_suffix(s).is_file() for s in _SUFFIXES)
        ]
        return sorted(found, key=lambda s: s.created, reverse=True)

    def get(self, fingerprint: str, path: str | os.PathLike[str]) -> Path:
        """Write a verified snapshot to ``path``.

        A file snapshot is written as the original bytes, whatever the name. Otherwise the
        extension picks the format: ``.parquet`` copies the stored file; ``.csv`` writes the
        frame, Series or (at most 2-D) array as text; ``.npy`` writes the values as a numpy array
        (no pickled objects).

        Raises:
            SnapshotNotFoundError, CorruptSnapshotError: as :meth:`load`.
            UnsupportedSnapshotError: the extension is unknown or cannot hold this data.
        """
        target = Path(path)
        stored = self._local(fingerprint)
        if stored.suffix == ".bin":
            with _temporary(target) as tmp:
                try:
                    actual = _copy_hashed(stored, tmp)
                except OSError as exc:
                    raise CorruptSnapshotError(fingerprint, stored, f"unreadable ({exc})") from exc
                if actual != fingerprint:
                    raise CorruptSnapshotError(fingerprint, stored, f"its content has fingerprint {actual}")
                os.replace(tmp, target)
            return target
        import numpy as np
        import pandas as pd

        obj = self.load(fingerprint)
        suffix = target.suffix.lower()
        if suffix == ".parquet":
            shutil.copyfile(stored, target)
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

    def _local(self, fingerprint: str) -> Path:
        """The stored data file, fetched from the remote first when it is only there."""
        path = self.path_of(fingerprint)
        if path.is_file():
            return path
        if self.remote is not None:
            fetched = self._fetch(fingerprint)
            if fetched is not None:
                return fetched
        raise SnapshotNotFoundError(fingerprint)

    def _fetch(self, fingerprint: str) -> Path | None:
        """Download a snapshot from the remote, verify it, and store it here; None when it lacks it."""
        assert self.remote is not None
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".fetch-") as tmp:
            files = {p.suffix: p for p in self.remote.download(fingerprint, Path(tmp))}
            data = next((files[s] for s in _SUFFIXES if s in files), None)
            if data is None or ".json" not in files:
                return None
            target = self.root / fingerprint[:2] / data.name
            where = f"downloaded from {self.remote}"
            try:
                obj = data.read_bytes() if data.suffix == ".bin" else _read(data)
                actual = _fingerprint(obj)
            except Exception as exc:  # a damaged download: the remote's copy is corrupt
                raise CorruptSnapshotError(fingerprint, target, f"{where}: unreadable ({exc})") from exc
            if actual != fingerprint:
                raise CorruptSnapshotError(fingerprint, target, f"{where}: its content has fingerprint {actual}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(files[".json"], target.with_suffix(".json"))
            os.replace(data, target)
        _sync_dir(target.parent)
        return target

    def _describe(self, obj: Any, kind: str, fp: str, profile: dict[str, Any] | None = None) -> Snapshot:
        """Write the sidecar of a stored snapshot and return its description."""
        import pandas as pd
        import pyarrow as pa

        if kind == "DataFrame":
            dtypes = [[str(name), str(dtype)] for name, dtype in obj.dtypes.items()]
        else:
            dtypes = [[str(getattr(obj, "name", None) or "values"), str(obj.dtype)]]
        return self._write_sidecar(
            self._candidates(fp)[0],
            {
                "fingerprint": fp,
                "kind": kind,
                "shape": list(obj.shape),
                "dtypes": dtypes,
                "versions": {"pandas": pd.__version__, "pyarrow": pa.__version__},
                "rebuild": _rebuild_info(obj, kind),
                "profile": _profile(obj) if profile is None else profile,
            },
        )

    def _describe_file(self, name: str, fp: str) -> Snapshot:
        """Write the sidecar of a stored file and return its description."""
        record = {"fingerprint": fp, "kind": "file", "name": name, "shape": [], "dtypes": [], "profile": {}}
        return self._write_sidecar(self._candidates(fp)[1], record)

    def _write_sidecar(self, path: Path, record: dict[str, Any]) -> Snapshot:
        record = {**record, "bytes": path.stat().st_size, "created": datetime.now(timezone.utc).isoformat()}
        sidecar = path.with_suffix(".json")
        with _temporary(sidecar) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, sidecar)
        return self._read_sidecar(sidecar)

    def _read_sidecar(self, sidecar: Path) -> Snapshot:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        return Snapshot(
            fingerprint=record["fingerprint"],
            path=sidecar.with_suffix(".bin" if record["kind"] == "file" else ".parquet"),
            kind=record["kind"],
            shape=tuple(record["shape"]),
            bytes=record["bytes"],
            created=datetime.fromisoformat(record["created"]),
            profile=record["profile"],
            name=record.get("name"),
        )


def load(fingerprint: str, store: SnapshotStore | None = None) -> Any:
    """Load a snapshot from ``store``, by default the project's (see :meth:`SnapshotStore.load`); with
    ``data_store = "mlflow"``, fetched from the MLflow artifact store when it is not stored here (the store is
    opened by :data:`nbmlops.openers.snapshot_store`: data never imports the rooms above it)."""
    from nbmlops import openers
    from nbmlops.config import resolve_settings

    if store is None:
        settings = resolve_settings()
        opener = openers.snapshot_store
        store = opener(settings) if opener is not None else SnapshotStore(settings.data_dir)
    return store.load(fingerprint)


# --- conversion to and from Arrow ---


def _kind(obj: object) -> str | None:
    if isinstance(obj, (str, os.PathLike)):
        if os.path.isdir(obj):
            raise UnsupportedSnapshotError(_fingerprint(obj), "a directory is not snapshotted, only files")
        return "file"
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
    usage: Any = obj.memory_usage(index=True, deep=True)  # a number for a Series, a Series for a frame
    return int(usage.sum()) if hasattr(usage, "sum") else int(usage)


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


def _streamable(obj: Any, kind: str) -> bool:
    """Whether ``obj`` is written and verified in row groups: numpy numbers, booleans, datetimes and
    timedeltas and pyarrow-backed strings only (columns and index alike), whose conversion to Arrow copies
    nothing but a chunk."""
    import numpy as np
    import pandas as pd

    def plain(dtype: Any) -> bool:
        if isinstance(dtype, pd.StringDtype):  # pandas' str: Arrow strings, hashed as Arrow gives them back
            return dtype.storage == "pyarrow"
        return isinstance(dtype, np.dtype) and dtype.kind in "iufbmM" and dtype.isnative

    if kind == "ndarray":
        return obj.ndim >= 1 and obj.size > 0 and isinstance(obj.dtype, np.dtype) and plain(obj.dtype) \
            and not obj.dtype.names
    index = obj.index
    if isinstance(index, pd.MultiIndex) or not (isinstance(index, pd.RangeIndex) or plain(index.dtype)):
        return False
    if kind == "Series":
        return plain(obj.dtype)
    columns = obj.columns
    return len(columns) > 0 and columns.is_unique and not isinstance(columns, pd.MultiIndex) and all(map(plain, obj.dtypes))


def _row_chunks(obj: Any, kind: str) -> Iterator[Any]:
    """``obj`` as Arrow tables of about ``_ROW_GROUP_BYTES`` each (an ndarray: its values in C order)."""
    import numpy as np
    import pyarrow as pa

    meta = {_META_KEY: json.dumps(_rebuild_info(obj, kind)).encode()}
    if kind == "ndarray":
        schema = pa.schema([("values", pa.from_numpy_dtype(obj.dtype))], metadata=meta)
        rows = obj if obj.flags.c_contiguous else None
        flat = obj.reshape(-1) if rows is not None else None  # a view
        if flat is not None:
            step = max(1, _ROW_GROUP_BYTES // obj.itemsize)
            parts = (flat[i : i + step] for i in range(0, flat.size, step))
        else:  # not C-ordered: a few rows of the first axis at a time, copied into C order
            step = max(1, _ROW_GROUP_BYTES // max(1, obj[:1].nbytes))
            parts = (np.ascontiguousarray(obj[i : i + step]).reshape(-1) for i in range(0, len(obj), step))
        for part in parts:
            yield pa.Table.from_arrays([pa.array(part)], schema=schema)
        return
    import pandas as pd

    frame = obj.to_frame(_SERIES_COLUMN) if kind == "Series" else obj
    row_bytes = max(1, _memory_bytes(frame) // max(1, len(frame)))
    step = max(1, _ROW_GROUP_BYTES // row_bytes)
    # a RangeIndex is written as its start, stop and step in pandas' metadata, not as a column of numbers
    ranged = isinstance(frame.index, pd.RangeIndex)
    schema = pa.Schema.from_pandas(frame, preserve_index=None if ranged else True)  # dtypes only: no data read
    metadata = {**(schema.metadata or {}), **meta}
    for i in range(0, max(1, len(frame)), step):
        part = pa.Table.from_pandas(frame.iloc[i : i + step], preserve_index=not ranged)
        yield part.replace_schema_metadata(metadata)


def _write_chunks(obj: Any, kind: str, fp: str, path: Path) -> None:
    """Write ``obj`` to ``path`` as Parquet, one row group per chunk (fsynced): never a whole copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for table in _row_chunks(obj, kind):
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, use_dictionary=False, write_page_checksum=True)
            writer.write_table(table, row_group_size=max(1, len(table)))
            del table
            pa.default_memory_pool().release_unused()
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise UnsupportedSnapshotError(fp, f"cannot convert to Arrow: {exc}") from exc
    finally:
        if writer is not None:
            writer.close()
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _streamed_fingerprint(path: Path) -> tuple[str, Any]:
    """The fingerprint of the object a streamed snapshot file holds, read one row group at a time, and
    that object without its rows (an ndarray: empty, of its dtype)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nbmlops.data.fingerprint import ChunkedFingerprint

    pool = pa.default_memory_pool()
    with pq.ParquetFile(path, page_checksum_verification=True) as parquet:
        schema = parquet.schema_arrow
        info = json.loads(schema.metadata[_META_KEY])
        rows = parquet.metadata.num_rows
        if info["kind"] == "ndarray":
            template = np.empty(0, np.dtype(info["dtype"]))
            digest = ChunkedFingerprint(template, tuple(info["shape"]))
            fields, index_fields = ["values"], []
        else:
            template = _rebuild(schema.empty_table())
            index_fields = schema.pandas_metadata["index_columns"]
            ranged = [f for f in index_fields if isinstance(f, dict)]  # a RangeIndex, kept as metadata
            if ranged:  # without rows pandas cannot rebuild it, and names the default one None
                template = template.set_axis(pd.RangeIndex(0, name=ranged[0]["name"]))
            digest = ChunkedFingerprint(template, (rows, *template.shape[1:]))
            fields = [c["field_name"] for c in schema.pandas_metadata["columns"]][: _width(template)]
        done = 0
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, use_threads=False)
            columns = [_values(table.column(f)) for f in fields]
            index = [
                f["start"] + f["step"] * np.arange(done, done + len(table), dtype=np.int64) if isinstance(f, dict)
                else _values(table.column(f))
                for f in index_fields
            ]
            digest.update(columns, index or None)
            done += len(table)
            del table, columns, index
            pool.release_unused()  # Arrow's allocator keeps freed row groups otherwise: the peak grew with the file
        return digest.hexdigest(), template


def _values(column: Any) -> Any:
    """A read-back column as :class:`~nbmlops.data.fingerprint.ChunkedFingerprint` takes it: strings as
    Arrow gives them, everything else as numpy (null numbers as NaN, null datetimes as NaT)."""
    import pyarrow as pa

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    return column.to_numpy(zero_copy_only=False)


def _width(template: Any) -> int:
    """How many data columns a rebuilt frame (or Series: one) has."""
    return template.shape[1] if template.ndim == 2 else 1


def _read(path: Path) -> Any:
    """Rebuild the object stored in a snapshot file."""
    import pyarrow.parquet as pq

    return _rebuild(pq.read_table(path, page_checksum_verification=True))


def _rebuild(table: Any) -> Any:
    """The object a snapshot's Arrow table stands for (an ndarray, a frame or a Series)."""
    import numpy as np
    import pandas as pd

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


def _raise_if_stale(obj: Any, digest: str) -> None:
    """Raise :class:`StaleFingerprintError` when ``obj`` no longer has the fingerprint ``digest``."""
    try:
        actual = _fingerprint(obj)
    except (TypeError, ValueError):  # UnsupportedDataError: it changed into something else
        actual = None
    if actual != digest:
        raise StaleFingerprintError(digest, actual)


def _mismatch(obj: Any, back: Any) -> str:
    """Say which columns changed type on the way through Parquet."""
    before: Any = getattr(obj, "dtypes", None)
    after: Any = getattr(back, "dtypes", None)
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


def _copy_hashed(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` (fsynced) and return the fingerprint of the bytes copied."""
    import xxhash

    digest, buf = xxhash.xxh3_128(), bytearray(_COPY_BYTES)
    view = memoryview(buf)
    with open(source, "rb") as src, open(target, "wb") as dst:
        while n := src.readinto(buf):
            digest.update(view[:n])
            dst.write(view[:n])
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


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
