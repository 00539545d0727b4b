"""Headless jobs through the API: checked before they start, run to the end, cancelled, limited."""

from __future__ import annotations

import asyncio
import time

import nbformat
import psutil
import pytest

TYPES = "print('|'.join(f'{k}={type(v).__name__}:{v!r}' for k, v in dict(alpha=alpha, label=label, flag=flag, items=items).items()))"


RUNNING = ("queued", "running")


def ended(job: dict) -> bool:
    """True once the job has ended (any status but queued and running)."""
    return job["status"] not in RUNNING


async def wait_for_job(api, job_id: str, until, timeout: float = 240) -> dict:
    """Poll the job until ``until(job)`` holds; the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        code, job = await api("GET", "jobs", job_id)
        assert code == 200, job
        if until(job) or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.3)


async def test_a_job_runs_the_notebook_with_typed_parameters_to_a_tracked_run(api, make_notebook, root, client):
    make_notebook("work/train.ipynb", TYPES, "metric = alpha * 2",
                  parameters="alpha = 0.5\nlabel = 'x'\nflag = False\nitems = []")
    parameters = {"alpha": 2.5, "label": "1e5", "flag": True, "items": [1, "a"]}
    code, job = await api("POST", "jobs", body={"notebook": "work/train.ipynb", "parameters": parameters})
    assert code == 202 and job["status"] in RUNNING and job["notebook"] == "work/train.ipynb"
    assert job["parameters"] == parameters and job["exit_code"] is None and job["started"]

    job = await wait_for_job(api, job["job_id"], ended)
    assert job["status"] == "finished" and job["exit_code"] == 0, job
    assert job["error"] is None and job["ended"] >= job["started"]
    assert job["progress"] == {"done": 4, "total": 4}  # papermill adds the injected-parameters cell
    assert len(job["run_id"]) == 32
    executed = nbformat.read(root / job["output"], as_version=4)
    printed = executed.cells[-2].outputs[0]["text"]
    assert printed.strip() == "alpha=float:2.5|label=str:'1e5'|flag=bool:True|items=list:[1, 'a']"

    run = client.get_run(job["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["alpha"] == "2.5"
    code, listed = await api("GET", "runs", params={"notebook": "work/train.ipynb"})
    assert job["run_id"] in [r["run_id"] for r in listed["runs"]]
    code, listed = await api("GET", "jobs")
    assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]]


async def test_a_failing_notebook_is_a_failed_job_with_its_error(api, make_notebook):
    make_notebook("bad.ipynb", "raise ValueError('the data is wrong')", parameters="n = 1")
    code, job = await api("POST", "jobs", body={"notebook": "bad.ipynb"})
    assert code == 202
    job = await wait_for_job(api, job["job_id"], ended)
    assert job["status"] == "failed" and job["exit_code"] == 1
    assert "ValueError: the data is wrong" in job["error"]


@pytest.mark.parametrize(
    ("body", "expected", "reason"),
    [
        ({"notebook": "train.ipynb", "parameters": {"beta": 1}}, 400, "'beta'"),
        ({"notebook": "train.ipynb", "parameters": {"not an identifier": 1}}, 400, "not an identifier"),
        ({"notebook": "train.ipynb", "parameters": [1]}, 400, "parameters must be"),
        ({"notebook": "train.ipynb", "priority": 1}, 400, "priority"),
        ({"notebook": "notes.txt"}, 400, "not a notebook"),
        ({"notebook": "missing.ipynb"}, 404, "missing.ipynb"),
        ({"notebook": 3}, 400, "string"),
        ({}, 400, "required"),
    ],
)
async def test_a_bad_job_request_is_refused_before_anything_starts(api, make_notebook, root, jobs, body, expected,
                                                                   reason):
    make_notebook("train.ipynb", "x = alpha", parameters="alpha = 1")
    (root / "notes.txt").write_text("hello")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    code, answer = await api("POST", "jobs", body=body)
    assert code == expected, answer
    assert reason in answer["error"]
    assert jobs.list() == [] and (await api("GET", "jobs"))[1] == {"jobs": []}
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before  # no kernel, no run
    assert not (root / ".nbmlops" / "jobs").exists()


async def test_cancel_interrupts_a_running_job_and_the_run_is_killed(api, make_notebook, client):
    make_notebook("slow.ipynb", "import time\ntime.sleep(60)", "print('never')", parameters="n = 1")
    code, job = await api("POST", "jobs", body={"notebook": "slow.ipynb"})
    assert code == 202
    job = await wait_for_job(api, job["job_id"], lambda j: (j["progress"] or {}).get("done", 0) >= 1)
    assert job["status"] == "running" and job["cell"] is not None
    code, cancelled = await api("POST", "jobs", job["job_id"], "cancel")
    assert code == 200 and cancelled["job_id"] == job["job_id"]
    job = await wait_for_job(api, job["job_id"], ended, timeout=30)
    assert job["status"] == "cancelled" and job["exit_code"] != 0 and job["error"] is None
    code, again = await api("POST", "jobs", job["job_id"], "cancel")  # cancelling an ended job changes nothing
    assert code == 200 and again["status"] == "cancelled"

    deadline = time.monotonic() + 30
    while True:  # nbmlops run recorded the interruption
        code, listed = await api("GET", "runs", params={"notebook": "slow.ipynb"})
        if [r["status"] for r in listed["runs"]] == ["KILLED"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert [r["status"] for r in listed["runs"]] == ["KILLED"]


async def test_running_jobs_are_limited(api, make_notebook, jobs):
    jobs.max_running = 1
    make_notebook("slow.ipynb", "import time\ntime.sleep(60)", parameters="n = 1")
    code, first = await api("POST", "jobs", body={"notebook": "slow.ipynb"})
    assert code == 202
    code, answer = await api("POST", "jobs", body={"notebook": "slow.ipynb"})
    assert code == 429 and "1 job(s) are running" in answer["error"]
    # cancelled once its notebook runs (a runner still starting its interpreter may need SIGTERM: "killed")
    await wait_for_job(api, first["job_id"], lambda j: (j["progress"] or {}).get("done", 0) >= 1)
    assert (await api("POST", "jobs", first["job_id"], "cancel"))[0] == 200
    job = await wait_for_job(api, first["job_id"], ended, timeout=30)
    assert job["status"] == "cancelled"
    code, second = await api("POST", "jobs", body={"notebook": "slow.ipynb"})
    assert code == 202
    await api("POST", "jobs", second["job_id"], "cancel")


@pytest.mark.parametrize(("job_id", "expected"), [("0" * 32, 404), ("nope", 400)])
async def test_unknown_jobs_are_404_and_malformed_ids_400(api, job_id, expected):
    assert (await api("GET", "jobs", job_id))[0] == expected
    assert (await api("POST", "jobs", job_id, "cancel"))[0] == expected
