"""benchmarks/bench_serve.py in its smallest size, as CI runs it: both servers start, the load runs, an alias
swap under load fails no request, every request sent to nbmlops is a row in the store, the serving run ends
FINISHED, and ``--no-write`` leaves RESULTS.md alone. (Its latency and throughput targets depend on the machine:
they are read in RESULTS.md, not asserted here.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serve.py"
RESULTS = BENCH.with_name("RESULTS.md")


def _row(table: str, starts: str) -> list[str]:
    found = [line for line in table.splitlines() if line.startswith(f"| {starts}")]
    assert len(found) == 1, (starts, table)
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_quick_benchmark_swaps_without_failures_and_delivers_every_request(tmp_path):
    before = RESULTS.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-write", "--no-profile", "--rounds", "1", "--requests", "80",
         "--batch-requests", "40", "--concurrency", "4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    table = result.stdout
    assert "## Serving: `nbmlops serve` against `mlflow models serve`" in table
    for kind in ("1. one row, 4 in flight", "2. batch of 16 rows, 4 in flight", "3. one row, one request at a time"):
        assert _row(table, f"{kind}: failed requests, both sides")[1:] == ["0", "0", "PASS"]
        assert "req/s" in _row(table, f"{kind}: `nbmlops serve`, throughput")[1]
    swap = _row(table, "**4. alias swap under load (v1 -> v2)")
    assert swap[1] == "**0**" and swap[3] == "PASS"
    versions = _row(table, "4. versions that answered")[1]
    assert "v1: " in versions and "v2: " in versions
    assert _row(table, "**5. traffic rows in the store after a graceful stop")[3] == "PASS"
    assert _row(table, "5. the serving run after the stop")[1].startswith("FINISHED;")
    assert RESULTS.read_bytes() == before
