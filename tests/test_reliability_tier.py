"""The reliability tier (``tests/reliability/``), run by conftest in a second pytest process beside the main
suite when the whole suite runs: this test reports its outcome (every failure of it fails this test, named)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.tiers import wait_for_tier


def test_reliability_tier_passes(background_tier: tuple[subprocess.Popen, Path] | None):
    if background_tier is None:
        pytest.skip("tests/reliability runs in this process (on its own, or with NBMLOPS_TIERS_INLINE=1)")
    output = wait_for_tier(background_tier)
    assert " passed" in output, output[-3000:]
