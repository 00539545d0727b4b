"""How much kernel history a session's tracked runs store: linear in the session, not quadratic.

    python benchmarks/bench_history.py [--cells 300] [--no-write]

One fresh process, a real IPython ``InteractiveShell`` with ``%load_ext nbmlops``, tracking to a new sqlite store.
It runs ``--cells`` tracked cells, each a 7-line cell of its own (as a notebook's cells are), and at a third, two
thirds and the end it flushes and measures:

- the bytes of every ``code/history.json`` artifact the runs stored (in the store's artifact folder);
- the bytes the session's journal took on disk (written, not yet compacted);
- beside them, the bytes the runs would have stored had each run kept the whole kernel history up to its own cell
  (nbmlops' earlier format, and what logging ``In``/``_ih`` as an artifact per run by hand gives), computed from the
  same session's history in the same format;
- that the last run's history, put together by ``nbmlops.tracking.query.kernel_history`` (what ``reproduce`` reads),
  holds every cell of the session in order.

Target: stored history grows linearly: bytes at the end / bytes at a third <= 3.3 (3.0 is exactly linear; the whole
history per run grows ~9x over the same span).

Results go to the ``history`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from results_file import write_section

HERE = Path(__file__).resolve().parent
GROWTH_TARGET = 3.3

CELL = """%%track
# cell {i}: a notebook cell of ordinary size
import math
values_{i} = [math.sqrt(k) for k in range({i} % 7 + 3)]
total_{i} = sum(values_{i})
def helper_{i}(x, scale=2.0):
    return x * scale + total_{i}
score = helper_{i}(3.0)
"""


def _bytes(root: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in root.rglob(pattern) if path.is_file())


def _whole_history_bytes(sources: list[str]) -> int:
    """What the runs would store if each kept the whole history up to its own cell (format 1: a JSON list)."""
    total, cells = 0, []
    for n, source in enumerate(sources, start=1):
        cells.append({"n": n, "source": source})
        total += len(json.dumps(cells, indent=1).encode())
    return total


def measure(cells: int) -> dict[str, Any]:
    """Run the session in this process (call it in a fresh interpreter) and return the figures."""
    root = Path(tempfile.mkdtemp(prefix="nbmlops-bench-history-"))
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    os.chdir(root)
    store, artifacts = root / "store" / "mlflow.db", root / "store" / "artifacts"
    os.environ.update(
        NBMLOPS_TRACKING_URI=f"sqlite:///{store}", NBMLOPS_ARTIFACT_ROOT=str(artifacts),
        NBMLOPS_EXPERIMENT="bench-history",
    )
    for name in ("MLFLOW_TRACKING_URI", "NBMLOPS_CAPTURE"):
        os.environ.pop(name, None)
    from IPython.core.interactiveshell import InteractiveShell

    import nbmlops
    from nbmlops.tracking.query import kernel_history

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmlops")
    checkpoints = sorted({cells // 3, 2 * cells // 3, cells})
    sources: list[str] = []
    rows = []
    for i in range(1, cells + 1):
        code = CELL.format(i=i)
        result = shell.run_cell(code, store_history=True)
        if not result.success:
            raise RuntimeError(f"cell {i} failed: {result.error_in_exec!r}")
        sources.append(code)
        if i in checkpoints:
            nbmlops.flush(120)
            rows.append({
                "cells": i,
                "history_bytes": _bytes(artifacts, "history.json"),
                "journal_bytes": _bytes(root / ".nbmlops" / "journal", "*.journal"),
                "whole_history_bytes": _whole_history_bytes(sources),
            })
    history = kernel_history(os.environ["NBMLOPS_TRACKING_URI"], _last_run_id(os.environ["NBMLOPS_TRACKING_URI"]))
    history = history or []
    tracked = [cell["source"] for cell in history if "# cell " in cell["source"]]
    complete = len(tracked) == cells and all(f"# cell {i}:" in tracked[i - 1] for i in range(1, cells + 1))
    return {"rows": rows, "reassembled_cells": len(history), "complete": complete}


def _last_run_id(uri: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench-history")
    (run,) = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return str(run.info.run_id)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def report(result: dict[str, Any], command: str) -> str:
    rows = result["rows"]
    first, last = rows[0], rows[-1]
    growth = last["history_bytes"] / max(first["history_bytes"], 1)
    whole_growth = last["whole_history_bytes"] / max(first["whole_history_bytes"], 1)
    load = os.getloadavg()
    lines = [
        "## Kernel history storage (`benchmarks/bench_history.py`)",
        "",
        f"Command: `{command}`. Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"Python {platform.python_version()}; load average {load[0]:.2f}. Code measured: nbmlops commit "
        f"{_commit()}. Date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "Method: one fresh process, a real IPython shell, one tracked 7-line cell after another on a new sqlite "
        "store; at each checkpoint a flush, then the bytes of every `code/history.json` the runs stored and of the "
        "session's journal, beside what the same runs would store if each kept the whole history up to its cell "
        "(the earlier format; what logging `In` per run by hand gives), computed from the same cells.",
        "",
        "| tracked cells | stored history (all runs) | journal on disk | whole history per run (reference) |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['cells']} | {_mb(row['history_bytes'])} | {_mb(row['journal_bytes'])} | "
                     f"{_mb(row['whole_history_bytes'])} |")
    verdict = "PASS" if growth <= GROWTH_TARGET and result["complete"] else "FAIL"
    lines += [
        "",
        "| measure | value | target | result |",
        "|---|---|---|---|",
        f"| **stored history, {last['cells']} cells / {first['cells']} cells** | **{growth:.2f}x** "
        f"(whole history per run: {whole_growth:.2f}x) | <= {GROWTH_TARGET}x (3.0 = linear) | {verdict} |",
        f"| journal on disk, {last['cells']} cells / {first['cells']} cells | "
        f"{last['journal_bytes'] / max(first['journal_bytes'], 1):.2f}x |  | info |",
        f"| the last run's history put together (`kernel_history`, what `reproduce` reads): cells; every tracked "
        f"cell in order | {result['reassembled_cells']}; {result['complete']} |  | info |",
    ]
    return "\n".join(lines)


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                         check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "nbmlops"], cwd=HERE, capture_output=True,
                           text=True, check=False).stdout.strip()
    return out + (" + uncommitted changes" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=300, help="tracked cells in the session (default 300)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cells < 3:
        parser.error("--cells must be at least 3")
    if args.child:
        print(json.dumps(measure(args.cells)))
        return 0
    with tempfile.TemporaryDirectory() as ipython_dir:
        env = dict(os.environ, IPYTHONDIR=ipython_dir)
        done = subprocess.run([sys.executable, __file__, "--child", "--cells", str(args.cells)], env=env,
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        return 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    command = "python benchmarks/bench_history.py" + ("" if args.cells == 300 else f" --cells {args.cells}")
    text = report(result, command)
    print(text)
    if not args.no_write:
        write_section("history", text)
    return 0 if "| FAIL |" not in text else 1


if __name__ == "__main__":
    sys.exit(main())
