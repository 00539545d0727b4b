"""What the Experiments panel's browser test needs beside the shared helpers: an ``mlflow server`` the test can
kill and start again on the same port and store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import NO_JOB_RUNNER, free_port, stop_group

START_TIMEOUT_S = 120


class TrackingServer:
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store in ``folder``, stopped with SIGKILL and started
    again on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
        env.update(NO_JOB_RUNNER)
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                 f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination", str(self.folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.folder / "server.log").read_text(errors="replace")
                    raise AssertionError(f"mlflow server did not start:\n{log_text[-5000:]}") from None
                time.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL the server and every process of its group (its workers), as a crash would."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process)
