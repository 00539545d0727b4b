"""Serving runs and their traffic datasets in the store (see :mod:`nbmlops.serving.recorder`).

Logged request bodies are read with MLflow's own scoring-server parsers (``mlflow.pyfunc.scoring_server``:
JSON in each of its formats, CSV, Parquet), so a row holds what the model was given. The traffic dataset schema
(one row per input row of each logged request):

``request_id`` (str), ``row`` (int, the input row within the request), ``timestamp`` (datetime64[ns, UTC], the
request's start), ``model_version`` (int), ``status`` (int, the HTTP status), ``latency_ms`` (float),
``input.<column>`` per input column (a request whose body does not parse: one row, no input values),
``prediction`` (one output) or ``prediction.<name>`` (several), ``shadow.model_version``, ``shadow.prediction``
(or ``shadow.prediction.<name>``), ``shadow.latency_ms`` (null when not shadowed), ``error`` (str, null on
success). Feedback: ``request_id``, ``row``, ``label``, ``timestamp``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.backend.downloads import quiet_downloads
from nbmlops.backend.tags import RUN_KEY_TAG
from nbmlops.exceptions import RecordRejected

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from nbmlops.backend.store import Store

__all__ = [
    "REQUEST_COLUMNS", "SERVE_EXPERIMENT_PREFIX", "create_serving_run", "end_serving_run",
    "feedback_frame", "log_frame", "log_summary", "read_frames", "request_frame", "run_state", "set_run_tags",
]

SERVE_EXPERIMENT_PREFIX = "serve/"
KIND_TAG, ALIAS_TAG = "nbmlops.kind", "nbmlops.serve.alias"
#: the fixed columns of a traffic dataset, in order (``input.*``, ``prediction*``, ``shadow.prediction*`` go
#: between ``latency_ms`` and ``shadow.model_version``)
REQUEST_COLUMNS = ("request_id", "row", "timestamp", "model_version", "status", "latency_ms")
SHADOW_COLUMNS = ("shadow.model_version", "shadow.latency_ms")
_MAX_TAG = 5000
_PARQUET_FILE = re.compile(r"[^/]+\.parquet")


# -- the serving run -------------------------------------------------------------------------------


def create_serving_run(store: Store, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
    """Create a RUNNING run in ``experiment`` (made if missing) once, even when a reply is lost; its id."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    experiment_id = store.experiment_id(experiment)
    key = uuid.uuid4().hex
    all_tags = {**tags, RUN_KEY_TAG: key, MLFLOW_RUN_NAME: run_name}
    client = store.client
    return store.create_run_once(
        experiment_id, key, lambda: client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    )


def set_run_tags(store: Store, run_id: str, tags: Mapping[str, str]) -> None:
    """Set ``tags`` on a run in one call (values cut to MLflow's limit)."""
    if not tags:
        return
    from mlflow.entities import RunTag

    client = store.client
    batch = [RunTag(k, str(v)[:_MAX_TAG]) for k, v in tags.items()]
    store._call(lambda: client.log_batch(run_id, tags=batch))


def log_summary(store: Store, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int) -> None:
    """Log summary metrics at ``step`` with a fixed timestamp: sent again, they are stored once."""
    from mlflow.entities import Metric

    client = store.client
    batch = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
    store._call(lambda: client.log_batch(run_id, metrics=batch))


def run_state(store: Store, run_id: str) -> tuple[str, dict[str, str]] | None:
    """A run's status and tags; None when the store does not hold it (deleted)."""
    client = store.client
    try:
        run = store._call(lambda: client.get_run(run_id))
    except RecordRejected:
        return None
    if run.info.lifecycle_stage == "deleted":
        return None
    return run.info.status, dict(run.data.tags)


def end_serving_run(store: Store, run_id: str, status: str) -> None:
    """End a RUNNING run with ``status``; a run already ended is left as it is."""
    state = run_state(store, run_id)
    if state is None or state[0] != "RUNNING":
        return
    client = store.client
    store._call(lambda: client.set_terminated(run_id, status))


def log_frame(store: Store, run_id: str, path: str, frame: pd.DataFrame, context: str | None) -> None:
    """Upload ``frame`` as the Parquet artifact ``path`` of a run (the same path again replaces it); with a
    ``context``, also log it as a dataset input of the run, digest = nbmlops' content fingerprint (the same
    frame again adds nothing)."""
    from nbmlops.data.fingerprint import fingerprint

    folder, _, name = path.rpartition("/")
    client = store.client
    with tempfile.TemporaryDirectory(prefix="nbmlops-traffic-") as tmp:
        local = Path(tmp, name)
        _write_parquet(frame, local)
        store._call(lambda: client.log_artifact(run_id, str(local), folder or None))
    if context is None:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=path,
        digest=fingerprint(frame),
        source_type="mlflow_run_artifact",
        source=json.dumps({"uri": f"runs:/{run_id}/{path}"}),
        schema=_schema(frame),
        profile=json.dumps({"num_rows": len(frame)}),
    )
    inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
    store._call(lambda: client.log_inputs(run_id, datasets=inputs))


def _schema(frame: pd.DataFrame) -> str | None:
    """The MLflow schema of a traffic frame, as ``_infer_schema(frame)`` gives it, column by column (MLflow types
    each column on its own) from :func:`_sample`: a few rows where MLflow would look at every value in Python
    (0.3 ms of CPU per 16-row request otherwise)."""
    try:
        from mlflow.types.schema import ColSpec, Schema, TensorSpec
        from mlflow.types.utils import _infer_pandas_column, _infer_required

        specs: list[ColSpec | TensorSpec] = []
        for name in frame.columns:
            column, required = _sample(frame[name])
            specs.append(ColSpec(type=_infer_pandas_column(column), name=name,
                                 required=_infer_required(column) if required is None else required))
        return json.dumps({"mlflow_colspec": Schema(specs).to_dict()})
    except Exception:  # a column MLflow cannot type (lists, mixed objects): the dataset has no schema
        return None


#: the numpy dtype kinds MLflow types from the dtype alone (bool, integers, floats, datetimes)
_TYPED_KINDS = frozenset("biufM")


def _sample(column: pd.Series) -> tuple[pd.Series, bool | None]:
    """What MLflow needs to type ``column`` as it would type all of it, and whether it is required (no null), or
    None for MLflow to tell from the sample.

    A column of a numpy dtype (or pandas' ``Int64``, ``datetime64[ns, tz]``) is typed from its dtype; it is required
    when it holds no null (``isna``: the NaN, ``NA`` and ``NaT`` MLflow looks for). A column of only strings, or of
    strings and None, is typed from the first value of each of those types, in their order (MLflow's array typing
    goes value by value, the first that is not None fixing the type, and None changes nothing after it). Any
    other column is given whole."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if (isinstance(dtype, np.dtype) and dtype.kind in _TYPED_KINDS) or isinstance(
        dtype, (pd.Int64Dtype, pd.DatetimeTZDtype)
    ):
        return column.iloc[:1], not bool(column.isna().any())
    if ((isinstance(dtype, np.dtype) and dtype.kind == "O") or isinstance(dtype, pd.StringDtype)) and len(column):
        values = column.tolist()
        kinds = set(map(type, values))
        if kinds <= {str, type(None)}:
            first = sorted(next(i for i, v in enumerate(values) if type(v) is kind) for kind in kinds)
            return column.iloc[first], None
    return column, None


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame``; an object column Arrow cannot type (mixed values) is written as text."""
    import pyarrow as pa

    try:
        frame.to_parquet(path, index=False)
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        pass
    fixed = frame.copy()
    for name in fixed.columns:
        if fixed[name].dtype == object:
            fixed[name] = fixed[name].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))
    fixed.to_parquet(path, index=False)


# -- rows from records -----------------------------------------------------------------------------


def request_frame(requests: Iterable[dict[str, Any]], shadows: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """The traffic rows of logged request records (those with a body), joined to their shadow records by id.

    The common JSON bodies and answers (see :func:`_fast_inputs`, :func:`_fast_predictions`) are read with one
    ``json.loads`` each into column lists, and consecutive records of one column layout become one frame; any
    other record is read with MLflow's parsers (:func:`_record_frame`). Both give the same rows, columns and
    dtypes: the frames are concatenated as the records' own frames would be."""
    return _request_frame(requests, shadows, fast=True)


def _request_frame(requests: Iterable[dict[str, Any]], shadows: Mapping[str, dict[str, Any]], *,
                   fast: bool) -> pd.DataFrame:
    """:func:`request_frame`; ``fast=False`` reads every record with MLflow's parsers (what tests compare to)."""
    import pandas as pd

    frames: list[pd.DataFrame] = []
    run: list[_Columns] = []
    layout: tuple[object, ...] | None = None
    for record in requests:
        shadow = shadows.get(str(record.get("id")))
        columns = _fast_record(record, shadow) if fast else None
        if columns is None or columns.layout != layout:
            if run:
                frames.append(_run_frame(run))
            run, layout = [], None
        if columns is None:
            frames.append(_record_frame(record, shadow))
        else:
            run.append(columns)
            layout = columns.layout
    if run:
        frames.append(_run_frame(run))
    if not frames:
        return pd.DataFrame(columns=[*REQUEST_COLUMNS, *SHADOW_COLUMNS, "error"])
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    for name in ("model_version", "status", "shadow.model_version"):
        frame[name] = frame[name].astype("Int64")
    frame["latency_ms"] = frame["latency_ms"].astype("float64")
    frame["shadow.latency_ms"] = frame["shadow.latency_ms"].astype("float64")
    frame["error"] = frame["error"].astype(object)
    return frame[_ordered(frame.columns)]


def _record_frame(record: dict[str, Any], shadow: dict[str, Any] | None) -> pd.DataFrame:
    """The rows of one logged request, its body read with MLflow's scoring-server parsers."""
    import pandas as pd

    inputs = _inputs(record)
    count = max(len(inputs), 1) if inputs is not None else 1
    base = pd.DataFrame(
        {
            "request_id": [str(record.get("id"))] * count,
            "row": range(count),
            "timestamp": pd.to_datetime([float(record.get("ts") or 0.0)] * count, unit="s", utc=True),
            "model_version": [_int(record.get("version"))] * count,
            "status": [_int(record.get("status"))] * count,
            "latency_ms": [_float(record.get("latency_ms"))] * count,
        }
    )
    parts = [base]
    if inputs is not None and len(inputs):
        parts.append(inputs.add_prefix("input.").reset_index(drop=True))
    parts.append(_predictions(record.get("response"), count, "prediction"))
    shadowed = pd.DataFrame(
        {
            "shadow.model_version": [_int(shadow.get("version")) if shadow else None] * count,
            "shadow.latency_ms": [_float(shadow.get("latency_ms")) if shadow else None] * count,
        }
    )
    parts.append(shadowed)
    if shadow is not None:
        parts.append(_predictions(shadow.get("response"), count, "shadow.prediction"))
    parts.append(pd.DataFrame({"error": [record.get("error") if record.get("error") else None] * count}))
    return pd.concat(parts, axis=1)


# -- the common bodies, read straight into columns -------------------------------------------------

#: a column's kind, as pandas types a list of such values: all int, ints and floats, all bool, all str, all None
_KINDS = {frozenset({int}): "i", frozenset({float}): "f", frozenset({int, float}): "f", frozenset({bool}): "b",
          frozenset({str}): "s", frozenset({type(None)}): "n"}
_INT64 = (-(2**63), 2**63 - 1)
_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class _Columns:
    """The rows of one logged request as column lists: ``count`` rows; ``data`` maps each dynamic column
    (``input.*``, ``prediction*``, ``shadow.prediction*``) to its kind and values; ``layout`` names them in order
    with their kinds (records of one layout make one frame, typed as each record's own frame would be)."""

    __slots__ = ("count", "data", "layout", "record", "shadow")

    def __init__(self, record: dict[str, Any], shadow: dict[str, Any] | None, count: int,
                 data: dict[str, tuple[str, list[Any]]]) -> None:
        self.record, self.shadow, self.count, self.data = record, shadow, count, data
        self.layout = (shadow is not None, *((name, kind) for name, (kind, _) in data.items()))


def _kind(values: list[Any]) -> str | None:
    """The kind of a column of JSON scalars (None: another mix, read by MLflow's parsers)."""
    types = frozenset(map(type, values))
    kind = _KINDS.get(types)
    if int in types and kind is not None:
        ints = values if kind == "i" else [v for v in values if type(v) is int]
        if min(ints) < _INT64[0] or max(ints) > _INT64[1]:
            return None
    return kind


def _fast_record(record: dict[str, Any], shadow: dict[str, Any] | None) -> _Columns | None:
    """The columns of a request whose body and answers are common JSON; None for any other."""
    inputs = _fast_inputs(record)
    if inputs is None:
        return None
    count, columns = inputs
    data: dict[str, tuple[str, list[Any]]] = {}
    for name, values in columns:
        kind = _kind(values)
        if kind is None:
            return None
        data["input." + name] = (kind, values)
    for response, prefix in ((record.get("response"), "prediction"),
                             *(((shadow.get("response"), "shadow.prediction"),) if shadow is not None else ())):
        predictions = _fast_predictions(response, count, prefix)
        if predictions is None:
            return None
        for name, values in predictions:
            kind = _kind(values)
            if kind is None or name in data:
                return None
            data[name] = (kind, values)
    return _Columns(record, shadow, count, data)


def _fast_inputs(record: dict[str, Any]) -> tuple[int, list[tuple[str, list[Any]]]] | None:
    """``(rows, [(column, values)])`` of a JSON body in a common shape, read as MLflow's parsers read it
    (no columns, one row: a body they refuse); None for any other body. A column may still hold lists or dicts
    here: :func:`_kind` refuses it (one look at each column's value types, not a second scan)."""
    if record.get("body_b64") is not None:
        return None
    body = record.get("body")
    mime = str(record.get("content_type") or "").split(";")[0].strip().lower()
    if body is None or mime == "text/csv":
        return (1, []) if body is None else None
    try:
        decoded = json.loads(body)
    except (TypeError, ValueError):
        return 1, []
    if not isinstance(decoded, dict):
        return 1, []
    formats = [key for key in decoded if key in _FORMATS]
    if len(formats) != 1:
        return 1, []
    value = decoded[formats[0]]
    if formats[0] == "dataframe_split":
        if not isinstance(value, dict) or set(value) != {"columns", "data"}:
            return None
        return _from_rows(value["columns"], value["data"])
    if formats[0] == "dataframe_records" or (formats[0] == "instances" and isinstance(value, list) and value
                                             and isinstance(value[0], dict)):
        if not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
            return None
        names = list(value[0])
        if any(list(item) != names for item in value):
            return None
        return _from_rows(names, [list(item.values()) for item in value])
    if formats[0] == "inputs" and isinstance(value, dict):
        if not value or not all(isinstance(v, list) and v for v in value.values()):
            return None
        if len({len(v) for v in value.values()}) != 1 or not all(isinstance(k, str) for k in value):
            return None
        return len(next(iter(value.values()))), list(value.items())
    return _from_array(value)


def _from_rows(names: Any, rows: Any) -> tuple[int, list[tuple[str, list[Any]]]] | None:
    """Columns of rows under distinct string names, one value per name in every row (:func:`_kind` checks that
    they are scalars)."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    if len(set(names)) != len(names) or not isinstance(rows, list) or not rows:
        return None
    width = len(names)
    if not all(isinstance(row, list) and len(row) == width for row in rows):
        return None
    columns = [list(c) for c in zip(*rows, strict=True)]
    return len(rows), list(zip(names, columns, strict=True))


def _from_array(value: Any) -> tuple[int, list[tuple[str, list[Any]]]] | None:
    """``instances``/``inputs`` as a list of numbers (column ``0``) or of equal-length lists of numbers
    (columns ``0``, ``1``, ...: one array, one type for all)."""
    if not isinstance(value, list) or not value:
        return None
    if not isinstance(value[0], list):
        return (len(value), [("0", value)]) if _kind(value) in ("i", "f", "b") else None
    width = len(value[0])
    if not width or not all(isinstance(row, list) and len(row) == width for row in value):
        return None
    flat = [x for row in value for x in row]
    kind = _kind(flat)
    if kind not in ("i", "f", "b"):
        return None
    columns = [list(c) for c in zip(*value, strict=True)]
    if kind == "f":  # one float array: its integers are floats too
        columns = [[float(x) for x in column] for column in columns]
    return len(value), [(str(i), column) for i, column in enumerate(columns)]


def _response_values(response: Any) -> Any:
    """What an answer holds: its ``predictions`` (or the whole JSON when it has none); None for no JSON answer."""
    if not isinstance(response, str):
        return None
    try:
        decoded = json.loads(response)
    except ValueError:
        return None
    return decoded.get("predictions", decoded) if isinstance(decoded, dict) else decoded


def _fast_predictions(response: Any, count: int, prefix: str) -> list[tuple[str, list[Any]]] | None:
    """The ``prefix`` columns of an answer as :func:`_predictions` makes them, when its predictions are a list
    of scalars or of records with one set of keys; None for any other answer."""
    values = _response_values(response)
    if isinstance(values, dict):
        return None
    if not isinstance(values, list):
        return [(prefix, [None] * count)]
    values = (values + [None] * count)[:count] if len(values) != count else values
    if values and isinstance(values[0], dict):
        keys = list(values[0])
        if not keys or not all(isinstance(v, dict) and list(v) == keys for v in values):
            return None
        if len({str(k) for k in keys}) != len(keys):
            return None
        return [(f"{prefix}.{key}", [v[key] for v in values]) for key in keys]
    if any(isinstance(v, (dict, list)) for v in values):
        return None
    return [(prefix, values)]


def _run_frame(run: list[_Columns]) -> pd.DataFrame:
    """One frame of consecutive records of one layout, typed as the concatenation of their own frames."""
    import numpy as np
    import pandas as pd

    ids: list[str] = []
    rows: list[int] = []
    stamps: list[float] = []
    versions: list[int | None] = []
    statuses: list[int | None] = []
    latencies: list[float | None] = []
    shadow_versions: list[int | None] = []
    shadow_latencies: list[float | None] = []
    errors: list[Any] = []
    dynamic: dict[str, list[Any]] = {name: [] for name in run[0].data}
    for columns in run:
        record, shadow, count = columns.record, columns.shadow, columns.count
        ids += [str(record.get("id"))] * count
        rows += range(count)
        stamps += [float(record.get("ts") or 0.0)] * count
        versions += [_int(record.get("version"))] * count
        statuses += [_int(record.get("status"))] * count
        latencies += [_float(record.get("latency_ms"))] * count
        shadow_versions += [_int(shadow.get("version")) if shadow else None] * count
        shadow_latencies += [_float(shadow.get("latency_ms")) if shadow else None] * count
        errors += [record.get("error") if record.get("error") else None] * count
        for name, (_, values) in columns.data.items():
            dynamic[name] += values
    data: dict[str, Any] = {
        "request_id": ids,
        "row": np.array(rows, dtype="int64"),
        "timestamp": pd.to_datetime(stamps, unit="s", utc=True),
        "model_version": pd.array(versions, dtype="Int64"),
        "status": pd.array(statuses, dtype="Int64"),
        "latency_ms": np.array(latencies, dtype="float64"),
    }
    for name, (kind, _) in run[0].data.items():
        data[name] = np.array(dynamic[name], dtype=object) if kind == "n" else dynamic[name]
    data["shadow.model_version"] = pd.array(shadow_versions, dtype="Int64")
    data["shadow.latency_ms"] = np.array(shadow_latencies, dtype="float64")
    data["error"] = np.array(errors, dtype=object)
    return pd.DataFrame(data)


def _ordered(columns: Iterable[str]) -> list[str]:
    columns = list(columns)
    rank = {name: i for i, name in enumerate(REQUEST_COLUMNS)}

    def place(name: str) -> tuple[int, int]:
        if name in rank:
            return 0, rank[name]
        if name.startswith("input."):
            return 1, 0
        if name == "prediction" or name.startswith("prediction."):
            return 2, 0
        if name == "shadow.model_version":
            return 3, 0
        if name.startswith("shadow.prediction"):
            return 3, 1
        if name == "shadow.latency_ms":
            return 3, 2
        return 4, 0

    return sorted(columns, key=lambda name: (*place(name), columns.index(name)))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _inputs(record: dict[str, Any]) -> pd.DataFrame | None:
    """The input rows of a logged request as MLflow's scoring server parses them; None when they do not parse."""
    try:
        return _as_frame(_parse_body(record))
    except Exception:  # a body MLflow refused is logged with its error; its inputs are unknown
        return None


def _parse_body(record: dict[str, Any]) -> Any:
    from mlflow.pyfunc import scoring_server

    mime = str(record.get("content_type") or "").split(";")[0].strip().lower()
    if record.get("body_b64") is not None:
        return scoring_server.parse_parquet_input(io.BytesIO(base64.b64decode(record["body_b64"])))
    body = record.get("body")
    if body is None:
        return None
    if mime == scoring_server.CONTENT_TYPE_CSV:
        return scoring_server.parse_csv_input(io.StringIO(body))
    data, _ = scoring_server._split_data_and_params(body)
    return scoring_server.infer_and_parse_data(data)


def _as_frame(data: Any) -> pd.DataFrame | None:
    import numpy as np
    import pandas as pd

    if data is None:
        return None
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, pd.Series):
        frame = data.to_frame()
    elif isinstance(data, dict):
        columns = {str(k): _column(v) for k, v in data.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            return None
        frame = pd.DataFrame(columns)
    else:
        array = np.asarray(data)
        if array.ndim == 0:
            array = array.reshape(1)
        frame = pd.DataFrame(array if array.ndim <= 2 else list(array))
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _column(values: Any) -> list[Any]:
    import numpy as np

    array = np.asarray(values)
    if array.ndim == 0:
        return [array.item()]
    if array.ndim == 1:
        return list(array)
    return [row.tolist() for row in array]


def _predictions(response: Any, count: int, prefix: str) -> pd.DataFrame:
    """The ``prefix`` columns of a response's predictions, one per input row (null where it has none)."""
    import pandas as pd

    values = _response_values(response)
    if isinstance(values, dict):  # a column-oriented output: {"name": [..], ...}
        try:
            values = pd.DataFrame(values).to_dict("records")
        except ValueError:
            values = [values]
    if not isinstance(values, list):
        return pd.DataFrame({prefix: [None] * count})
    values = (values + [None] * count)[:count] if len(values) != count else values
    if any(isinstance(v, dict) for v in values):
        keys: list[str] = []
        for value in values:
            for key in value if isinstance(value, dict) else ():
                if str(key) not in keys:
                    keys.append(str(key))
        columns = {f"{prefix}.{key}": [v.get(key) if isinstance(v, dict) else None for v in values] for key in keys}
        return pd.DataFrame(columns)
    return pd.DataFrame({prefix: pd.Series(values, dtype=object).infer_objects()})


def feedback_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The feedback rows of ``feedback`` records: one per label, ``row`` its position."""
    import pandas as pd

    ids, rows, labels, stamps = [], [], [], []
    for record in records:
        record_labels = record.get("labels")
        if not isinstance(record_labels, list):
            record_labels = [record_labels]
        for position, label in enumerate(record_labels):
            ids.append(str(record.get("id")))
            rows.append(position)
            labels.append(label)
            stamps.append(float(record.get("ts") or 0.0))
    return pd.DataFrame(
        {
            "request_id": pd.Series(ids, dtype=object),
            "row": pd.Series(rows, dtype="int64"),
            "label": pd.Series(labels, dtype=object).infer_objects(),
            "timestamp": pd.to_datetime(stamps, unit="s", utc=True),
        }
    )


# -- reading back ----------------------------------------------------------------------------------


def read_frames(store: Store, name: str, alias: str | None,
                since: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The traffic and feedback rows of the serving runs of ``name`` (of ``alias`` when given), and those runs;
    with ``since``, a run that ended before it is not read (none of its rows can be that recent: a run ends after
    its last delivery), so a window of a day reads a day's runs, not a month's."""
    import pandas as pd

    client = store.client
    experiment = store._call(lambda: client.get_experiment_by_name(SERVE_EXPERIMENT_PREFIX + name))
    runs: list[Any] = []
    if experiment is not None and not (alias and ("'" in alias or "\\" in alias)):  # no alias has quotes
        query = f"tags.`{KIND_TAG}` = 'serve'"
        if alias is not None:
            query += f" and tags.`{ALIAS_TAG}` = '{alias}'"
        runs = store._pages(
            lambda token: client.search_runs(
                [experiment.experiment_id], filter_string=query, order_by=["attributes.start_time ASC"],
                max_results=1000, page_token=token,
            )
        )
    if since is not None:
        cutoff_ms = since.timestamp() * 1000
        runs = [run for run in runs if run.info.end_time is None or run.info.end_time >= cutoff_ms]
    requests, feedback = [], []
    with tempfile.TemporaryDirectory(prefix="nbmlops-traffic-") as tmp, quiet_downloads():
        for run in runs:
            run_id = run.info.run_id
            requests += _read_folder(store, run_id, "traffic", Path(tmp, run_id))
            feedback += _read_folder(store, run_id, "feedback", Path(tmp, run_id))
    request_frame_ = (
        pd.concat(requests, ignore_index=True) if requests
        else pd.DataFrame(columns=[*REQUEST_COLUMNS, *SHADOW_COLUMNS, "error"])
    )
    if not requests:
        request_frame_["timestamp"] = pd.to_datetime(request_frame_["timestamp"], utc=True)
    feedback_frame_ = pd.concat(feedback, ignore_index=True) if feedback else feedback_frame([])
    if len(request_frame_.columns):
        request_frame_ = request_frame_[_ordered(request_frame_.columns)]
    return request_frame_, feedback_frame_, [run.info.run_id for run in runs]


def _read_folder(store: Store, run_id: str, folder: str, into: Path) -> list[pd.DataFrame]:
    import pandas as pd

    client = store.client
    entries = store._call(lambda: client.list_artifacts(run_id, folder))
    frames = []
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.is_dir or not _PARQUET_FILE.fullmatch(entry.path.rpartition("/")[2]):
            continue
        into.mkdir(parents=True, exist_ok=True)
        local = store._call(functools.partial(client.download_artifacts, run_id, entry.path, str(into)))
        frames.append(pd.read_parquet(local))
    return frames
