"""Several processes tracking into one fresh sqlite store at the same time: the schema creation, the
experiment creation and every write race, and nothing may be lost, duplicated or fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WRITER_SCRIPT = """
import sys, time
from pathlib import Path
import mlflow  # the expensive import first, so the processes reach the store together
import nbmlops

worker, gate = sys.argv[1], Path(sys.argv[2])
for _ in range(600):  # bounded wait for the start signal
    if gate.exists():
        break
    time.sleep(0.05)
for r in range(RUNS):
    params = {f"p{j}": f"{worker}-{r}-{j}" for j in range(PARAMS)}
    with nbmlops.track(f"w{worker}-r{r}", params=params):
        for step in range(STEPS):
            nbmlops.log_metric("loss", 1.0 / (step + 1) + int(worker) + r / 10)
nbmlops.flush(120)
print("worker", worker, "done")
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    env.update(extra)
    return env


def run_together(project: Path, store: str, experiment: str, workers: int, runs: int, steps: int, params: int):
    """Start ``workers`` processes, release them at once, return ``(returncode, stdout, stderr)`` of each."""
    script = WRITER_SCRIPT.replace("RUNS", str(runs)).replace("STEPS", str(steps)).replace("PARAMS", str(params))
    gate = project / "go"
    env = clean_env(NBMLOPS_TRACKING_URI=store, NBMLOPS_EXPERIMENT=experiment)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i), str(gate)],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(workers)
    ]
    try:
        gate.touch()
        outputs = [p.communicate(timeout=180) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def make_project(path: Path) -> Path:
    path.mkdir()
    (path / "pyproject.toml").write_text("[project]\nname = 'concurrent'\n")
    return path


def test_four_processes_on_a_fresh_sqlite_store_lose_nothing(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project = make_project(tmp_path / "project")
    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    results = run_together(project, store, "concurrent", workers=4, runs=3, steps=20, params=5)

    for i, (_, out, err) in enumerate(results):
        assert f"worker {i} done" in out, err
        assert "database is locked" not in err, err
        assert "Traceback" not in err, err
        assert "nbmlops:" not in err, err  # no outage warning, no refused record
    assert [code for code, _, _ in results] == [0, 0, 0, 0]

    client = MlflowClient(store)
    experiments = client.search_experiments(filter_string="name = 'concurrent'")
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs) == sorted(f"w{w}-r{r}" for w in range(4) for r in range(3))
    for run in runs:
        worker, r = (int(part[1:]) for part in run.info.run_name.split("-"))
        assert run.info.status == "FINISHED"
        assert run.data.params == {f"p{j}": f"{worker}-{r}-{j}" for j in range(5)}
        history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(20))
        assert [m.value for m in history] == [1.0 / (s + 1) + worker + r / 10 for s in range(20)]
    assert list((project / ".nbmlops" / "journal").glob("*")) == []  # every journal delivered and removed


def test_two_processes_creating_the_same_experiment_end_with_one_experiment(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project = make_project(tmp_path / "project")
    store = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(store)
    client.search_experiments()  # the schema exists: only the experiment creation races
    results = run_together(project, store, "raced/experiment", workers=2, runs=1, steps=1, params=1)

    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err and "nbmlops:" not in err, err
    experiments = client.search_experiments(filter_string="name = 'raced/experiment'")
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["w0-r0", "w1-r0"]
    assert not (project / ".nbmlops" / "journal" / "refused.jsonl").exists()
