#!/usr/bin/env python
"""Turn the request/response log of another model server into an nbmlops traffic dataset, so that
``nbmlops monitor NAME@ALIAS --traffic`` reads it like the traffic of ``nbmlops serve``.

The input is what KServe's inference logger sends (``spec.predictor.logger``, ``mode: all``): one CloudEvent of
type ``org.kubeflow.serving.inference.request`` and, when the model answered 200, one of type
``org.kubeflow.serving.inference.response`` with the same ``id``. Here they are read as JSON lines in the
CloudEvents JSON format (``specversion``, ``type``, ``id``, ``time``, ``data`` or ``data_base64``), which is what
a receiver that stores each event it gets writes (for example ``cloudevents.http.from_http`` then
``cloudevents.conversion.to_json`` in the CloudEvents Python SDK). Bodies in each protocol an MLflow model is
served with: KServe's V1 (``instances`` / ``predictions``), the Open Inference Protocol of MLServer's MLflow
runtime (``inputs`` / ``outputs``), and MLflow's own ``/invocations`` (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs`` / ``predictions``).

    python docs/examples/kserve_traffic.py events.jsonl --model wine-classifier --alias champion --version 3 \\
        --endpoint http://wine-classifier.default.example.com

It writes one Parquet file in the traffic dataset schema (see docs/serving.md) and logs it, with plain MLflow
calls, as a finished serving run of experiment ``serve/<model>`` of the tracking store (``--tracking-uri``, else
``MLFLOW_TRACKING_URI``). Run it again on the next file of events: each run adds its rows.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def read_events(path: Path) -> list[dict[str, Any]]:
    """The CloudEvents of a JSON-lines file, their ``data`` decoded (``data_base64`` too)."""
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        event = json.loads(line)
        if "data" not in event and "data_base64" in event:
            event["data"] = base64.b64decode(event["data_base64"])
        if isinstance(event.get("data"), (bytes, str)):
            try:
                event["data"] = json.loads(event["data"])
            except ValueError as error:
                raise SystemExit(f"{path}:{number}: the event's data is not JSON: {error}") from None
        events.append(event)
    return events


def input_frame(body: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    """The input rows of a request body; positional inputs get the model's input ``columns``."""
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        return pd.DataFrame(split["data"], columns=split.get("columns"))
    if "dataframe_records" in body:
        return pd.DataFrame(body["dataframe_records"])
    if "instances" in body:
        rows = body["instances"]
        return pd.DataFrame(rows) if rows and isinstance(rows[0], dict) else _positional(rows, columns)
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and "datatype" in inputs[0]:
        return _open_inference_inputs(inputs, columns)  # one named input per column (MLServer's pandas codec)
    if isinstance(inputs, dict):
        return pd.DataFrame(inputs)
    if isinstance(inputs, list):
        return _positional(inputs, columns)
    raise ValueError(f"not a request body this example reads: keys {sorted(body)}")


def _open_inference_inputs(inputs: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    if len(inputs) == 1 and len(inputs[0].get("shape", [])) == 2 and inputs[0]["shape"][1] > 1:
        tensor = inputs[0]
        rows, width = tensor["shape"]
        data = tensor["data"]
        return _positional([data[i * width:(i + 1) * width] for i in range(rows)], columns)
    return pd.DataFrame({tensor["name"]: list(pd.Series(tensor["data"]).explode(ignore_index=True))
                         for tensor in inputs})


def _positional(rows: list[Any], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if len(columns) == frame.shape[1]:
        frame.columns = columns
    return frame


def prediction_frame(body: dict[str, Any] | None, rows: int) -> pd.DataFrame:
    """``prediction`` (one output) or ``prediction.<name>`` (several), one value per input row."""
    outputs: dict[str, list[Any]] = {}
    if body is None:
        outputs["prediction"] = [None] * rows
    elif "outputs" in body:  # Open Inference Protocol
        for tensor in body["outputs"]:
            outputs[tensor["name"]] = list(pd.Series(tensor["data"]).explode(ignore_index=True))
    else:
        values = body.get("predictions", body)
        if isinstance(values, dict):
            outputs.update({str(k): list(v) for k, v in values.items()})
        elif values and isinstance(values[0], dict):
            outputs.update({str(k): list(v) for k, v in pd.DataFrame(values).items()})
        else:
            outputs["prediction"] = list(values)
    if len(outputs) == 1:
        return pd.DataFrame({"prediction": next(iter(outputs.values()))})
    return pd.DataFrame({f"prediction.{name}": values for name, values in outputs.items()})


def traffic_frame(events: list[dict[str, Any]], version: int, columns: list[str]) -> pd.DataFrame:
    """Rows in the traffic dataset schema: one per input row of each logged request."""
    responses = {e["id"]: e for e in events if e.get("type") == RESPONSE}
    frames = []
    for request in (e for e in events if e.get("type") == REQUEST):
        response = responses.get(request["id"])
        inputs = input_frame(request["data"], columns)
        count = max(len(inputs), 1)
        started = pd.Timestamp(request["time"]).tz_convert("UTC")
        latency = (pd.Timestamp(response["time"]) - started).total_seconds() * 1000 if response else None
        base = pd.DataFrame({
            "request_id": [str(request["id"])] * count,
            "row": range(count),
            "timestamp": [started] * count,
            "model_version": [version] * count,
            # KServe logs a response only when the model answered 200; a request without one failed
            "status": [200 if response else None] * count,
            "latency_ms": [latency] * count,
        })
        predictions = prediction_frame(response["data"] if response else None, count)
        frames.append(pd.concat([base, inputs.add_prefix("input.").reset_index(drop=True), predictions], axis=1))
    frame = pd.concat(frames, ignore_index=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    frame["model_version"] = frame["model_version"].astype("Int64")
    frame["status"] = frame["status"].astype("Int64")
    frame["latency_ms"] = frame["latency_ms"].astype("float64")
    frame["shadow.model_version"] = pd.Series([None] * len(frame), dtype="Int64")
    frame["shadow.latency_ms"] = pd.Series([None] * len(frame), dtype="float64")
    frame["error"] = pd.Series([None] * len(frame), dtype=object)
    frame.loc[frame["status"].isna(), "error"] = "no response logged (the request failed, or was not logged yet)"
    return frame


def model_columns(model: str, version: int) -> list[str]:
    """The input column names of the registered version's signature (none when it has no signature)."""
    import mlflow

    signature = mlflow.models.get_model_info(f"models:/{model}/{version}").signature
    return list(signature.inputs.input_names()) if signature is not None else []


def log_serving_run(frame: pd.DataFrame, model: str, alias: str, version: int, endpoint: str) -> str:
    """Log ``frame`` as a finished serving run of experiment ``serve/<model>``: the tags nbmlops reads, the
    Parquet file under ``traffic/``, the file as a dataset input (context ``traffic``), summary metrics."""
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    import nbmlops

    mlflow.set_experiment(f"serve/{model}")
    stamps = frame["timestamp"]
    since = stamps.min().isoformat()
    tags = {
        "nbmlops.kind": "serve", "nbmlops.serve.model": model, "nbmlops.serve.alias": alias,
        "nbmlops.serve.version": str(version), "nbmlops.serve.url": endpoint, "nbmlops.serve.since": since,
        "nbmlops.serve.heartbeat": stamps.max().isoformat(), "nbmlops.serve.host": "kserve",
    }
    requests = frame.drop_duplicates("request_id")
    latency = requests["latency_ms"].dropna()
    errors = int((requests["status"] != 200).fillna(True).sum())
    metrics = {"requests": len(requests), "errors": errors, "error_rate": errors / max(len(requests), 1),
               "unlogged": 0}
    if len(latency):
        metrics.update({f"latency_p{q}_ms": float(latency.quantile(q / 100)) for q in (50, 95, 99)})
    name = f"traffic/{time.time_ns()}-0.parquet"
    with mlflow.start_run(run_name=f"serve {model}@{alias} {endpoint}", tags=tags) as run, \
            tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, name.rpartition("/")[2])
        frame.to_parquet(local, index=False)
        mlflow.log_artifact(str(local), "traffic")
        dataset = mlflow.data.from_pandas(frame, source=HTTPDatasetSource(endpoint), name=name,
                                          digest=nbmlops.fingerprint(frame))
        mlflow.log_input(dataset, context="traffic")
        mlflow.log_metrics(metrics, step=0)
    return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events", type=Path, help="JSON lines of KServe inference-logger CloudEvents")
    parser.add_argument("--model", required=True, help="the registered model's name")
    parser.add_argument("--alias", required=True, help="the alias the server serves (e.g. champion)")
    parser.add_argument("--version", required=True, type=int, help="the model version the server serves")
    parser.add_argument("--endpoint", default="kserve", help="the server's URL, recorded on the run")
    parser.add_argument("--tracking-uri", help="the tracking store (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--output", type=Path, help="also keep the Parquet file here")
    args = parser.parse_args(argv)

    import mlflow

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    frame = traffic_frame(read_events(args.events), args.version, model_columns(args.model, args.version))
    if args.output:
        frame.to_parquet(args.output, index=False)
    run_id = log_serving_run(frame, args.model, args.alias, args.version, args.endpoint)
    print(f"{frame['request_id'].nunique()} requests, {len(frame)} rows -> serving run {run_id} "
          f"(experiment serve/{args.model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
