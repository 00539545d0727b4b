"""MLflow's scoring server as nbmlops serves it: the ``PyFuncModel`` of a safely loaded model, MLflow's own app
for it (``mlflow.pyfunc.scoring_server.init``), scoring a body the way that app does (for shadow scoring), and
the comparison of two versions' signatures.

A client written for ``mlflow models serve`` works unchanged because every request is answered by MLflow's app:
its parsers, schema enforcement, error bodies (``MlflowException.serialize_as_json``) and request timeout.
mlflow is imported inside the functions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from pathlib import Path
from typing import Any

__all__ = [
    "error_message", "incompatibility", "input_schema", "mlflow_app", "pyfunc_model", "schema_text", "score", "warm_up",
]


def pyfunc_model(folder: Path, estimator: Any = None) -> Any:
    """The model in ``folder`` as MLflow's ``PyFuncModel``, so that MLflow's schema enforcement applies.

    Args:
        folder: the downloaded model directory (holding ``MLmodel``), already checked by
            :func:`nbmlops.registry.safe_load.check_model`.
        estimator: the object nbmlops deserialized itself (a scikit-learn model or a LightGBM scikit-learn
            wrapper read through skops with nbmlops' trust list): it is wrapped the way MLflow's flavor wraps it,
            with the MLmodel file's metadata; None: ``folder`` is loaded by MLflow's pyfunc loader (a native
            XGBoost/LightGBM file, or a trusted pickle).
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    if estimator is None:
        return mlflow.pyfunc.load_model(str(folder))
    meta = Model.load(str(folder / "MLmodel"))
    conf = meta.flavors.get("python_function") or {}
    if conf.get("loader_module") == "mlflow.lightgbm":
        from mlflow.lightgbm import _LGBModelWrapper

        impl: Any = _LGBModelWrapper(estimator)
    else:
        from mlflow.sklearn import _SklearnModelWrapper

        impl = _SklearnModelWrapper(estimator)
    return mlflow.pyfunc.PyFuncModel(model_meta=meta, model_impl=impl, predict_fn=conf.get("predict_fn", "predict"),
                                     model_id=meta.model_id)


def input_schema(model: Any) -> Any:
    """The model's input schema as MLflow's scoring server reads it (None without a signature)."""
    return model.metadata.get_input_schema()


def mlflow_app(model: Any) -> Any:
    """MLflow's own scoring app (FastAPI) for ``model``: ``/ping``, ``/health``, ``/version``, ``/invocations``
    and its request timeout, exactly as ``mlflow models serve`` answers them."""
    from mlflow.pyfunc import scoring_server

    return scoring_server.init(model)


def score(model: Any, schema: Any, body: bytes, content_type: str) -> tuple[int, str]:
    """Score ``body`` as MLflow's ``/invocations`` does (its parsers and errors): ``(status, response text)``."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        result = scoring_server.invocations(body, content_type, model, schema)
    except MlflowException as exc:
        return exc.get_http_status_code(), exc.serialize_as_json()
    return result.status, result.response


def warm_up(app: Any, folder: Path) -> str | None:
    """Post the model's own serving input example (``serving_input_example.json``, which MLflow saves with an
    input example) once to ``app``, MLflow's scoring app for it, in memory: the first client request then does
    not pay for the first call's set-up (about 50-150 ms), and a version that cannot answer it is known before
    it serves. Returns MLflow's error message when it failed, None when it answered or has no example."""
    from mlflow.models import Model

    try:
        body = Model.load(str(folder / "MLmodel")).get_serving_input(str(folder))
    except Exception:  # an example MLflow cannot read back: nothing to warm up with
        return None
    if not body:
        return None
    # a thread of its own: the caller may be inside an event loop (a uvicorn worker's factory)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbmlops-warm-up") as pool:
        try:
            status, response = pool.submit(asyncio.run, _post(app, "/invocations", body.encode(),
                                                              "application/json")).result()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    message = error_message(status, response)
    if message is None or status == 504:  # MLflow's request timeout: slow, not wrong (requests get the same 504)
        return None
    try:  # MLflow's answer keeps the model's own exception in its stack trace: its last line says what happened
        cause = [line for line in str(json.loads(response).get("stack_trace") or "").splitlines() if line.strip()]
    except (ValueError, AttributeError):
        cause = []
    return f"{message} ({cause[-1].strip()})" if cause else message


async def _post(app: Any, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    """``POST path`` to an ASGI app in memory: its status and body."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
    }
    delivered = asyncio.Event()
    status, chunks = 500, []

    async def receive() -> dict[str, Any]:
        if not delivered.is_set():
            delivered.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the app answers first
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def error_message(status: int, response: bytes) -> str | None:
    """MLflow's error message in a non-200 response (its JSON ``message``, else the text), None for a 200."""
    if status == 200:
        return None
    text = response.decode("utf-8", "replace")
    try:
        found = json.loads(text)
    except ValueError:
        return text
    return str(found.get("message", text)) if isinstance(found, dict) else text


def _entries(schema: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if k != "required"} for entry in schema.to_dict()]


def schema_text(schema: Any) -> str:
    """A schema in one line: ``a: double, b: long`` (``none`` without one)."""
    if schema is None:
        return "none"
    return ", ".join(f"{e.get('name', '?')}: {e.get('type', '?')}" for e in schema.to_dict())


def incompatibility(serving: Any, candidate: Any) -> str | None:
    """Why ``candidate`` cannot replace ``serving`` for the same clients (other input column names or types, or
    another output schema when both have one), or None when it can."""
    old_in, new_in = input_schema(serving), input_schema(candidate)
    if old_in is not None:
        if new_in is None:
            return f"it has no input schema; the serving version takes ({schema_text(old_in)})"
        if _entries(old_in) != _entries(new_in):
            return f"its inputs are ({schema_text(new_in)}); the serving version takes ({schema_text(old_in)})"
    old_out, new_out = serving.metadata.get_output_schema(), candidate.metadata.get_output_schema()
    if old_out is not None and new_out is not None and _entries(old_out) != _entries(new_out):
        return f"its outputs are ({schema_text(new_out)}); the serving version's are ({schema_text(old_out)})"
    return None
