"""End to end: an ``nbmlops serve`` process with two worker processes answers requests and is SIGKILLed with them
(its process group); the next server of the project delivers every answered request, exactly once, into the
killed server's own serving run, which ends KILLED."""

from __future__ import annotations

import json
import os
import signal

from nbmlops.serving.traffic import read_traffic
from tests.conftest import stop_group
from tests.serving.conftest import http, serve_process, split_body, wait_for


def test_sigkilled_server_every_answered_request_is_delivered_once_by_the_next_server(models, project, client, serving):
    alias = models.point(1)
    process, url = serve_process(project, f"{models.name}@{alias}", "--workers", "2", timeout=240)
    answered: list[str] = []
    try:
        run_id = json.loads(http("GET", url + "/model")[2])["run_id"]
        for i in range(60):
            rid = f"e2e-{i:03d}"
            status, headers, _ = http("POST", url + "/invocations", split_body(models.rows.iloc[: 1 + i % 3]),
                                      "application/json", headers={"x-request-id": rid})
            assert status == 200 and headers["nbmlops-request-id"] == rid
            answered.append(rid)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
    finally:
        stop_group(process)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody ended it

    heir = serving(f"{models.name}@{alias}")  # the next server of the project
    wait_for(lambda: client.get_run(run_id).info.status == "KILLED", "the killed server's run to be delivered",
             timeout=180)
    requests = read_traffic(models.name, alias=alias).requests
    mine = requests[requests["request_id"].str.startswith("e2e-")]
    per_request = mine.groupby("request_id")["row"].count()
    assert sorted(per_request.index) == answered  # every answered request, none twice
    assert all(per_request[rid] == 1 + int(rid[4:]) % 3 for rid in answered)  # each input row once
    assert list(mine.sort_values(["request_id", "row"])["prediction"]) == [
        p for i in range(60) for p in models.v1[: 1 + i % 3].tolist()
    ]
    run = client.get_run(run_id)
    assert run.data.metrics["requests"] == 60
    assert heir.run_id != run_id
