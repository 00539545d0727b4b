"""nbmlops works on the oldest MLflow release it declares (``mlflow>=X.Y``), not only on the newest: a smoke
subset of the suite, run in a second environment that has that release (started in the background by conftest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tiers import wait_for_tier


def test_smoke_subset_passes_on_the_oldest_supported_mlflow(background_tier: tuple[subprocess.Popen, Path] | None):
    assert background_tier is not None, "conftest starts the oldest-MLflow job when this test is collected"
    output = wait_for_tier(background_tier)
    assert "smoke tests on mlflow " in output, output[-3000:]
