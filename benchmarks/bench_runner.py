"""Headless runs: `nbmlops run` against bare papermill, and sweep speed-up with 2 workers.

    python benchmarks/bench_runner.py [--pairs 10] [--quick] [--no-write]

1. `nbmlops run` of a notebook with `%%track` cells vs `papermill` of the same notebook *without* nbmlops
   (no `%load_ext nbmlops` cell, no `%%track` lines), each as the command a user types, in fresh
   processes, interleaved pairs on the embedded sqlite store (created before timing starts: a
   first-use cost, not a per-run one). Two notebooks: (a) tiny: a parameters cell, one tracked cell, a
   plain cell; (b) realistic: the corpus notebooks `01_cross_validation` and `12_trees_and_ensembles`
   one after the other (17 tracked cells of scikit-learn work on datasets that ship with it). Target
   for each: median of the per-pair wall-time ratios <= 1.15. The fixed cost of a run is the median
   per-pair difference on (a); the cost per tracked cell is what (b) adds beyond it, per extra cell.
   CPU seconds of all the processes of each command (the kernel's included) are reported beside.
2. A sweep of 8 short runs (each sums 15 million terms in a `%%track` cell: about 1 s of pure-Python
   work) with `--workers 2` vs `--workers 1`. Target: speed-up >= 1.7 on 2 cores. Kernel start cost
   (start a kernel, run one trivial cell, shut it down) is reported separately.

Results go to the `runner` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from results_file import write_section

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "tests" / "notebooks"
#: the realistic notebook: these corpus notebooks, one after the other
REALISTIC = ("01_cross_validation", "12_trees_and_ensembles")
#: terms summed by each sweep run: about one second of pure-Python work here, a "short run"
SWEEP_TERMS = 15_000_000
BIN = Path(sys.executable).parent
TARGET = 1.15


def small_notebook(path: Path, n: int = 1000) -> Path:
    """A parameters cell, a `%%track` cell summing ``n`` terms, a plain cell."""
    nb = new_notebook()
    params = new_code_cell(f"alpha = 0.5\nn = {n}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        new_code_cell("%load_ext nbmlops"),
        params,
        new_code_cell("%%track --name compute\ntotal = sum(i * alpha for i in range(n))\nmean = total / n"),
        new_code_cell("print(mean)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def realistic_notebook(path: Path) -> Path:
    """The corpus notebooks of :data:`REALISTIC` as one notebook (one `%load_ext nbmlops` cell)."""
    first, *rest = (nbformat.read(CORPUS / f"{name}.ipynb", as_version=4) for name in REALISTIC)
    for nb in rest:
        first.cells += [c for c in nb.cells if not _is_load_ext(c)]
    nbformat.write(first, path)
    return path


def _is_load_ext(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and cell.source.strip() == "%load_ext nbmlops"


def without_nbmlops(path: Path) -> Path:
    """A copy of the notebook at ``path`` without its `%load_ext nbmlops` cell and `%%track` lines."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if not _is_load_ext(c)]
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("%%track"):
            cell.source = cell.source.split("\n", 1)[1] if "\n" in cell.source else ""
    plain = path.with_name(f"{path.stem}-plain.ipynb")
    nbformat.write(nb, plain)
    return plain


def tracked_cells(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(c.cell_type == "code" and c.source.startswith("%%track") for c in nb.cells)


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds of ``command``, and CPU seconds of all its processes (the kernel's included)."""
    cpu = _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, _children_cpu() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_run_vs_papermill(project: Path, notebook: Path, pairs: int, parameters: list[str]) -> dict[str, float]:
    """Interleaved pairs: `nbmlops run` of ``notebook``, `papermill` of it without nbmlops."""
    plain = without_nbmlops(notebook)
    papermill = [str(BIN / "papermill"), str(plain), str(project / "out-pm.ipynb"), *parameters, "--no-progress-bar"]
    nbmlops = [str(BIN / "nbmlops"), "run", str(notebook), *parameters, "--output", str(project / "out-nb.ipynb"), "--no-progress"]
    timed(nbmlops, project)  # creates the store: a first-use cost, not a per-run one
    timed(papermill, project)
    ours, theirs, our_cpu, their_cpu = [], [], [], []
    for i in range(pairs):
        order = [(nbmlops, ours, our_cpu), (papermill, theirs, their_cpu)]
        for command, wall, cpu in order if i % 2 == 0 else reversed(order):
            elapsed, seconds = timed(command, project)
            wall.append(elapsed)
            cpu.append(seconds)
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    return {
        "nbmlops_cpu_s": statistics.median(our_cpu),
        "papermill_cpu_s": statistics.median(their_cpu),
        "nbmlops_s": statistics.median(ours),
        "papermill_s": statistics.median(theirs),
        "ratio": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "added_s": statistics.median(a - b for a, b in zip(ours, theirs)),
        "pairs": pairs,
        "cells": tracked_cells(notebook),
    }


def kernel_start_cost(samples: int) -> float:
    from jupyter_client.manager import start_new_kernel

    times = []
    for _ in range(samples):
        started = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="python3")
        kc.execute_interactive("1 + 1", timeout=60)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_sweep(project: Path) -> dict[str, float]:
    from nbmlops.runner.sweep import run_sweep

    notebook = small_notebook(project / "sweep.ipynb", SWEEP_TERMS)
    grid = {"alpha": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}
    seconds = {}
    for workers in (1, 2, 1, 2):
        started = time.perf_counter()
        result = run_sweep(notebook, grid, workers=workers, progress=False)
        elapsed = time.perf_counter() - started
        if result.exit_code != 0:
            raise SystemExit(f"sweep with {workers} worker(s) failed")
        seconds.setdefault(workers, []).append(elapsed)
    one, two = min(seconds[1]), min(seconds[2])
    started = time.perf_counter()
    sum(i * 0.5 for i in range(SWEEP_TERMS))
    return {"one_s": one, "two_s": two, "speedup": one / two, "work_s": time.perf_counter() - started}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}"


def code_measured() -> str:
    from nbmlops.tracking.context import git_state

    state = git_state(HERE.parent)  # the whole work tree: other people's edits count as "uncommitted"
    return f"commit {state.commit[:7]}" + (" + uncommitted changes" if state.dirty else "") if state else "unknown"


def write_results(rows: list[tuple[str, str, str, str]], note: str) -> None:
    table = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    write_section("runner", (
        "## Headless runs (`benchmarks/bench_runner.py`)\n\n"
        f"Reproduce: `python benchmarks/bench_runner.py`. {note}\n\n"
        "| measure | value | target | result |\n|---|---|---|---|\n" + table
    ))


def run_rows(label: str, run: dict[str, float]) -> list[tuple[str, str, str, str]]:
    ratio = f"{run['ratio']:.3f} (min {run['ratio_min']:.3f}, max {run['ratio_max']:.3f})"
    return [
        (f"1{label}. `papermill`, notebook without nbmlops, median wall", f"{run['papermill_s']:.2f} s", "", "info"),
        (f"1{label}. `nbmlops run`, {run['cells']} tracked cell(s), median wall", f"{run['nbmlops_s']:.2f} s", "", "info"),
        (
            f"**1{label}. nbmlops run / papermill (median of {run['pairs']} pairs)**",
            f"**{ratio}**",
            f"<= {TARGET}",
            "PASS" if run["ratio"] <= TARGET else "FAIL",
        ),
        (f"1{label}. CPU of all processes (kernel included), median: papermill; nbmlops run",
         f"{run['papermill_cpu_s']:.2f} s; {run['nbmlops_cpu_s']:.2f} s", "", "info"),
    ]


def cost_rows(tiny: dict[str, float], real: dict[str, float]) -> list[tuple[str, str, str, str]]:
    extra = real["cells"] - tiny["cells"]
    per_cell = (real["added_s"] - tiny["added_s"]) / extra
    cpu_fixed = tiny["nbmlops_cpu_s"] - tiny["papermill_cpu_s"]
    cpu_per_cell = (real["nbmlops_cpu_s"] - real["papermill_cpu_s"] - cpu_fixed) / extra
    return [
        ("1. fixed cost of a run: added wall time on (a), median of per-pair differences; added CPU",
         f"{tiny['added_s']:.2f} s; {cpu_fixed:.2f} s", "", "info"),
        (f"1. cost per tracked cell: what (b) adds beyond (a), per extra cell ({extra}): wall; CPU",
         f"{per_cell * 1000:.0f} ms; {cpu_per_cell * 1000:.0f} ms", "", "info"),
        ("1. of papermill's wall: importing `rfc3987_syntax` (jsonschema imports it; `nbmlops run` skips it)",
         rfc3987_import(), "", "info"),
    ]


def rfc3987_import() -> str:
    """Median seconds of ``import rfc3987_syntax`` in a fresh process, or why there is none."""
    code = "import time; t = time.perf_counter(); import rfc3987_syntax; print(time.perf_counter() - t)"
    seconds = []
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if result.returncode != 0:
            return "not installed"
        seconds.append(float(result.stdout))
    return f"{statistics.median(seconds):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, help="interleaved pairs per notebook in part 1 (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 pairs, one kernel-start sample")
    parser.add_argument("--no-sweep", action="store_true", help="part 1 only (print only: RESULTS.md is left alone)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    pairs = 3 if args.quick else args.pairs
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-") as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
        os.chdir(project)
        for name in ("NBMLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBMLOPS_EXPERIMENT"):
            os.environ.pop(name, None)
        tiny = bench_run_vs_papermill(project, small_notebook(project / "small.ipynb"), pairs, ["-p", "alpha", "0.7"])
        real = bench_run_vs_papermill(project, realistic_notebook(project / "realistic.ipynb"), pairs, [])
        rows = run_rows("a", tiny) + run_rows("b", real) + cost_rows(tiny, real)
        if not args.no_sweep:
            kernel = kernel_start_cost(1 if args.quick else 5)
            sweep = bench_sweep(project)
            rows += [
                ("2. kernel start + one cell + shutdown (median)", f"{kernel:.2f} s", "", "info"),
                ("2. one run's work alone: the tracked cell's sum, in this process", f"{sweep['work_s']:.2f} s", "", "info"),
                ("2. sweep of 8 runs, `--workers 1` (best of 2)", f"{sweep['one_s']:.2f} s", "", "info"),
                ("2. sweep of 8 runs, `--workers 2` (best of 2)", f"{sweep['two_s']:.2f} s", "", "info"),
                ("**2. sweep speed-up, 2 workers vs 1**", f"**{sweep['speedup']:.2f}x**", ">= 1.7x",
                 "PASS" if sweep["speedup"] >= 1.7 else "FAIL"),
            ]
    note = (
        f"Machine: {machine()}; 1-minute load average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end (`nbmlops run` imports MLflow and delivers on a second core while the kernel works: other "
        "jobs on the machine take that core from it). "
        f"Code measured: nbmlops {code_measured()}. Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )
    print(note)
    print("| measure | value | target | result |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.no_write and not args.no_sweep:
        write_results(rows, note)


if __name__ == "__main__":
    main()
