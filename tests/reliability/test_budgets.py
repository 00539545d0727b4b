"""Item 10 of the trust issue: every call to the tracking store has a budget (``call_timeout``).

A real ``mlflow server`` sits behind a loopback proxy whose ``/health`` answers while its API calls hang,
or nothing answers at all (a socket that accepts and never replies). ``nbmlops sync``, ``nbmlops status``
and ``%nbmlops status`` end within about one budget, status names the last delivery failure, and the one
outage warning appears for an outage longer than the budget, not for a blip.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.reliability.faults import Fault, FaultProxy, clean_env, nbmlops_cli, silent_server, wait_for

BUDGET = 4.0
#: what a CLI command costs beyond its calls on a loaded 2-core machine: starting Python, importing MLflow
STARTUP_S = 40.0

ONE_RUN = textwrap.dedent("""
    import nbmlops
    with nbmlops.track("budget", params={"a": 1}):
        nbmlops.log_metric("m", 1.0)
""")


def environment(**extra: str) -> dict[str, str]:
    return clean_env(**{"NBMLOPS_EXPERIMENT": "budget", "NBMLOPS_CALL_TIMEOUT": str(BUDGET), **extra})


def journals_written_in_an_outage(project: Path, proxy: FaultProxy, count: int) -> list[Path]:
    """``count`` journals, one per process, written in the project folder ``project`` while the server behind
    ``proxy`` answered only 503."""
    proxy.add(Fault("status", path="/", status=503))
    env = environment(NBMLOPS_TRACKING_URI=proxy.uri, NBMLOPS_FLUSH_TIMEOUT="0", NBMLOPS_CALL_TIMEOUT="0.5")
    processes = [
        subprocess.Popen([sys.executable, "-c", ONE_RUN], cwd=project, env=env, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0
    proxy.clear()
    journals = sorted((project / ".nbmlops" / "journal").glob("*.journal"))
    assert len(journals) == count
    return journals


def cli(project: Path, uri: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return nbmlops_cli(project, command, env=environment(NBMLOPS_TRACKING_URI=uri), timeout=timeout)


def test_sync_and_status_against_a_server_whose_api_hangs_end_within_the_budget(server: str, project_dir: Path) -> None:
    project = project_dir
    with FaultProxy(server) as proxy:
        journals = journals_written_in_an_outage(project, proxy, 6)
        # the same command against the same server, answering
        status = cli(project, proxy.uri, "status")
        assert status.returncode == 0, status.stderr
        proxy.add(Fault("hang", path="/api/"))
        result = cli(project, proxy.uri, "sync", timeout=BUDGET * 6 + 2 * STARTUP_S)
        # six journals, one budget: after the first call ran out of time, the others fail at once (a hang would
        # run into cli's guard; the time itself is not asserted here: no wall-clock thresholds in tests, they
        # are measured by benchmarks/bench_budgets.py)
        assert result.returncode != 0
        assert "not delivered" in result.stderr and f"no answer within {BUDGET:g} s" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert all(journal.exists() for journal in journals)  # nothing lost
        result = cli(project, proxy.uri, "status", timeout=BUDGET * 6 + 2 * STARTUP_S)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert f"no answer within {BUDGET:g} s" in result.stderr, result.stderr
        proxy.clear()
        result = cli(project, proxy.uri, "sync")
        assert result.returncode == 0, result.stderr
        assert re.search(r"delivered \d+ record\(s\) from 6 journal\(s\)", result.stdout), result.stdout
    assert not any(journal.exists() for journal in journals)


@contextlib.contextmanager
def api_hangs(server: str):
    with FaultProxy(server) as proxy:
        proxy.add(Fault("hang", path="/api/"))
        yield proxy.uri


@pytest.mark.parametrize("fault", ["api hangs", "socket never answers"])
def test_status_magic_names_the_last_delivery_failure_within_the_budget(
    fault: str, server: str, shell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbmlops.tracking.session import get_session

    with api_hangs(server) if fault == "api hangs" else silent_server() as uri:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", str(BUDGET))
        shell.run_cell_magic("track", "--name budget", "x = 1\nscore = x * 2")
        # the writer's delivery runs out of its budget, and says why
        wait_for(lambda: get_session().store_error is not None, 4 * BUDGET + 60, "the delivery to fail")
        capsys.readouterr()
        shell.run_line_magic("nbmlops", "status")
        shown = capsys.readouterr().out
    assert re.search(r"tracking store: +http://127\.0\.0\.1:\d+ \(not answering: .*\)", shown), shown
    assert re.search(rf"last delivery: +failed at [\d:]+: .*no answer within {BUDGET:g} s", shown), shown
    waiting = re.search(r"waiting records: (\d+)", shown)
    assert waiting and int(waiting.group(1)) > 0, shown


def test_status_magic_never_says_ok_while_the_store_is_down_and_counts_what_flush_counts(
    server: str, shell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store went down after a delivery that went through: status said "(ok)" and its waiting count disagreed
    with flush's."""
    from nbmlops import flush
    from nbmlops.exceptions import FlushTimeoutError

    with FaultProxy(server) as proxy:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", proxy.uri)
        monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", str(BUDGET))
        shell.run_cell_magic("track", "--name before", "x = 1")
        shell.run_line_magic("nbmlops", "flush 120")
        proxy.add(Fault("hang", path="/api/"))
        shell.run_cell_magic("track", "--name during", "y = 2\nscore = y * 2")
        capsys.readouterr()
        shell.run_line_magic("nbmlops", "status")
        shown = capsys.readouterr().out
        with pytest.raises(FlushTimeoutError) as flushed:
            flush(0.5)
    assert re.search(r"tracking store: +http://127\.0\.0\.1:\d+ \(not answering: .*\)", shown), shown
    (delivery,) = re.findall(r"last delivery: +(.*)", shown)
    assert delivery != "ok" and ("failed at" in delivery or "before the store stopped answering" in delivery), shown
    waiting = re.search(r"waiting records: (\d+)", shown)
    assert waiting and int(waiting.group(1)) == flushed.value.pending > 0, (shown, str(flushed.value))


def test_status_magic_says_the_store_answers(shell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell_magic("track", "--name fine", "x = 1")
    shell.run_line_magic("nbmlops", "flush 120")
    capsys.readouterr()
    shell.run_line_magic("nbmlops", "status")
    shown = capsys.readouterr().out
    assert re.search(r"tracking store: +sqlite:///.*\(answers\)", shown), shown
    assert "last delivery:   ok" in shown and "waiting records: 0" in shown, shown


PHASES = textwrap.dedent("""
    import pathlib, sys, time
    import nbmlops
    from nbmlops.exceptions import FlushTimeoutError

    def wait_for(name):
        deadline = time.monotonic() + 300
        while not pathlib.Path(name).exists():
            assert time.monotonic() < deadline, name
            time.sleep(0.05)

    with nbmlops.track("blip", params={"phase": 1}):
        nbmlops.log_metric("m", 1.0)
    nbmlops.flush(120)  # delivered through a blip shorter than the budget
    print("phase 1 delivered", file=sys.stderr, flush=True)
    pathlib.Path("blip.done").touch()
    wait_for("outage.on")
    with nbmlops.track("outage", params={"phase": 2}):
        nbmlops.log_metric("m", 2.0)
    try:
        nbmlops.flush(3 * BUDGET)
    except FlushTimeoutError as exc:
        print("flush gave up:", exc.reason, file=sys.stderr, flush=True)
    pathlib.Path("outage.seen").touch()
    wait_for("outage.off")
    nbmlops.flush(120)
    print("phase 2 delivered", file=sys.stderr, flush=True)
""").replace("BUDGET", repr(BUDGET))


def test_one_warning_for_an_outage_longer_than_the_budget_none_for_a_blip(server: str, project_dir: Path) -> None:
    project = project_dir
    with FaultProxy(server) as proxy:
        # a blip: the first two batches are refused with 503, the retry within the budget gets through
        proxy.add(Fault("status", path="/runs/log-batch", status=503, times=2))
        process = subprocess.Popen(
            [sys.executable, "-c", PHASES], cwd=project, env=environment(NBMLOPS_TRACKING_URI=proxy.uri),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_for(lambda: (project / "blip.done").exists() or process.poll() is not None, 300, "the blip phase")
            assert proxy.count("/runs/log-batch", "status") == 2
            proxy.clear()
            proxy.add(Fault("hang", path="/api/"))  # an outage: the server answers /health, its API never
            (project / "outage.on").touch()
            wait_for(lambda: (project / "outage.seen").exists() or process.poll() is not None, 600, "the outage")
            proxy.clear()
            (project / "outage.off").touch()
            _, stderr = process.communicate(timeout=600)
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    blip, outage = stderr.split("phase 1 delivered", 1)
    assert "nbmlops:" not in blip, blip  # no warning for a blip shorter than the budget
    warnings = re.findall(r"nbmlops: (\d+) record\(s\) are waiting, safe in the local journal", outage)
    assert len(warnings) == 1, stderr
    assert f"no answer within {BUDGET:g} s" in outage, stderr
    assert "flush gave up:" in outage and "unavailable" in outage.split("flush gave up:", 1)[1], stderr
    assert "reachable again" in outage and "phase 2 delivered" in outage, stderr
    from mlflow import MlflowClient

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("budget")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name in ("blip", "outage")]
    assert sorted(r.data.params["phase"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
