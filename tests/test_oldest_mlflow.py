"""nbmlops works on the oldest MLflow release it declares (``mlflow>=X.Y``), not only on the newest: a smoke
subset of the suite, run in a second environment that has that release (started in the background by conftest)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_smoke_subset_passes_on_the_oldest_supported_mlflow(oldest_mlflow_job: tuple[subprocess.Popen, Path] | None):
    assert oldest_mlflow_job is not None, "conftest starts the oldest-MLflow job when this test is collected"
    process, log = oldest_mlflow_job
    try:
        code = process.wait(timeout=1800)
    except Exception:
        process.kill()
        raise
    output = log.read_text()
    assert "smoke tests on mlflow " in output, output[-3000:]
    assert code == 0, output[-6000:]
