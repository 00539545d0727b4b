"""The code is lint- and type-clean: ruff with the rule set in pyproject.toml, mypy on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "nbmlops", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_package():
    result = _run("mypy", "nbmlops")
    assert result.returncode == 0, result.stdout + result.stderr
