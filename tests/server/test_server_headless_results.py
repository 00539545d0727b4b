"""What a headless job and a model version show once there is something to show: a finished job's metrics,
duration and run link; gates and a timeout passed through to ``nbmlops run`` (a failing gate ends the job with
the gate's reason, a cell running too long ends it as timed out); a gate that does not parse refused with where;
and each model version with its source run's metrics and its lineage. Real server, real papermill runs."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.server.registering import register_in_another_process
from tests.server.test_server_jobs import ended, wait_for_job

TRAIN = ("%load_ext nbmlops", "%%track --name fit\naccuracy = round(0.8 + alpha, 4)\nf1 = round(0.4 + alpha, 4)")


async def test_a_finished_job_shows_its_metrics_gates_duration_and_run_link(api, make_notebook, client, jobs):
    make_notebook("work/train.ipynb", *TRAIN, parameters="alpha = 0.05")
    body = {"notebook": "work/train.ipynb", "parameters": {"alpha": 0.1}, "gates": ["accuracy >= 0.85"],
            "timeout": 120}
    code, job = await api("POST", "jobs", body=body)
    assert code == 202, job
    assert job["gates"] == ["accuracy >= 0.85"] and job["timeout"] == 120
    assert job["metrics"] is None and job["duration_ms"] is None and job["run_url"] is None

    job = await wait_for_job(api, job["job_id"], ended)
    assert job["status"] == "finished" and job["error"] is None, job
    assert job["metrics"] == {"accuracy": 0.9, "f1": 0.5}
    assert job["gate_results"] == [
        {"gate": "accuracy >= 0.85", "passed": True, "message": 'gate "accuracy >= 0.85" passed: accuracy = 0.9'}
    ]
    assert job["duration_ms"] == job["ended"] - job["started"] and job["duration_ms"] > 0
    run = client.get_run(job["run_id"])
    assert run.data.metrics["accuracy"] == 0.9  # the job's metrics are its run's
    assert job["experiment_id"] == run.info.experiment_id
    assert job["run_url"] == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    code, listed = await api("GET", "jobs")
    assert code == 200
    [shown] = [j for j in listed["jobs"] if j["job_id"] == job["job_id"]]
    assert shown["run_url"] == job["run_url"] and shown["metrics"] == job["metrics"]


async def test_a_failing_gate_ends_the_job_failed_with_the_gates_reason(api, make_notebook, jobs):
    make_notebook("gated.ipynb", *TRAIN, parameters="alpha = 0.05")
    code, job = await api("POST", "jobs", body={"notebook": "gated.ipynb", "gates": ["accuracy >= 0.99"]})
    assert code == 202, job
    job = await wait_for_job(api, job["job_id"], ended)
    assert job["status"] == "failed" and job["exit_code"] == 3, job
    assert job["error"] == 'gate failed: gate "accuracy >= 0.99" failed: accuracy = 0.85, not >= 0.99'
    assert [g["passed"] for g in job["gate_results"]] == [False]
    assert job["metrics"] == {"accuracy": 0.85, "f1": 0.45}  # what the run measured, to see how far off it was
    assert job["run_url"] and job["run_id"] in job["run_url"]


async def test_a_cell_running_past_the_timeout_ends_the_job_as_timed_out(api, make_notebook, jobs):
    make_notebook("slow.ipynb", "import time\ntime.sleep(600)", parameters="n = 1")
    code, job = await api("POST", "jobs", body={"notebook": "slow.ipynb", "timeout": 3})
    assert code == 202, job
    job = await wait_for_job(api, job["job_id"], ended, timeout=300)
    assert job["status"] == "timeout", job
    assert job["exit_code"] == 1 and "3" in job["error"], job
    assert job["duration_ms"] < 240_000  # not the cell's 600 s


@pytest.mark.parametrize(
    ("gate", "position", "expected"),
    [
        ("accuracy >> 0.9", 9, "one of >=, <=, >, <, ==, !="),
        ("accuracy >= 0.9 and", 19, "a metric name or a number"),
        ("accuracy\t>= 0.9 f1", 16, '"and" or the end of the gate'),
    ],
)
async def test_a_gate_that_does_not_parse_is_one_line_with_its_position_and_nothing_starts(
    api, make_notebook, jobs, root, gate, position, expected
):
    make_notebook("train.ipynb", *TRAIN, parameters="alpha = 0.05")
    code, body = await api("POST", "jobs", body={"notebook": "train.ipynb", "gates": ["f1 > 0", gate]})
    assert code == 400, body
    assert "\n" not in body["error"]
    assert body["error"] == f'gate "{gate}": expected {expected} at position {position}'
    assert body["gate_error"] == {"gate": gate, "position": position, "expected": expected}
    assert jobs.list() == [] and not (root / ".nbmlops" / "jobs").exists()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": -5}, "timeout must be a number of seconds > 0"),
        ({"timeout": "60"}, "timeout must be a number"),
        ({"timeout": True}, "timeout must be a number"),
        ({"gates": "accuracy > 1"}, "gates must be a list of strings"),
        ({"gates": [1]}, "gates must be a list of strings"),
    ],
)
async def test_a_bad_timeout_or_gate_list_is_refused_before_anything_starts(api, make_notebook, jobs, extra, reason):
    make_notebook("train.ipynb", *TRAIN, parameters="alpha = 0.05")
    code, body = await api("POST", "jobs", body={"notebook": "train.ipynb", **extra})
    assert code == 400 and reason in body["error"], body
    assert jobs.list() == []


async def test_a_jobs_gates_and_timeout_survive_a_server_restart(make_notebook, root, jobs):
    from nbmlops.server.jobs import JobManager

    path = make_notebook("train.ipynb", *TRAIN, parameters="alpha = 0.05")
    started = jobs.start("train.ipynb", path, {}, ["accuracy >= 0.5"], 2.5)
    jobs.stop_all(grace=5)
    again = JobManager(root).get(started.job_id)
    assert again.gates == ("accuracy >= 0.5",) and again.timeout == 2.5
    assert again.describe(root)["gates"] == ["accuracy >= 0.5"] and again.describe(root)["timeout"] == 2.5


REGISTER = """
import numpy as np
import nbmlops
from sklearn.dummy import DummyClassifier

evaluation = np.arange(12, dtype=float).reshape(6, 2)
for accuracy, f1 in ((0.95, 0.9), (0.80, 0.7)):
    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": accuracy, "f1": f1})
        nbmlops.register(model, NAME, evaluation_data=evaluation, timeout=120)
nbmlops.flush(60)
"""


@pytest.fixture(scope="module")
def model_name(store_uri: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Version 1 (accuracy 0.95, f1 0.9) and version 2 (0.80, 0.7) of a model, registered by another process."""
    name = f"versions-{uuid.uuid4().hex[:8]}"
    return register_in_another_process(store_uri, tmp_path_factory.mktemp("register"), name, "server-versions", REGISTER)


async def test_each_version_shows_its_source_runs_metrics_link_and_lineage(api, model_name, client):
    code, shown = await api("GET", "models", model_name)
    assert code == 200, shown
    v2, v1 = shown["versions"]
    assert v1["run"]["metrics"] == {"accuracy": 0.95, "f1": 0.9}
    assert v2["run"]["metrics"] == {"accuracy": 0.80, "f1": 0.7}
    run = client.get_run(v1["run_id"])
    assert v1["run"]["run_id"] == v1["run_id"] and v1["run"]["name"] == "train" and v1["run"]["status"] == "FINISHED"
    assert v1["run"]["ui_url"] == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{v1['run_id']}"
    assert v1["lineage"]["model_class"].endswith("DummyClassifier")
    [fingerprint] = v1["lineage"]["evaluation"].values()  # the evaluation data's, as registered
    assert len(fingerprint) >= 12


async def test_a_promotion_gate_that_does_not_parse_is_one_line_with_its_position(api, model_name):
    code, body = await api("POST", "models", model_name, "promote",
                           body={"version": 1, "alias": "champion", "gates": ["accuracy >= 0.9 f1"]})
    assert code == 400, body
    assert body["error"] == 'gate "accuracy >= 0.9 f1": expected "and" or the end of the gate at position 16'
    assert body["gate_error"] == {"gate": "accuracy >= 0.9 f1", "position": 16,
                                  "expected": '"and" or the end of the gate'}
    code, shown = await api("GET", "models", model_name)
    assert all(not v["aliases"] and not v["decisions"] for v in shown["versions"])  # nothing was decided


async def test_a_promotion_on_a_dead_store_is_503_and_the_next_one_answers_at_once(api, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("NBMLOPS_TRACKING_URI", f"http://127.0.0.1:{free_port()}/")  # nothing listens there
    body = {"version": 1, "alias": "champion", "gates": ["accuracy >= 0.9"]}
    started = time.monotonic()
    code, answer = await api("POST", "models", "any-model", "promote", body=body)
    assert code == 503 and "refused" in answer["error"], answer
    assert time.monotonic() - started < 7.5  # a few seconds, not the store's whole call budget (10 s)
    started = time.monotonic()
    code, again = await api("POST", "models", "any-model", "promote", body=body)
    assert code == 503 and again["error"] == answer["error"]
    assert time.monotonic() - started < 3  # the store failed a moment ago: not asked again
