"""The lab extension's TypeScript model, tested by jest (its own test tier), run from the Python suite so that the
README's one test command runs every tier."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parents[1] / "labextension"


def _jlpm() -> str:
    """JupyterLab's bundled yarn, next to this interpreter (installed with jupyterlab)."""
    beside = Path(sys.executable).with_name("jlpm")
    found = str(beside) if beside.exists() else shutil.which("jlpm")
    if found is None:
        pytest.fail("jlpm (installed with jupyterlab) is missing: pip install -e '.[test]'")
    return found


def test_typescript_model_passes_its_jest_tests():
    env = {**os.environ, "CI": "true"}
    if not (LABEXTENSION / "node_modules").is_dir():  # the wheel build installs them; a prebuilt tree may not
        subprocess.run([_jlpm(), "install", "--immutable"], cwd=LABEXTENSION, env=env, check=True, timeout=900)
    result = subprocess.run(
        [_jlpm(), "test", "--ci"], cwd=LABEXTENSION, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stderr, result.stderr[-2000:]  # jest ran tests, rather than finding none
