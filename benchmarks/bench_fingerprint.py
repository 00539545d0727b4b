"""Throughput of ``nbmlops.data.fingerprint`` against MLflow's digest, pandas and md5.

Usage: python benchmarks/bench_fingerprint.py [--mb 500] [--string-mb 200]

Builds (a) a numeric frame (float64 and int64 columns), (b) a frame with one Arrow-backed
``large_string`` column and (c) the same strings as an object-dtype column; times each tool (best
of 3, a single run for tools slower than 10 s) and writes the table between the
``<!-- fingerprint:start -->`` and ``<!-- fingerprint:end -->`` markers of benchmarks/RESULTS.md.
Throughput is data bytes per second: the column buffers for (a), the UTF-8 bytes of the values
for (b) and (c). md5 hashes exactly those bytes, already in memory.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_file import write_section

from nbmlops.data import fingerprint

RESULTS = Path(__file__).with_name("RESULTS.md")
NUMERIC_TARGET, ARROW_TARGET, OBJECT_TARGET = 10.0, 10.0, 1.0  # minimum ours/md5 throughput


def numeric_frame(mb: int) -> pd.DataFrame:
    """Eight columns, half float64 and half int64, ``mb`` MB in total."""
    rng = np.random.default_rng(0)
    rows = mb * 1_000_000 // 64
    cols = {f"f{i}": rng.standard_normal(rows) for i in range(4)}
    cols |= {f"i{i}": rng.integers(-(10**12), 10**12, rows) for i in range(4)}
    return pd.DataFrame(cols)


def random_strings(mb: int) -> pa.LargeStringArray:
    """Alphanumeric strings of 8 to 56 bytes (mean 32), one in twenty starting with 'é'."""
    rng = np.random.default_rng(1)
    n = mb * 1_000_000 // 32
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rng.integers(8, 57, n), out=offsets[1:])
    alphabet = np.frombuffer(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "u1"
    )
    data = alphabet[rng.integers(0, len(alphabet), int(offsets[-1]))]
    accented = offsets[:-1][rng.random(n) < 0.05]
    data[accented], data[accented + 1] = 0xC3, 0xA9
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def best_of(fn: Callable[[], object], repeat: int = 3, slow: float = 10.0) -> float:
    """Best wall time of up to ``repeat`` runs; one run if it takes longer than ``slow`` s."""
    times: list[float] = []
    while len(times) < repeat and (not times or times[0] < slow):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def md5_all(buffers: list[memoryview]) -> None:
    for buf in buffers:
        hashlib.md5(buf).digest()


def measure(df: pd.DataFrame, buffers: list[memoryview]) -> dict[str, float]:
    import mlflow.data

    return {
        "nbmlops fingerprint": best_of(lambda: fingerprint(df)),
        "mlflow from_pandas digest": best_of(lambda: mlflow.data.from_pandas(df).digest),
        "pandas hash_pandas_object": best_of(lambda: pd.util.hash_pandas_object(df).values),
        "hashlib.md5": best_of(lambda: md5_all(buffers)),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(name: str, nbytes: int, times: dict[str, float], target: float) -> tuple[str, bool]:
    ours, md5 = times["nbmlops fingerprint"], times["hashlib.md5"]
    mlflow = times["mlflow from_pandas digest"]
    lines = [
        f"**{name}** ({nbytes / 1e6:,.0f} MB of data)",
        "",
        "| tool | seconds | GB/s |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {tool} | {t:.3f} | {nbytes / t / 1e9:.2f} |" for tool, t in times.items()]
    met = md5 / ours >= target
    lines += [
        "",
        f"ours/md5: {md5 / ours:.1f}x (target >= {target:g}x: {'met' if met else 'MISSED'}); "
        f"ours/mlflow: {mlflow / ours:.1f}x",
        "",
    ]
    return "\n".join(lines), met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="size of the numeric frame (MB)")
    parser.add_argument("--string-mb", type=int, default=200, help="UTF-8 bytes of strings (MB)")
    args = parser.parse_args()

    df = numeric_frame(args.mb)
    buffers = [memoryview(df[c].to_numpy()).cast("B") for c in df.columns]
    cases = [("(a) numeric frame, 4 float64 + 4 int64 columns", df, buffers, NUMERIC_TARGET)]
    strings = random_strings(args.string_mb)
    utf8 = [memoryview(strings.buffers()[2]).cast("B")]
    values = f"{len(strings):,} values of {len(utf8[0]) / len(strings):.0f} bytes on average"
    arrow = pd.DataFrame({"s": pd.arrays.ArrowExtensionArray(strings)})
    objects = pd.DataFrame({"s": strings.to_numpy(zero_copy_only=False)}, dtype=object)
    cases.append((f"(b) Arrow large_string column, {values}", arrow, utf8, ARROW_TARGET))
    cases.append((f"(c) object-dtype string column, {values}", objects, utf8, OBJECT_TARGET))

    sections, all_met = [], True
    for name, frame, data, target in cases:
        text, met = table(name, sum(map(len, data)), measure(frame, data), target)
        print(text, flush=True)
        sections.append(text)
        all_met &= met

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = [
        "## fingerprint",
        "",
        f"Command: `python benchmarks/bench_fingerprint.py --mb {args.mb}"
        f" --string-mb {args.string_mb}`",
        f"Date: {datetime.date.today().isoformat()}",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (`nproc`), {cpu_model()}, load average"
        f" {load} at the end; Python {platform.python_version()}, pandas {pd.__version__},"
        f" numpy {np.__version__}, pyarrow {pa.__version__}",
        "Targets (ours/md5 >= 10x numeric, >= 10x Arrow strings, >= 1x object strings): "
        + ("all met" if all_met else "NOT all met"),
        "",
    ]
    write_section("fingerprint", "\n".join(header + sections))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
