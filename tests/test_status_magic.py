"""``%nbmlops status`` in a real IPython shell tells the truth about a dead tracking store, in the words the
``nbmlops status`` command uses: a port nothing listens on, and a server killed after it took this session's
runs (its MLflow client already connected), are "not answering" with the refused connection as the reason on
one line; never "(answers)" or "ok" alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import free_port, mlflow_server

BUDGET = "8"


def status(shell, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    shell.run_line_magic("nbmlops", "status")
    return capsys.readouterr().out


def store_line(shown: str) -> str:
    [line] = [line for line in shown.splitlines() if line.startswith("tracking store:")]
    return line


def test_status_of_a_port_nothing_listens_on_says_the_connection_is_refused(
    shell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", BUDGET)
    shell.run_cell_magic("track", "--name refused", "x = 1")
    shown = status(shell, capsys)
    line = store_line(shown)
    assert re.fullmatch(r"tracking store: +http://127\.0\.0\.1:\d+ \(not answering: .*Connection refused.*\)", line), shown
    assert "(answers)" not in shown and "ok" not in shown.split("last delivery:")[1].split("\n")[0]
    assert len(line) < 160, line  # one line a person reads, not MLflow's exception
    assert "no answer within" not in line  # it did answer: it refused


def test_status_after_the_server_died_says_it_refuses_connections_on_one_line(
    shell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbmlops import flush

    monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", BUDGET)
    with mlflow_server(tmp_path / "server") as uri:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        shell.run_cell_magic("track", "--name before", "x = 1")
        flush(120)
        assert "(answers)" in store_line(status(shell, capsys))
    shown = status(shell, capsys)  # the server is gone; this session's client was connected to it
    line = store_line(shown)
    assert re.fullmatch(r"tracking store: +http://127\.0\.0\.1:\d+ \(not answering: .*Connection refused.*\)", line), shown
    assert len(line) < 160 and "no answer within" not in line, line
    assert re.search(r"last delivery: +ok at [\d:]+, before the store stopped answering", shown), shown
