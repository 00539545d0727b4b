"""Fixtures of the serving tests: real registered versions in the session's sqlite store, HTTP helpers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nbmlops.config import SETTING_NAMES, configure
from nbmlops.tracking.session import close_session


@dataclass(frozen=True)
class Models:
    """The model ``name``: version 1 (``champion``) and 2 (``challenger``, the opposite answers) are scikit-learn
    classifiers of ``a`` and ``b``; version 3 takes ``a`` and ``c``; version 4 is a statsmodels regression of
    ``a`` and ``b`` (MLflow pickles it: loaded only when trusted)."""

    name: str
    rows: pd.DataFrame
    v1: np.ndarray  # each estimator's own predictions on ``rows``
    v2: np.ndarray
    v4: np.ndarray

    def point(self, version: int) -> str:
        """A new alias of the model pointing at ``version`` (tests that move aliases move their own)."""
        import nbmlops

        alias = f"t-{uuid.uuid4().hex[:10]}"
        nbmlops.promote(f"{self.name}/{version}", alias)
        return alias


def _frame(n: int, seed: int, columns: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({columns[0]: rng.normal(size=n), columns[1]: rng.normal(size=n)})


@pytest.fixture(scope="session")
def models(store_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    """Register the versions once for the session (in a project folder of their own)."""
    import statsmodels.api as sm
    from sklearn.linear_model import LogisticRegression

    import nbmlops

    folder = tmp_path_factory.mktemp("registering")
    (folder / "pyproject.toml").write_text("[project]\nname = 'registering'\n")
    name = f"served-{uuid.uuid4().hex[:8]}"
    train = _frame(400, 0)
    y = (train.a + train.b > 0).astype(int)
    other = _frame(400, 1, ("a", "c"))
    first, second = LogisticRegression().fit(train, y), LogisticRegression().fit(train, 1 - y)
    regression = sm.OLS(y.astype(float), train).fit()
    with pytest.MonkeyPatch.context() as patch:
        close_session()
        patch.chdir(folder)
        patch.setenv("NBMLOPS_TRACKING_URI", store_uri)
        patch.setenv("NBMLOPS_ARTIFACT_ROOT", str(Path(store_uri[len("sqlite:///"):]).parent / "artifacts"))
        patch.setenv("NBMLOPS_EXPERIMENT", "serving-models")
        for model, data in ((first, train), (second, train), (LogisticRegression().fit(other, y), other),
                            (regression, train)):
            with nbmlops.track("train"):
                nbmlops.register(model, name, training_data=data, timeout=120)
        nbmlops.flush(120)
        nbmlops.promote(f"{name}/1", "champion")
        nbmlops.promote(f"{name}/2", "challenger")
        close_session()
        configure(**dict.fromkeys(SETTING_NAMES))
    rows = _frame(7, 2)
    yield Models(name, rows, first.predict(rows), second.predict(rows), np.asarray(regression.predict(rows)))


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers with lower-case names, body)`` of one request; an HTTP error status is an answer."""
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def split_body(rows: pd.DataFrame) -> bytes:
    """``rows`` as a ``dataframe_split`` JSON body."""
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()


def predictions(body: bytes) -> list[Any]:
    return json.loads(body)["predictions"]


@pytest.fixture
def serving(project: Path) -> Iterator[Any]:
    """Start servers with ``nbmlops.serve(..., block=False)`` on a free port (in the test's project); each is
    stopped at the end of the test however it ends."""
    from nbmlops.serving import serve

    handles: list[Any] = []

    def start(model: str, **options: Any) -> Any:
        options.setdefault("port", 0)
        handles.append(serve(model, block=False, **options))
        return handles[-1]

    yield start
    for handle in handles:
        handle.stop()


def traffic_records(folder: Path) -> list[dict[str, Any]]:
    """Every record of a running server's traffic log segments, in the order written per segment."""
    from nbmlops.journal import read_records
    from nbmlops.serving.traffic_log import list_segments

    return [record for path in list_segments(folder) for _, record in read_records(path, 0)
            if isinstance(record, dict)]


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` of the server at ``url``, read with prometheus_client's parser: ``{(name, labels): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, text = http("GET", url + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def wait_for(condition: Any, what: str, timeout: float = 90.0) -> Any:
    """Poll ``condition()`` until it returns something true (returned), failing after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def serve_process(project: Path, target: str, *options: str, timeout: float = 180.0) -> tuple[Any, str]:
    """``nbmlops serve TARGET --port <free> OPTIONS`` started as a user types it, in its own process group, its
    output in ``project/serve.log``; returns the process and its URL once ``/ping`` answers (the log is the failure
    message when the process ends first). The caller stops it (``tests.conftest.stop_group``)."""
    import subprocess
    import sys

    from tests.conftest import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(project / "serve.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "nbmlops.cli", "serve", target, "--port", str(port), *options],
                                   cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail((project / "serve.log").read_text())
        try:
            return http("GET", url + "/ping", timeout=5)[0] == 200
        except OSError:
            return False

    try:
        wait_for(answers, "the server to answer", timeout=timeout)
    except BaseException:
        from tests.conftest import stop_group

        stop_group(process)
        raise
    return process, url

