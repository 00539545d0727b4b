"""A tracked cell reading a large numeric frame: background work, added peak memory and Parquet bytes, against
what a competent user does by hand (``df.to_parquet(path)``, then hashing the file).

Usage: python benchmarks/bench_snapshots.py [--mb 1000] [--repeats 3] [--no-write]

Each measurement runs in a fresh child process (so that its peak memory is its own): a real IPython
``InteractiveShell`` with ``%load_ext nbmlops`` tracking to a fresh sqlite store (created by a warm-up tracked
cell first, so that the store's creation is not counted), an untracked cell that builds the frame (``--mb`` MB:
4 float64 and 4 int64 columns of random numbers), then the tracked cell ``total = float(df["f0"].sum())``,
which reads ``df`` as its training data: nbmlops fingerprints it on the cell's thread and, in the background,
profiles it and snapshots it. Measured from the start of the tracked cell until ``nbmlops.flush()`` returns
(every record in the store, the snapshot written and verified): seconds, and the peak resident memory it added
(``VmHWM`` restarted before the cell through ``/proc/self/clear_refs``, minus the resident memory then) as a
share of the frame's ``nbytes``; and the bytes of Parquet stored. Three cases, in interleaved rounds (the order
rotates each round): (a) nbmlops with ``snapshot_max_bytes`` raised above the frame, so it is snapshotted
(the targets apply here); (b) nbmlops with the default limit (256 MiB: the frame is fingerprinted and profiled
only); (c) by hand: ``df.to_parquet(path)`` then ``hashlib.md5`` over the file (as DVC does), timed and
measured the same way. Targets for (a): background work <= 15 s, added peak memory <= 25% of the frame. Medians
and spreads (min-max) are reported. Writes its section of benchmarks/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_file import write_section

TIME_TARGET = 15.0  # seconds of background work for the tracked cell, until flushed
MEMORY_TARGET = 0.25  # added peak resident memory, as a share of the frame

CASES = {
    "a": "nbmlops `%%track`, frame snapshotted (snapshot_max_bytes=2GiB)",
    "b": "nbmlops `%%track`, default limit (256 MiB): fingerprint and profile only",
    "c": "by hand: `df.to_parquet(path)` + md5 of the file",
}

CHILD = r'''
import hashlib, json, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

case, mb, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])


def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))


def frame():
    rng = np.random.default_rng(0)
    rows = mb * 1_000_000 // 64
    df = pd.DataFrame({f"f{i}": rng.standard_normal(rows) for i in range(4)})
    for i in range(4):
        df[f"i{i}"] = rng.integers(-(10**12), 10**12, rows)
    return df


if case == "c":
    import pyarrow.parquet  # noqa: F401  (imports are not the measured work)

    df = frame()
    Path("/proc/self/clear_refs").write_text("5")
    base, start = status("VmRSS"), time.perf_counter()
    path = folder / "df.parquet"
    df.to_parquet(path)
    with open(path, "rb") as f:
        hashlib.file_digest(f, "md5").hexdigest()
    seconds = time.perf_counter() - start
    stored = path.stat().st_size
    note = "written"
else:
    from IPython.core.interactiveshell import InteractiveShell

    import nbmlops

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmlops")
    shell.run_cell("import numpy as np, pandas as pd\nwarm = pd.DataFrame({'x': np.arange(10.0)})")
    shell.run_cell_magic("track", "", "w = float(warm['x'].sum())")  # creates the store, imports mlflow
    nbmlops.flush(600)
    shell.user_ns["df"] = frame()
    Path("/proc/self/clear_refs").write_text("5")
    base, start = status("VmRSS"), time.perf_counter()
    shell.run_cell_magic("track", "", "total = float(df['f0'].sum())")
    nbmlops.flush(1200)
    seconds = time.perf_counter() - start
    stored = sum(p.stat().st_size for p in (folder / ".nbmlops" / "data").rglob("*.parquet"))
    note = "snapshotted" if stored > 10_000 else "fingerprinted and profiled"
    df = shell.user_ns["df"]
print(json.dumps({"seconds": seconds, "added": status("VmHWM") - base, "nbytes": int(df.memory_usage().sum()),
                  "parquet": stored, "note": note}))
'''


def measure(case: str, mb: int) -> dict[str, float]:
    """One child process: the case's seconds, added peak bytes, frame bytes and Parquet bytes."""
    with tempfile.TemporaryDirectory(prefix="bench-snapshots-") as tmp:
        folder = Path(tmp)
        (folder / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
        env["NBMLOPS_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
        env["NBMLOPS_DATA_STORE"] = "local"
        env["IPYTHONDIR"] = str(folder / ".ipython")
        if case == "a":
            env["NBMLOPS_SNAPSHOT_MAX_BYTES"] = "2GiB"
        out = subprocess.run([sys.executable, "-c", CHILD, case, str(mb), str(folder)], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=3600, check=False)
        if out.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def commit() -> str:
    """The checkout's commit (with ``+changes`` when its files differ from it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "nbmlops"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+changes" if dirty else "")


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000, help="size of the numeric frame (MB)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    order = list(CASES)
    for round_ in range(args.repeats):
        for case in order[round_ % len(order):] + order[: round_ % len(order)]:
            results[case].append(measure(case, args.mb))
            print(f"round {round_ + 1} {case}: {results[case][-1]}", flush=True)

    nbytes = results["a"][0]["nbytes"]
    lines = [
        f"Frame: {nbytes / 1e6:,.0f} MB (4 float64 + 4 int64 columns); {args.repeats} interleaved rounds, "
        "median (min-max); one fresh process per measurement.",
        "",
        "| case | background work until flushed, s | added peak memory, share of the frame | Parquet MB | |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for case, name in CASES.items():
        rows = results[case]
        lines.append(
            f"| ({case}) {name} | {spread([r['seconds'] for r in rows], '.1f')} | "
            f"{spread([r['added'] / r['nbytes'] for r in rows], '.0%')} | "
            f"{spread([r['parquet'] / 1e6 for r in rows], ',.0f')} | {rows[0]['note']} |"
        )
    seconds = statistics.median(r["seconds"] for r in results["a"])
    added = statistics.median(r["added"] / r["nbytes"] for r in results["a"])
    by_hand = statistics.median(r["seconds"] for r in results["c"])
    time_met, memory_met = seconds <= TIME_TARGET, added <= MEMORY_TARGET
    lines += [
        "",
        f"(a) background work {seconds:.1f} s (target <= {TIME_TARGET:g} s: {'met' if time_met else 'MISSED'}); "
        f"added peak memory {added:.0%} of the frame (target <= {MEMORY_TARGET:.0%}: "
        f"{'met' if memory_met else 'MISSED'}); (a) / by hand: {seconds / by_hand:.2f}x the time "
        "(while also fingerprinting, profiling, verifying the write and recording the run).",
        "",
    ]
    print("\n".join(lines))
    if args.no_write:
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    header = [
        "## snapshots",
        "",
        f"Command: `python benchmarks/bench_snapshots.py --mb {args.mb} --repeats {args.repeats}`",
        f"Date: {datetime.date.today().isoformat()}; code measured: nbmlops commit {commit()}",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (`nproc`), load average {load} at the end; Python "
        f"{platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, pyarrow {pa.__version__}",
        f"Targets (a): background work <= {TIME_TARGET:g} s, added peak memory <= {MEMORY_TARGET:.0%} of the frame: "
        + ("met" if time_met and memory_met else "NOT met"),
        "",
    ]
    write_section("snapshots", "\n".join(header + lines))
    print(f"wrote {Path(__file__).with_name('RESULTS.md')}")


if __name__ == "__main__":
    main()
