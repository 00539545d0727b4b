"""Full-content fingerprints of data sets.

``fingerprint(obj)`` returns 32 lowercase hex characters (an xxh3-128 digest, short enough for
MLflow's 36-character dataset digest column). Every value of a frame is hashed, column by column,
straight from its buffers, so the digest changes when any value anywhere changes (MLflow's own
pandas digest only looks at the first 10,000 rows).

What is part of a frame's digest: its shape; column labels (any hashable, type-tagged, duplicates
and order kept) and the columns' axis names; each column's dtype (a timezone, a categorical's
categories and ordering, a string dtype's storage and missing-value marker); every value, with
missing positions; the index values, names and dtypes.

What is not: memory layout (C or Fortran order, consolidated blocks or not, strides, byte order,
Arrow chunk boundaries and slice offsets), the bytes hidden under a missing value (nullable
masks, Arrow validity), the payload and sign of a float NaN (all NaNs hash alike), whether an
integer index is a ``RangeIndex`` or a materialised one, ``DataFrame.attrs`` and flags.

Floats are otherwise hashed bit for bit: ``-0.0`` and ``0.0`` differ, as they do under
``np.signbit`` and division. A categorical's category order counts even when it is unordered.
Object columns: a run of plain strings (or bytes) is pickled (protocol 5, without the memo, so
repeated objects and equal copies hash alike); other cells get a type-tagged canonical encoding
(dicts and sets sorted, arrays and frames by their own digest, other objects by their ``repr``,
which must show their content: a ``repr`` with a memory address is rejected; a value that contains
itself is rejected with :class:`~nbmlops.exceptions.FingerprintError`). ``None``, ``NaN``,
``pd.NA`` and ``NaT`` are told apart.

Digests are stable across processes and machines (never ``hash()``, ids or addresses; byte order
fixed to little-endian); they may change with the major versions of the libraries whose formats
they read (pandas, pyarrow, the pickle protocol).

A file's digest is the plain xxh3-128 of its bytes (the same as ``xxh128sum``), as is that of a
``bytes`` object. A directory's digest covers the sorted relative POSIX paths of its entries, each
file's digest, empty directories, and symbolic links as link text (never followed).
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from pathlib import PurePath
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import xxhash

from nbmlops.exceptions import FingerprintError, UnsupportedDataError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["ChunkedFingerprint", "fingerprint"]

_CHUNK_BYTES = 1 << 21  # bound on every temporary copy (2 MiB)
_CHUNK_ITEMS = 1 << 14  # Python objects converted at a time
_READ_BYTES = 1 << 22
_NAN = struct.pack("<d", float("nan"))


def fingerprint(obj: object) -> str:
    """Return the full-content digest of ``obj`` as 32 lowercase hex characters.

    Accepts a pandas DataFrame, Series or Index, a numpy ndarray, a path (``str`` or
    ``os.PathLike``) naming a file or directory, or ``bytes``. The digest is the same in every
    process and on every machine for equal content (see the module docstring for what counts).

    Raises:
        UnsupportedDataError: for any other object, or a value that cannot be encoded
            deterministically inside an object column.
        FingerprintError: a value inside the data contains itself or is nested too deeply.
        FileNotFoundError: if a path names nothing.
    """
    try:
        digest = _data_digest(obj)
    except RecursionError:
        raise FingerprintError(
            _type_name(obj),
            f"cannot fingerprint this {_type_name(obj)}: a value inside it contains itself "
            "or is nested too deeply",
        ) from None
    if digest is None:
        if isinstance(obj, (str, os.PathLike)):
            digest = _path_digest(os.fspath(obj))
        elif isinstance(obj, (bytes, bytearray)):
            digest = xxhash.xxh3_128_digest(obj)
        else:
            raise UnsupportedDataError(_type_name(obj))
    return digest.hex()


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _data_digest(obj: object) -> bytes | None:
    """Digest of a pandas or numpy object, or None when ``obj`` is neither."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series, pd.Index)):
        if isinstance(obj, pd.DataFrame):
            return _frame_digest(obj)
        if isinstance(obj, pd.Series):
            return _series_digest(obj)
        return _index_digest(obj)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        if isinstance(obj, np.ma.MaskedArray):
            raise UnsupportedDataError(_type_name(obj), "masked arrays are not supported")
        return _ndarray_digest(obj)
    return None


# --- canonical encoding of Python values (labels, header fields, object cells) ---


def _sized(tag: bytes, payload: bytes) -> bytes:
    return tag + len(payload).to_bytes(8, "little") + payload


def _encode(x: Any) -> bytes:
    """Self-delimiting, type-tagged bytes for one Python value; equal values give equal bytes."""
    if x is None:
        return b"N"
    if isinstance(x, str):
        return _sized(b"s", x.encode("utf-8", "surrogatepass"))
    if isinstance(x, bool):
        return b"T" if x else b"F"
    if isinstance(x, int):
        return _sized(b"i", x.to_bytes(x.bit_length() // 8 + 1, "little", signed=True))
    if isinstance(x, float):
        return b"f" + (_NAN if x != x else struct.pack("<d", x))
    if isinstance(x, (bytes, bytearray)):
        return _sized(b"b", bytes(x))
    if isinstance(x, (tuple, list)):
        return _sized(b"t" if isinstance(x, tuple) else b"l", b"".join(map(_encode, x)))
    if isinstance(x, (set, frozenset)):
        return _sized(b"S", b"".join(sorted(map(_encode, x))))
    if isinstance(x, dict):
        return _sized(b"d", b"".join(sorted(_encode(k) + _encode(v) for k, v in x.items())))
    digest = _data_digest(x)
    if digest is not None:
        return b"a" + digest
    text = repr(x)
    if " at 0x" in text:  # the default repr, or another that shows a memory address
        raise UnsupportedDataError(
            _type_name(x), f"cannot fingerprint a value of type {_type_name(x)}: no stable repr"
        )
    return _sized(b"r", f"{_type_name(x)}:{text}".encode("utf-8", "surrogatepass"))


def _dtype_tag(dtype: Any) -> str:
    if type(dtype).__name__ == "StringDtype":  # str() hides the storage and the NA marker
        return f"string[{dtype.storage}, {dtype.na_value}]"
    if hasattr(dtype, "newbyteorder") and dtype.kind != "T":  # numpy: byte order is layout
        return str(dtype.newbyteorder("<"))
    return str(dtype)


# --- the hash streams of one column ---


class _Column:
    """The hash streams of one column.

    ``values`` gets fixed-width values (little-endian, C order, missing slots zeroed, NaN
    canonical) or the concatenated bytes of variable-size values, whose lengths go to
    ``lengths``; ``nulls`` gets the row positions of missing values. However the content is laid
    out or chunked, equal content feeds equal streams.
    """

    def __init__(self) -> None:
        self.values = xxhash.xxh3_128()
        self.lengths = xxhash.xxh3_128()
        self.nulls = xxhash.xxh3_128()
        self.pos = 0  # items fed so far

    def digest(self) -> bytes:
        return self.values.digest() + self.lengths.digest() + self.nulls.digest()

    def ndarray(self, a: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Feed a numpy array in C order along its first axis; ``mask`` marks missing rows."""
        if a.dtype.kind in "OT":  # Python objects, or numpy's variable-width StringDType
            self._objects(a.reshape(-1).astype(object, copy=False))
        else:
            self._fixed(a, mask)
            self.pos += len(a) if a.ndim else 1

    def arrow(self, chunk: pa.Array) -> None:
        """Feed one Arrow array (a chunk of a column)."""
        import numpy as np
        import pyarrow as pa

        t = chunk.type
        if isinstance(chunk, pa.ExtensionArray):
            return self.arrow(chunk.storage)
        if pa.types.is_dictionary(t):
            return self.arrow(chunk.dictionary_decode())
        if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
            return self.arrow(
                chunk.cast(pa.large_string() if t == pa.string_view() else pa.large_binary())
            )
        mask = chunk.is_null().to_numpy(zero_copy_only=False) if chunk.null_count else None
        if pa.types.is_boolean(t):
            self._fixed(chunk.fill_null(False).to_numpy(zero_copy_only=False), mask)
        elif t in (pa.string(), pa.large_string(), pa.binary(), pa.large_binary()):
            self._strings(chunk, mask)
        elif _byte_width(t):
            w = _byte_width(t)
            kind = "f" if pa.types.is_floating(t) else "u"
            dtype = np.dtype(f"={kind}{w}") if w in (1, 2, 4, 8) else np.dtype((np.void, w))
            self._fixed(
                np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * w), mask
            )
        else:  # nested and other types: one canonical encoding per value
            if mask is not None:
                self._nulls(mask, 0)
            for i in range(0, len(chunk), _CHUNK_ITEMS):
                self.values.update(b"".join(map(_encode, chunk.slice(i, _CHUNK_ITEMS).to_pylist())))
        self.pos += len(chunk)

    def _nulls(self, mask: np.ndarray, start: int) -> None:
        import numpy as np

        self.nulls.update(_raw((np.flatnonzero(mask) + (self.pos + start)).astype("<i8")))

    def _fixed(self, a: np.ndarray, mask: np.ndarray | None) -> None:
        import numpy as np

        le = a.dtype.newbyteorder("<")
        a = a.reshape(1) if a.ndim == 0 else a
        if mask is None and a.dtype.kind not in "fc" and a.dtype == le and a.flags.c_contiguous:
            self.values.update(_raw(a.reshape(-1).view(np.uint8)))  # zero-copy
            return
        step = max(1, _CHUNK_BYTES // max(1, a[:1].nbytes))
        for i in range(0, len(a), step):
            c = np.ascontiguousarray(a[i : i + step]).astype(le, copy=False)
            if mask is not None and (m := mask[i : i + step]).any():
                self._nulls(m, i)
                c = np.where(m.reshape(m.shape + (1,) * (c.ndim - 1)), np.zeros((), le), c)
            if le.kind in "fc":
                f = c.view(f"<f{le.itemsize // 2 if le.kind == 'c' else le.itemsize}")
                if np.isnan(f.min()):  # min() propagates NaN and is cheaper than isnan()
                    c = np.where(np.isnan(f), np.nan, f)
            self.values.update(_raw(c.reshape(-1).view(np.uint8)))

    def _strings(self, chunk: pa.Array, mask: np.ndarray | None) -> None:
        """Feed string or binary values: their bytes, and their lengths as int64."""
        import numpy as np
        import pyarrow as pa

        def offsets_of(chunk: pa.Array) -> np.ndarray:
            width = 8 if chunk.type in (pa.large_string(), pa.large_binary()) else 4
            return np.frombuffer(
                chunk.buffers()[1], f"=i{width}", len(chunk) + 1, chunk.offset * width
            )

        offsets = offsets_of(chunk)
        if mask is not None and (offsets[1:][mask] != offsets[:-1][mask]).any():
            chunk = chunk.fill_null(pa.scalar(b"", type=chunk.type))  # drop bytes behind nulls
            offsets = offsets_of(chunk)
        step = _CHUNK_BYTES // 8
        for i in range(0, len(chunk), step):
            self.lengths.update(_raw(np.diff(offsets[i : i + step + 1]).astype("<i8")))
            if mask is not None and (m := mask[i : i + step]).any():
                self._nulls(m, i)
        if len(chunk) and chunk.buffers()[2] is not None:
            self.values.update(memoryview(chunk.buffers()[2])[offsets[0] : offsets[-1]])

    def _objects(self, a: np.ndarray) -> None:
        """Feed a 1-D object array chunk by chunk.

        A chunk of only str (or only bytes) is pickled, the fastest serialisation that runs in
        one C pass; with nulls among them it goes through Arrow, and the kind of each null
        (None, NaN, NA, NaT) is added; anything else is encoded value by value.
        """
        import pandas as pd
        import pyarrow as pa

        infer = pd.api.types.infer_dtype
        pickler = _Pickler(SimpleNamespace(write=self.values.update), 5)
        pickler.fast = True  # no memo: a repeated object must not become a back-reference
        for i in range(0, len(a), _CHUNK_ITEMS):
            part = a[i : i + _CHUNK_ITEMS]
            if infer(part, skipna=False) in ("string", "bytes"):
                self.values.update(b"P")
                pickler.dump(part.tolist())
                self.pos += len(part)
                continue
            kind = {"string": pa.large_string(), "bytes": pa.large_binary()}
            t = kind.get(infer(part, skipna=True))
            try:
                arr = None if t is None else pa.array(part, type=t, from_pandas=True)
            except (pa.ArrowException, UnicodeError):  # e.g. lone surrogates
                arr = None
            if arr is None:
                self.values.update(b"E" + b"".join(map(_encode, part)))
                self.pos += len(part)
                continue
            self.values.update(b"A")
            self.arrow(arr)
            missing = part[arr.is_null().to_numpy(zero_copy_only=False)]
            self.values.update(b"".join(map(_encode, missing)))


class _Pickler(pickle.Pickler):
    """Pickler for lists of str or bytes; a subclass instance is pickled as a plain value."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return str, (str.__str__(obj),)
        if isinstance(obj, bytes):
            return bytes, (bytes(memoryview(obj)),)
        return NotImplemented


def _byte_width(t: pa.DataType) -> int:
    """Byte width of a fixed-width Arrow type, 0 for other types."""
    try:
        bits = t.bit_width
    except ValueError:
        return 0
    return bits // 8 if bits % 8 == 0 else 0


# --- numpy and pandas objects ---


def _ndarray_digest(a: np.ndarray) -> bytes:
    head = _encode(("ndarray", a.shape, _dtype_tag(a.dtype)))
    return xxhash.xxh3_128_digest(head + _ndarray_values(a))


def _ndarray_values(a: np.ndarray) -> bytes:
    if a.dtype.names:  # fields one by one: padding between them is not content
        return b"".join(_ndarray_values(a[name]) for name in a.dtype.names)
    column = _Column()
    column.ndarray(a)
    return column.digest()


def _array_digest(arr: Any) -> bytes:
    """Digest of the values of a pandas array (``Series.array``, ``Index.array``)."""
    import numpy as np
    import pandas as pd

    column, extra = _Column(), b""
    if isinstance(arr.dtype, pd.CategoricalDtype):
        column.ndarray(arr.codes)
        extra = _index_digest(arr.categories) + _encode(arr.ordered)
    elif isinstance(arr.dtype, pd.IntervalDtype):
        extra = _array_digest(arr.left.array) + _array_digest(arr.right.array)
    elif hasattr(arr, "_mask"):  # nullable Int/Float/boolean: data under the mask is garbage
        column.ndarray(arr._data, arr._mask)
    elif hasattr(arr, "_ndarray"):  # numpy-backed: plain, datetime, timedelta, period, str
        column.ndarray(arr._ndarray)
    elif hasattr(arr, "__arrow_array__"):
        data = arr.__arrow_array__()
        for chunk in getattr(data, "chunks", [data]):
            column.arrow(chunk)
    else:
        column.ndarray(np.asarray(arr))
    return column.digest() + extra


def _range_values(index: Any) -> bytes:
    """Hash a RangeIndex like the int64 index it stands for, without materialising it."""
    import numpy as np

    column, step = _Column(), _CHUNK_BYTES // 8
    for i in range(0, len(index), step):
        column.ndarray(
            index.start + index.step * np.arange(i, min(len(index), i + step), dtype=np.int64)
        )
    return column.digest()


def _index_digest(index: Any) -> bytes:
    import pandas as pd

    levels = (
        [index.get_level_values(i) for i in range(index.nlevels)]
        if isinstance(index, pd.MultiIndex)
        else [index]
    )
    h = xxhash.xxh3_128(
        _encode(("Index", len(index), list(index.names), [_dtype_tag(lv.dtype) for lv in levels]))
    )
    for level in levels:
        h.update(
            _range_values(level) if isinstance(level, pd.RangeIndex) else _array_digest(level.array)
        )
    return h.digest()


def _series_digest(s: Any) -> bytes:
    h = xxhash.xxh3_128(_encode(("Series", len(s), s.name, _dtype_tag(s.dtype))))
    h.update(_array_digest(s.array))
    h.update(_index_digest(s.index))
    return h.digest()


def _frame_digest(df: Any) -> bytes:
    labels = [(name, _dtype_tag(dtype)) for name, dtype in zip(df.columns, df.dtypes)]
    h = xxhash.xxh3_128(_encode(("DataFrame", df.shape, list(df.columns.names), labels)))
    for _, column in df.items():
        h.update(_array_digest(column.array))
    h.update(_index_digest(df.index))
    return h.digest()


class ChunkedFingerprint:
    """The fingerprint of a DataFrame, Series or ndarray of fixed-width numpy values, fed in row chunks.

    ``template`` has the structure of the whole object (a frame's column labels and axis names, the
    dtypes, a Series' name, the index's names and dtype; its rows are not read) and ``shape`` is the
    whole object's shape. Feed the rows in order with :meth:`update`: for a frame or Series one
    array per column and one per index level, for an ndarray its values in C order (any split).
    :meth:`hexdigest` is then :func:`fingerprint` of the whole object; only one chunk is ever held.
    Columns must be numpy arrays of numbers, booleans, datetimes or timedeltas (no masks, no objects), or
    pyarrow-backed strings given as Arrow arrays.
    """

    def __init__(self, template: Any, shape: tuple[int, ...]) -> None:
        import pandas as pd

        self.shape = tuple(int(n) for n in shape)
        if isinstance(template, pd.DataFrame):
            labels = [(name, _dtype_tag(dtype)) for name, dtype in zip(template.columns, template.dtypes)]
            self._head = _encode(("DataFrame", self.shape, list(template.columns.names), labels))
        elif isinstance(template, pd.Series):
            self._head = _encode(("Series", self.shape[0], template.name, _dtype_tag(template.dtype)))
        else:
            self._head = _encode(("ndarray", self.shape, _dtype_tag(template.dtype)))
        self._ndarray = not isinstance(template, (pd.DataFrame, pd.Series))
        width = 1 if self._ndarray else len(getattr(template, "columns", [None]))
        self._columns = [_Column() for _ in range(width)]
        self._index: list[_Column] = []
        if not self._ndarray:
            index = template.index
            levels = [index.get_level_values(i) for i in range(index.nlevels)]
            tags = [_dtype_tag(level.dtype) for level in levels]
            self._index_head = _encode(("Index", self.shape[0], list(index.names), tags))
            self._index = [_Column() for _ in levels]

    def update(self, columns: list[Any], index: list[Any] | None = None) -> None:
        """Feed the next rows: one array per column (an ndarray's values: one array), one per index level.

        Each is a numpy array, or for a pyarrow-backed string column (pandas' ``str``) an Arrow array or
        chunked array of its strings."""
        import numpy as np

        if len(columns) != len(self._columns) or len(index or []) != len(self._index):
            raise ValueError("a chunk must have one array per column and one per index level")
        for column, values in zip(self._columns + self._index, [*columns, *(index or [])]):
            if isinstance(values, np.ndarray):
                column.ndarray(values)
            else:
                for chunk in getattr(values, "chunks", [values]):
                    column.arrow(chunk)

    def hexdigest(self) -> str:
        """The fingerprint of everything fed, as 32 lowercase hex characters."""
        if self._ndarray:
            return xxhash.xxh3_128_digest(self._head + self._columns[0].digest()).hex()
        h = xxhash.xxh3_128(self._head)
        for column in self._columns:
            h.update(column.digest())
        index = xxhash.xxh3_128(self._index_head)
        for level in self._index:
            index.update(level.digest())
        h.update(index.digest())
        return h.hexdigest()


# --- files and directories ---


def _file_digest(path: str) -> bytes:
    h, buf = xxhash.xxh3_128(), bytearray(_READ_BYTES)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


def _raise(error: OSError) -> None:
    raise error


def _raw(array: Any) -> memoryview:
    """The bytes of a contiguous numpy array, without a copy (numpy's stubs declare its buffer only for 3.12+)."""
    return memoryview(array)


def _dir_digest(root: str) -> bytes:
    entries: list[tuple[str, ...] | tuple[str, str, bytes]] = []
    for parent, dirs, files in os.walk(root, onerror=_raise):  # links are listed, not followed
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = PurePath(os.path.relpath(path, root)).as_posix()
            if os.path.islink(path):
                entries.append((rel, "link", os.readlink(path)))
            elif os.path.isdir(path):
                entries.append((rel, "dir"))
            elif os.path.isfile(path):
                entries.append((rel, "file", _file_digest(path)))
    entries.sort()
    return xxhash.xxh3_128_digest(_encode(("directory", entries)))


def _path_digest(path: str) -> bytes:
    if os.path.isdir(path):
        return _dir_digest(path)
    if os.path.isfile(path):
        return _file_digest(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(2, "nothing to fingerprint at this path", path)
    raise UnsupportedDataError(
        "path", f"cannot fingerprint {path!r}: not a regular file or directory"
    )
