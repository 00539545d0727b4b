"""A registry that stops answering while ``nbmlops serve`` follows its alias: the server says so once and keeps
serving the version it has; once the registry answers again, a move of the alias made meanwhile is followed.
A real ``mlflow server`` behind a loopback proxy that answers 503 for it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import nbmlops
from tests.conftest import mlflow_server
from tests.reliability.faults import Fault, FaultProxy
from tests.serving.conftest import http, predictions, split_body, wait_for


def test_the_registry_down_while_following_is_said_once_and_the_served_version_keeps_answering(
        project, tmp_path, monkeypatch, serving, capfd):
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (train.a > 0).astype(int)
    rows = train.head(5)
    first, second = LogisticRegression().fit(train, y), LogisticRegression().fit(train, 1 - y)
    with mlflow_server(tmp_path / "server") as upstream:
        proxy = FaultProxy(upstream)
        try:
            monkeypatch.setenv("NBMLOPS_TRACKING_URI", proxy.uri)
            monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT")
            for model in (first, second):
                with nbmlops.track("train"):
                    nbmlops.register(model, "down", training_data=train, timeout=120)
            nbmlops.flush(120)
            nbmlops.promote("down/1", "champion")
            handle = serving("down@champion", poll=0.3)

            refused = proxy.add(Fault("status", path="registered-models/alias", method="GET", status=503))
            MlflowClient(upstream).set_registered_model_alias("down", "champion", "2")  # unseen while it is down
            wait_for(lambda: refused.hits >= 3, "three polls answered 503", timeout=120)
            for _ in range(5):
                status, headers, body = http("POST", handle.url + "/invocations", split_body(rows), "application/json")
                assert (status, headers["nbmlops-model-version"]) == (200, "1")
                assert predictions(body) == first.predict(rows).tolist()

            proxy.clear()
            wait_for(lambda: json.loads(http("GET", handle.url + "/model")[2])["version"] == 2, "version 2 serving",
                     timeout=120)
            status, headers, body = http("POST", handle.url + "/invocations", split_body(rows), "application/json")
            assert (status, headers["nbmlops-model-version"], predictions(body)) == (
                200, "2", second.predict(rows).tolist())
            handle.stop()
        finally:
            proxy.close()
    err = capfd.readouterr().err
    down = [line for line in err.splitlines() if "cannot ask the registry where down@champion points" in line]
    assert len(down) == 1, err  # once, however many polls failed
    assert "still serving version 1" in down[0] and "Traceback" not in err
