"""Item 3 of the trust issue: a journal that cannot be written never breaks the user's cell.

Real conditions, that also hold for root: a file where the journal folder should be, and a full disk made
with ``RLIMIT_FSIZE`` (writes past the limit fail with EFBIG) in a real Python process. The stores are real:
a sqlite store, or a real ``mlflow server`` (the process under the file-size limit writes nothing but its
journal), or a port where nothing listens yet.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbmlops
from nbmlops.journal import read_records
from nbmlops.tracking.session import close_session
from tests.conftest import free_port, mlflow_server, runs_of
from tests.reliability.faults import clean_env, nbmlops_cli, run_python

#: the part of the script that fills the disk: the journal may not grow past its size at that moment + 2000 bytes
FILL_DISK = """
import resource, signal, time
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
(journal,) = Path(".nbmlops/journal").glob("*.journal")
limit = journal.stat().st_size + 2000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
"""

STORE_UP_SCRIPT = """
import nbmlops
with nbmlops.track("full disk", params={"a": 1}) as run:
    nbmlops.log_metric("loss", 0.0)
    nbmlops.flush(120)
""" + "\n".join("    " + line for line in FILL_DISK.splitlines()) + """
    for i in range(1, 500):
        nbmlops.log_metric("loss", float(i))
    print("loop ran to its end", flush=True)
nbmlops.flush(120)
print("journal", journal, journal.stat().st_size if journal.exists() else 0, "limit", limit, run.status, flush=True)
"""

STORE_DOWN_SCRIPT = """
import nbmlops
with nbmlops.track("space returns", params={"a": 1}) as run:
    nbmlops.log_metric("loss", 0.0)
""" + "\n".join("    " + line for line in FILL_DISK.splitlines()) + """
    for i in range(1, 200):
        nbmlops.log_metric("loss", float(i))
    print("journal full", journal.stat().st_size <= limit, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    full, i, deadline = journal.stat().st_size, 200, time.monotonic() + 60
    while journal.stat().st_size == full and time.monotonic() < deadline:
        time.sleep(0.1)
        nbmlops.log_metric("loss", float(i))
        i += 1
    for _ in range(5):
        nbmlops.log_metric("loss", float(i))
        i += 1
print("logged", i, run.key, flush=True)
"""

MEMORY_BOUND_SCRIPT = """
import sys
import nbmlops
with nbmlops.track("bounded", params={"a": 1}) as run:
    for i in range(12000):
        nbmlops.log_metric("loss", float(i))
    print("logged", run.key, flush=True)
    sys.stdin.readline()  # the store comes up
nbmlops.flush(180)
print("delivered", flush=True)
"""

COMES_BACK_SCRIPT = """
import sys, time
from pathlib import Path
import nbmlops
with nbmlops.track("comes back", params={"a": 1}) as run:
    for i in range(3):
        nbmlops.log_metric("loss", float(i))
    nbmlops.flush(120)  # straight to the store: no journal
    print("delivered", run.key, flush=True)
    sys.stdin.readline()  # the store is down now
    for i in range(3, 6):
        nbmlops.log_metric("loss", float(i))
    Path(".nbmlops/journal").unlink()  # the journal's folder can be made again
    i, deadline = 6, time.monotonic() + 60
    while not list(Path(".nbmlops/journal").glob("*.journal")) and time.monotonic() < deadline:
        time.sleep(0.1)
        nbmlops.log_metric("loss", float(i))
        i += 1
print("logged", i, flush=True)
"""

EXIT_SCRIPT = """
import nbmlops
with nbmlops.track("nowhere") as run:
    for i in range(5):
        nbmlops.log_metric("loss", float(i))
print("script ran to its end", run.status, flush=True)
"""


def _env(uri: str, experiment: str) -> dict[str, str]:
    return clean_env(NBMLOPS_TRACKING_URI=uri, NBMLOPS_EXPERIMENT=experiment, NBMLOPS_CAPTURE="none",
                     NBMLOPS_FLUSH_TIMEOUT="2", PYTHONDONTWRITEBYTECODE="1")


def _journal_is_a_file(project: Path) -> Path:
    """A file where ``project``'s journal folder should be."""
    (project / ".nbmlops").mkdir()
    (project / ".nbmlops" / "journal").write_text("not a folder\n")
    return project


def _script(project: Path, script: str, uri: str, experiment: str) -> subprocess.CompletedProcess:
    return run_python(project, "-c", script, env=_env(uri, experiment))


def _start_script(project: Path, script: str, uri: str, experiment: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=project, env=_env(uri, experiment),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@contextlib.contextmanager
def _store_comes_up(tmp_path: Path, port: int) -> Iterator[str]:
    """A real ``mlflow server`` at ``port``, where the scripts looked for the store while it was down."""
    with mlflow_server(tmp_path / "server", port=port, env=_env(f"http://127.0.0.1:{port}", "")) as live:
        yield live


def _sync(project: Path, uri: str, experiment: str) -> None:
    sync = nbmlops_cli(project, "sync", env=_env(uri, experiment))
    assert sync.returncode == 0, sync.stdout + sync.stderr


def _journal_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "cannot write the journal" in line]


def _assert_clean_exit(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


def _losses(client, run) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)]


@pytest.fixture
def down() -> tuple[int, str]:
    """A port where no store listens yet, and the store URI there."""
    port = free_port()
    return port, f"http://127.0.0.1:{port}"


def test_journal_folder_that_is_a_file_never_breaks_the_cell_and_records_go_straight_to_the_store(
    shell, client, request, project, capfd
):
    in_the_way = project / ".nbmlops" / "journal"
    in_the_way.parent.mkdir()
    in_the_way.write_text("not a folder\n")

    cell = "%%track\nimport nbmlops\nfor i in range(5):\n    nbmlops.log_metric('loss', 1.0 / (i + 1))\ndone = 'yes'\n"
    result = shell.run_cell(cell)

    assert result.error_before_exec is None and result.error_in_exec is None, result.error_in_exec
    assert shell.user_ns["done"] == "yes"
    nbmlops.flush(60)
    (run,) = runs_of(client, request.node.name)
    assert run.info.status == "FINISHED"
    assert _losses(client, run) == [1.0 / (i + 1) for i in range(5)]
    err = capfd.readouterr().err
    (warning,) = _journal_warnings(err)
    assert str(in_the_way) in warning and "a file stands where the journal folder should be" in warning, warning
    assert "Traceback" not in err

    # the folder can be made again: journaling resumes, and the journal is removed once everything is delivered
    in_the_way.unlink()
    deadline = time.monotonic() + 60
    with nbmlops.track("after the fix") as later:

        def journaled_metric() -> bool:  # the journal may come back with the run's start before its first metric
            return any(
                isinstance(r, dict) and r["t"] == "metrics"
                for journal in in_the_way.glob("*.journal")
                for _, r in read_records(journal)
            )

        while not journaled_metric() and time.monotonic() < deadline:
            time.sleep(0.1)
            later.log_metric("loss", 0.5)
        assert len(list(in_the_way.glob("*.journal"))) == 1
        assert journaled_metric()
    nbmlops.flush(60)
    assert "the journal can be written again" in capfd.readouterr().err
    close_session()
    assert list(in_the_way.glob("*.journal")) == []


def test_a_full_disk_mid_run_lets_the_script_finish_delivers_every_record_and_exits_cleanly(
    project_dir, server, request
):
    from mlflow import MlflowClient

    result = _script(project_dir, STORE_UP_SCRIPT, server, request.node.name)

    _assert_clean_exit(result)
    assert "loop ran to its end" in result.stdout
    journal, size, limit = re.search(r"journal (\S+) (\d+) limit (\d+) FINISHED", result.stdout).groups()
    assert int(size) <= int(limit)  # nothing was written past the full disk
    (warning,) = _journal_warnings(result.stderr)  # once, not once per record
    assert journal in warning and "File too large" in warning, warning
    (run,) = runs_of(MlflowClient(server), request.node.name)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"}
    assert _losses(MlflowClient(server), run) == [float(i) for i in range(500)]
    assert not Path(journal).exists()  # everything was delivered: the journal went at exit


def test_a_full_disk_while_the_store_is_down_keeps_records_in_memory_and_journals_them_once_space_returns(
    tmp_path, project_dir, down, request
):
    from mlflow import MlflowClient

    port, uri = down
    project = project_dir
    result = _script(project, STORE_DOWN_SCRIPT, uri, request.node.name)

    _assert_clean_exit(result)
    assert "journal full True" in result.stdout
    count, key = re.search(r"logged (\d+) (\w+)", result.stdout).groups()
    (warning,) = _journal_warnings(result.stderr)
    assert "File too large" in warning
    assert "the journal can be written again" in result.stderr
    (journal,) = (project / ".nbmlops" / "journal").glob("*.journal")
    records = [r for _, r in read_records(journal)]
    assert all(isinstance(r, dict) for r in records)  # no torn record where the disk was full
    steps = sorted(row[2] for r in records if r["t"] == "metrics" for row in r["metrics"])
    assert steps == list(range(int(count)))  # every record once: those kept in memory were journaled

    with _store_comes_up(tmp_path, port) as live:
        _sync(project, live, request.node.name)
        (run,) = runs_of(MlflowClient(live), request.node.name)
        assert run.data.tags["nbmlops.run_key"] == key and run.info.status == "FINISHED"
        assert _losses(MlflowClient(live), run) == [float(i) for i in range(int(count))]


def test_a_run_begun_without_a_journal_is_journaled_with_its_start_once_the_folder_is_back_and_sync_adds_to_it_once(
    tmp_path, project_dir, down, request
):
    from mlflow import MlflowClient

    port, uri = down
    project = _journal_is_a_file(project_dir)
    process = _start_script(project, COMES_BACK_SCRIPT, uri, request.node.name)
    try:
        with _store_comes_up(tmp_path, port):
            key = process.stdout.readline().split()[1]
        out, err = process.communicate("store down\n", timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    count = int(re.search(r"logged (\d+)", out).group(1))
    assert "the journal can be written again" in err
    (journal,) = (project / ".nbmlops" / "journal").glob("*.journal")
    records = [r for _, r in read_records(journal)]
    # the run's start went to the store before there was a journal: it is journaled again, for a replay
    assert [r["run"] for r in records if r["t"] == "start" and r.get("again")] == [key]

    with _store_comes_up(tmp_path, port) as live:
        _sync(project, live, request.node.name)
        (run,) = runs_of(MlflowClient(live), request.node.name)  # one run: the replay found it by its key
        assert run.data.tags["nbmlops.run_key"] == key and run.info.status == "FINISHED"
        assert _losses(MlflowClient(live), run) == [float(i) for i in range(count)]


def test_records_past_the_memory_bound_drop_the_oldest_metrics_first_and_say_how_many(
    tmp_path, project_dir, down, request
):
    from mlflow import MlflowClient

    port, uri = down
    process = _start_script(_journal_is_a_file(project_dir), MEMORY_BOUND_SCRIPT, uri, request.node.name)
    try:
        assert process.stdout.readline().startswith("logged")
        with _store_comes_up(tmp_path, port) as live:
            out, err = process.communicate("go\n", timeout=300)
            assert process.returncode == 0 and "delivered" in out, err
            (run,) = runs_of(MlflowClient(live), request.node.name)
            steps = {m.step for m in MlflowClient(live).get_metric_history(run.info.run_id, "loss")}
            assert run.info.status == "FINISHED" and run.data.params == {"a": "1"}
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(_journal_warnings(err)) == 1
    assert err.count("the oldest records are dropped, metrics first") == 1, err
    dropped = int(re.search(r"(\d+) record\(s\) were dropped \(metrics: (\d+)\)", err).group(1))
    lost = set(range(12000)) - steps
    assert dropped == len(lost) >= 2000  # never more than the bound (10,000 records) kept
    # the oldest went first (but for those the writer was sending to the dead store at the time): one block,
    # and every metric after it is there
    assert lost == set(range(min(lost), max(lost) + 1))


def test_exit_with_an_unwritable_journal_and_a_dead_store_is_clean_and_says_what_is_lost(
    project_dir, down, request
):
    project = _journal_is_a_file(project_dir)
    result = _script(project, EXIT_SCRIPT, down[1], request.node.name)

    _assert_clean_exit(result)
    assert "script ran to its end FINISHED" in result.stdout
    (warning,) = _journal_warnings(result.stderr)
    assert str(project / ".nbmlops" / "journal") in warning
    assert re.search(r"\d+ record\(s\) kept only in memory are lost", result.stderr), result.stderr
