"""Waiting for a tier of the suite that conftest runs in the background (see ``pytest_collection_modifyitems``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

#: no tier may take longer than this
TIER_TIMEOUT_S = 2400


def wait_for_tier(job: tuple[subprocess.Popen, Path]) -> str:
    """Wait for the tier to end; its output. Fails, showing the failures and the end of the output, unless it
    exited 0."""
    process, log = job
    try:
        code = process.wait(timeout=TIER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the tier ran past {TIER_TIMEOUT_S} s:\n{log.read_text()[-4000:]}") from None
    output = log.read_text()
    if code != 0:
        failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise AssertionError(f"the tier exited {code}:\n" + "\n".join(failures) + "\n...\n" + output[-6000:])
    return output
