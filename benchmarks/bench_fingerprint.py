"""Throughput of ``nbmlops.data.fingerprint`` against raw xxh3 and memory bandwidth, with MLflow's digest and md5
for scale.

Usage: python benchmarks/bench_fingerprint.py [--mb 500] [--string-mb 200] [--repeats 7] [--no-write]

Builds (a) a numeric frame (float64 and int64 columns), (b) a frame with one Arrow-backed ``large_string``
column and (c) the same strings as an object-dtype column. Each repeat times every tool once, in a rotating
order (interleaved, so a noisy minute hits all of them), on the same data: nbmlops' fingerprint of the frame;
``xxhash.xxh3_128`` over exactly the data bytes (the hash nbmlops uses, with nothing else to do); a numpy copy of
those bytes into a buffer allocated beforehand (what reading and writing them once costs: memory bandwidth);
md5 over them; and MLflow's ``from_pandas(...).digest`` (a single run: it is slow, and only samples the
frame). Medians and the spread (min-max) are reported; the target is ours >= 0.8x the numpy copy's throughput
for numeric frames. Throughput is data bytes per second: the column buffers for (a), the UTF-8 bytes of the
values for (b) and (c). Writes its section of benchmarks/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_file import write_section

from nbmlops.data import fingerprint

RESULTS = Path(__file__).with_name("RESULTS.md")
NUMERIC_TARGET = 0.8  # minimum throughput of ours / a numpy copy of the same bytes


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


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def md5_all(buffers: list[memoryview]) -> None:
    for buf in buffers:
        hashlib.md5(buf).digest()


def xxh3_all(buffers: list[memoryview]) -> None:
    for buf in buffers:
        xxhash.xxh3_128_digest(buf)


def copier(buffers: list[memoryview]) -> Callable[[], None]:
    """A numpy copy of ``buffers`` into targets allocated (and touched) once, beforehand."""
    sources = [np.frombuffer(buf, dtype=np.uint8) for buf in buffers]
    targets = [np.ones_like(src) for src in sources]

    def copy() -> None:
        for src, dst in zip(sources, targets):
            np.copyto(dst, src)

    return copy


def measure(df: pd.DataFrame, buffers: list[memoryview], repeats: int) -> dict[str, list[float]]:
    """Seconds per tool, ``repeats`` interleaved rounds (MLflow's digest once)."""
    import mlflow.data

    tools: dict[str, Callable[[], object]] = {
        "nbmlops fingerprint": lambda: fingerprint(df),
        "xxh3-128 of the same bytes": lambda: xxh3_all(buffers),
        "numpy copy of the same bytes": copier(buffers),
        "hashlib.md5 of the same bytes": lambda: md5_all(buffers),
    }
    times: dict[str, list[float]] = {name: [] for name in tools}
    names = list(tools)
    for name in names:  # warm up: page in the buffers, import what each tool imports
        tools[name]()
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            times[name].append(timed(tools[name]))
    times["mlflow from_pandas digest (1 run)"] = [timed(lambda: mlflow.data.from_pandas(df).digest)]
    return times


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(name: str, nbytes: int, times: dict[str, list[float]], target: float | None) -> tuple[str, bool]:
    """A markdown table of medians and spreads; whether ours reaches ``target`` x the numpy copy's throughput."""
    median = {tool: statistics.median(t) for tool, t in times.items()}
    lines = [
        f"**{name}** ({nbytes / 1e6:,.0f} MB of data, {len(times['nbmlops fingerprint'])} interleaved rounds)",
        "",
        "| tool | median s | spread s | GB/s (median) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {tool} | {median[tool]:.3f} | {min(t):.3f}-{max(t):.3f} | {nbytes / median[tool] / 1e9:.2f} |"
              for tool, t in times.items()]
    ours = median["nbmlops fingerprint"]
    of_copy = median["numpy copy of the same bytes"] / ours
    of_xxh3 = median["xxh3-128 of the same bytes"] / ours
    met = target is None or of_copy >= target
    verdict = "" if target is None else f" (target >= {target:g}x: {'met' if met else 'MISSED'})"
    lines += [
        "",
        f"ours / numpy copy: {of_copy:.2f}x{verdict}; ours / raw xxh3: {of_xxh3:.2f}x; "
        f"ours / md5: {median['hashlib.md5 of the same bytes'] / ours:.1f}x; "
        f"ours / mlflow: {median['mlflow from_pandas digest (1 run)'] / ours:.1f}x",
        "",
    ]
    return "\n".join(lines), met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="size of the numeric frame (MB)")
    parser.add_argument("--string-mb", type=int, default=200, help="UTF-8 bytes of strings (MB)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per case")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    df = numeric_frame(args.mb)
    buffers = [memoryview(df[c].to_numpy()).cast("B") for c in df.columns]
    cases: list[tuple[str, pd.DataFrame, list[memoryview], float | None]] = [
        ("(a) numeric frame, 4 float64 + 4 int64 columns", df, buffers, NUMERIC_TARGET)]
    strings = random_strings(args.string_mb)
    utf8 = [memoryview(strings.buffers()[2]).cast("B")]
    values = f"{len(strings):,} values of {len(utf8[0]) / len(strings):.0f} bytes on average"
    arrow = pd.DataFrame({"s": pd.arrays.ArrowExtensionArray(strings)})
    objects = pd.DataFrame({"s": strings.to_numpy(zero_copy_only=False)}, dtype=object)
    cases.append((f"(b) Arrow large_string column, {values}", arrow, utf8, None))
    cases.append((f"(c) object-dtype string column, {values}", objects, utf8, None))

    sections, all_met = [], True
    for name, frame, data, target in cases:
        text, met = table(name, sum(map(len, data)), measure(frame, data, args.repeats), target)
        print(text, flush=True)
        sections.append(text)
        all_met &= met

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = [
        "## fingerprint",
        "",
        f"Command: `python benchmarks/bench_fingerprint.py --mb {args.mb}"
        f" --string-mb {args.string_mb} --repeats {args.repeats}`",
        f"Date: {datetime.date.today().isoformat()}",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (`nproc`), {cpu_model()}, load average"
        f" {load} at the end; Python {platform.python_version()}, pandas {pd.__version__},"
        f" numpy {np.__version__}, pyarrow {pa.__version__}",
        f"Target (numeric frames: ours >= {NUMERIC_TARGET:g}x the throughput of a numpy copy of the same bytes): "
        + ("met" if all_met else "NOT met") + "; strings: reported against raw xxh3, no target.",
        "",
    ]
    if args.no_write:
        return
    write_section("fingerprint", "\n".join(header + sections))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
