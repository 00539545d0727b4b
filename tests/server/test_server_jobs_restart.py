"""Headless jobs follow the runner's status file (not its text output), and outlive the server that started them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nbmlops.server import jobs as jobs_module
from nbmlops.server.jobs import NO_FINAL_STATUS, JobManager
from tests.server.test_server_jobs import wait_for_job

RUNNING = ("queued", "running")




def restart(jp_serverapp, root: Path) -> JobManager:
    """What a new server on the same root does: a new job manager; the old one is dropped, its jobs left running."""
    manager = JobManager(root)
    jp_serverapp.web_app.settings["nbmlops_jobs"] = manager
    return manager


async def test_progress_run_id_and_output_come_from_the_status_file_not_the_log(api, make_notebook, root, jobs,
                                                                                client):
    make_notebook("train.ipynb", "import time\ntime.sleep(2)", "metric = alpha * 2", parameters="alpha = 0.5")
    code, job = await api("POST", "jobs", body={"notebook": "train.ipynb", "parameters": {"alpha": 3}})
    assert code == 202, job
    during = await wait_for_job(api, job["job_id"], lambda j: j["cell"] == 2 or j["status"] not in RUNNING)
    assert during["status"] == "running" and during["progress"] == {"done": 2, "total": 4}, during
    job = await wait_for_job(api, job["job_id"], lambda j: j["status"] not in RUNNING)
    assert job["status"] == "finished" and job["exit_code"] == 0 and job["error"] is None, job
    assert job["progress"] == {"done": 4, "total": 4}
    run = client.get_run(job["run_id"])
    assert run.data.params["alpha"] == "3" and run.data.tags["nbmlops.notebook"] == str(root / "train.ipynb")
    assert client.get_experiment(run.info.experiment_id).name == job["experiment"]
    assert job["output"].startswith("nbmlops-outputs/train-") and (root / job["output"]).is_file()
    # the log holds the run's stderr only: no progress bar, no summary with the run id for anyone to scrape
    log = (root / ".nbmlops" / "jobs" / f"{job['job_id']}.log").read_text()
    assert "Executing" not in log and job["run_id"] not in log and "FINISHED" not in log


async def test_a_restarted_server_lists_follows_and_finishes_an_earlier_servers_job(api, make_notebook, root, jobs,
                                                                                   jp_serverapp, client):
    make_notebook("train.ipynb", "import time\ntime.sleep(4)", "metric = alpha * 2", parameters="alpha = 0.5")
    code, job = await api("POST", "jobs", body={"notebook": "train.ipynb", "parameters": {"alpha": 7}})
    assert code == 202, job
    await wait_for_job(api, job["job_id"], lambda j: j["status"] == "running")
    pid = jobs.get(job["job_id"]).pid

    later = restart(jp_serverapp, root)
    try:
        listed = (await api("GET", "jobs"))[1]["jobs"]
        assert [j["job_id"] for j in listed] == [job["job_id"]]
        assert listed[0]["status"] == "running" and listed[0]["parameters"] == {"alpha": 7}
        assert later.get(job["job_id"]).process is None and later.get(job["job_id"]).pid == pid
        ended = await wait_for_job(api, job["job_id"], lambda j: j["status"] not in RUNNING)
        assert ended["status"] == "finished" and ended["exit_code"] == 0 and ended["error"] is None, ended
        assert ended["progress"] == {"done": 4, "total": 4} and ended["ended"] >= ended["started"] == job["started"]
        run = client.get_run(ended["run_id"])
        assert run.info.status == "FINISHED" and run.data.params["alpha"] == "7"
        assert ended["output"].startswith("nbmlops-outputs/train-")
        assert (root / ended["output"]).is_file()
        assert not (root / ".nbmlops" / "jobs" / f"{job['job_id']}.parameters.yaml").exists()
    finally:
        later.stop_all(grace=5)


async def test_a_restarted_server_cancels_an_earlier_servers_job(api, make_notebook, root, jobs, jp_serverapp,
                                                                   client):
    make_notebook("slow.ipynb", "import time\ntime.sleep(120)", "print('never')", parameters="n = 1")
    code, job = await api("POST", "jobs", body={"notebook": "slow.ipynb"})
    assert code == 202, job
    await wait_for_job(api, job["job_id"], lambda j: j["cell"] == 1 and j["run_id"])  # the sleeping cell
    later = restart(jp_serverapp, root)
    try:
        code, _ = await api("POST", "jobs", job["job_id"], "cancel")
        assert code == 200
        ended = await wait_for_job(api, job["job_id"], lambda j: j["status"] not in RUNNING, timeout=60)
        assert ended["status"] == "cancelled" and ended["exit_code"] == 130 and ended["error"] is None, ended
        assert not later.get(job["job_id"]).running
        assert client.get_run(ended["run_id"]).info.status == "KILLED"  # the run's id, known before it ended
    finally:
        later.stop_all(grace=5)


async def test_a_job_whose_runner_died_without_a_final_status_is_failed_saying_so(api, make_notebook, root, jobs,
                                                                                 jp_serverapp):
    make_notebook("slow.ipynb", "import time\ntime.sleep(120)", parameters="n = 1")
    code, job = await api("POST", "jobs", body={"notebook": "slow.ipynb"})
    assert code == 202, job
    await wait_for_job(api, job["job_id"], lambda j: j["status"] == "running")
    restart(jp_serverapp, root)
    os.killpg(jobs.get(job["job_id"]).pid, signal.SIGKILL)  # the runner and its kernel, as a crash would
    ended = await wait_for_job(api, job["job_id"], lambda j: j["status"] not in RUNNING, timeout=60)
    assert ended["status"] == "failed" and ended["error"] == NO_FINAL_STATUS, ended
    assert ended["ended"] is not None
    assert ended["output"].startswith("nbmlops-outputs/slow-")  # the notebook as far as papermill wrote it


def _record(folder: Path, pid: int, pid_started: str | None, started: float, state: str = "running") -> str:
    """A job record and status file as an earlier server and its runner would have left them."""
    job_id = uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": 1, "job_id": job_id, "notebook": "old.ipynb", "parameters": {"n": 1},
              "output": str(folder.parent.parent / "nbmlops-outputs" / f"old-{job_id[:8]}.ipynb"), "pid": pid,
              "pid_started": pid_started, "started": started, "cancel_requested": False, "killed": False}
    (folder / f"{job_id}.json").write_text(json.dumps(record))
    status = {"format": 1, "state": state, "notebook": "old.ipynb", "pid": pid,
              "cells": {"done": 1, "total": 3, "current": 1}, "run_id": None, "experiment": None, "output": None,
              "started": int(started * 1000), "ended": None, "exit_code": None, "error": None}
    (folder / f"{job_id}.status.json").write_text(json.dumps(status))
    (folder / f"{job_id}.log").write_text("")
    return job_id


def test_a_stale_record_whose_pid_is_now_another_process_is_never_signalled(tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        folder = tmp_path / ".nbmlops" / "jobs"
        started = Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        job_id = _record(folder, stranger.pid, str(int(started) - 1), time.time() - 60)  # the pid, reused

        manager = JobManager(tmp_path)
        job = manager.get(job_id)
        assert not job.running
        shown = job.describe(tmp_path)
        assert shown["status"] == "failed" and shown["error"] == NO_FINAL_STATUS
        assert shown["progress"] == {"done": 1, "total": 3}
        manager.cancel(job_id)
        manager.stop_all(grace=1)
        time.sleep(1)
        assert stranger.poll() is None  # never signalled
        assert manager.get(job_id).describe(tmp_path)["status"] == "failed"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_new_manager_forgets_the_oldest_ended_jobs_and_deletes_their_files(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs_module, "MAX_KEPT", 2)
    folder = tmp_path / ".nbmlops" / "jobs"
    now = time.time()
    oldest, middle, newest = (_record(folder, 0, None, now - age, state="finished") for age in (300, 200, 100))

    manager = JobManager(tmp_path)
    assert [job.job_id for job in manager.list()] == [newest, middle]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(oldest)) == []
    assert {p.name for p in folder.iterdir() if p.name.startswith(newest)} == {
        f"{newest}.json", f"{newest}.status.json", f"{newest}.log"}
    assert [job.status for job in manager.list()] == ["finished", "finished"]


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"job_id": "x"}), json.dumps([1, 2])])
def test_an_unreadable_job_record_is_skipped(tmp_path, content):
    folder = tmp_path / ".nbmlops" / "jobs"
    kept = _record(folder, 0, None, time.time() - 10, state="finished")
    (folder / f"{uuid.uuid4().hex}.json").write_text(content)
    assert [job.job_id for job in JobManager(tmp_path).list()] == [kept]
