#!/usr/bin/env python
"""How much ``%%track`` holds up the user, and what loading nbmlops costs.

Run from the repository root::

    python benchmarks/bench_tracking.py            # full size, writes benchmarks/RESULTS.md
    python benchmarks/bench_tracking.py --quick    # fewer iterations and processes
    python benchmarks/bench_tracking.py --no-write # print the table only
    python benchmarks/bench_tracking.py --profile  # also profile tracked cells (needs pyinstrument)

What is measured (every number in a fresh temporary project directory with its own sqlite store;
every child process gets its own ``IPYTHONDIR``, so nothing outside the temp dirs is touched):

1. Blocking overhead per cell, in one process with a real IPython ``InteractiveShell`` holding a
   big-ish user namespace (200 variables incl. a 50 MB numpy array), warmed up:

   (a) ``alpha = 0.5; acc = alpha * 2`` untracked,
   (b) the same under ``%%track``,
   (c) the same capture written by hand with MLflow's fluent API on the same sqlite file.

   Added blocking = median(b) - median(a), compared with median(c) - median(a); the target is
   <= 1/5. (b) is measured twice: with ``nbmlops.flush()`` between cells, outside the timed region
   (the writer is idle while the cell runs), and back to back without flushing (the background
   writer competes for the GIL and the two cores, as in "Run All").
2. Start-up: ``%load_ext nbmlops`` timed inside fresh processes (IPython already imported),
   target <= 0.2 s; the first ``%%track`` cell of a fresh process on a store that does not exist
   yet, against ``import mlflow`` + first sqlite store initialisation in other fresh processes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- tracking:start -->", "<!-- tracking:end -->"

UNTRACKED = "alpha = 0.5\nacc = alpha * 2"
TRACKED = "%%track\n" + UNTRACKED
HANDWRITTEN = (
    UNTRACKED
    + "\nwith mlflow.start_run():\n"
    + "    mlflow.log_param('alpha', alpha)\n"
    + "    mlflow.log_metric('acc', acc)"
)
FILLER = """# filler cell {i}
import math
values = [math.sqrt(k) for k in range(10)]
total = sum(values)
def helper(x, scale=2.0):
    return x * scale + total
result_{i} = helper(3.0)
"""

OVERHEAD_TARGET = 0.2  # added blocking of %%track <= 1/5 of the hand-written MLflow version
LOAD_EXT_TARGET_S = 0.2
FIRST_CELL_TARGET = 0.2  # first tracked cell <= 1/5 of import mlflow + store initialisation


# ---------------------------------------------------------------------------------------------
# children (each runs in a fresh process)
# ---------------------------------------------------------------------------------------------


def _project() -> Path:
    """A fresh project dir as cwd, tracking to a store inside it that does not exist yet."""
    root = Path(os.environ.get("NBMLOPS_BENCH_DIR") or tempfile.mkdtemp(prefix="nbmlops-bench-"), "project")
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    os.chdir(root)
    store = root / "store" / "mlflow.db"
    os.environ["NBMLOPS_TRACKING_URI"] = f"sqlite:///{store}"
    os.environ["NBMLOPS_ARTIFACT_ROOT"] = str(root / "store" / "artifacts")
    os.environ["NBMLOPS_EXPERIMENT"] = "bench-tracked"
    for name in ("MLFLOW_TRACKING_URI", "NBMLOPS_CAPTURE", "NBMLOPS_UI_URL", "MLFLOW_ENABLE_ASYNC_LOGGING"):
        os.environ.pop(name, None)
    return root


def _shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def _run(shell: Any, code: str) -> float:
    """Seconds ``shell.run_cell(code)`` blocks; raise if the cell failed."""
    t0 = time.perf_counter()
    result = shell.run_cell(code, store_history=True)
    elapsed = time.perf_counter() - t0
    if not result.success:
        raise RuntimeError(f"cell failed: {result.error_before_exec or result.error_in_exec!r}\n{code}")
    return elapsed


def child_load_ext() -> dict[str, Any]:
    _project()
    shell = _shell()
    t0 = time.perf_counter()
    shell.run_line_magic("load_ext", "nbmlops")
    elapsed = time.perf_counter() - t0
    return {"load_ext_s": elapsed, "mlflow_imported": "mlflow" in sys.modules}


def child_first_cell() -> dict[str, Any]:
    root = _project()
    shell = _shell()
    shell.run_line_magic("load_ext", "nbmlops")
    import nbmlops

    store = root / "store" / "mlflow.db"
    assert not store.exists()
    blocking = _run(shell, TRACKED)
    mlflow_imported_after_cell = "mlflow" in sys.modules
    t0 = time.perf_counter()
    nbmlops.flush(120)
    delivered = time.perf_counter() - t0
    from mlflow import MlflowClient

    client = MlflowClient(os.environ["NBMLOPS_TRACKING_URI"])
    experiment = client.get_experiment_by_name("bench-tracked")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    ok = len(runs) == 1 and runs[0].data.params.get("alpha") == "0.5" and runs[0].data.metrics.get("acc") == 1.0
    return {
        "first_cell_s": blocking,
        "delivered_after_s": delivered,
        "mlflow_in_sys_modules_after_cell": mlflow_imported_after_cell,
        "run_recorded": ok,
    }


def child_mlflow_init() -> dict[str, Any]:
    root = _project()
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    (root / "store").mkdir()
    t0 = time.perf_counter()
    import mlflow

    t1 = time.perf_counter()
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().search_experiments(max_results=1)
    t2 = time.perf_counter()
    mlflow.set_experiment("bench-handwritten")
    with mlflow.start_run():
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("acc", 1.0)
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "store_init_s": t2 - t1, "first_run_s": t3 - t2}


def _big_namespace() -> dict[str, Any]:
    """200 user variables, one of them a 50 MB array: what a working notebook holds."""
    import numpy as np

    rng = np.random.default_rng(0)
    ns: dict[str, Any] = {"big_array": rng.random(50 * 2**20 // 8)}  # 50 MiB of float64
    for i in range(199):
        kind = i % 5
        if kind == 0:
            ns[f"number_{i}"] = i * 1.5
        elif kind == 1:
            ns[f"text_{i}"] = f"some text value number {i} " * 4
        elif kind == 2:
            ns[f"items_{i}"] = list(range(100))
        elif kind == 3:
            ns[f"config_{i}"] = {"lr": 0.01 * i, "layers": [64, 32], "name": f"model-{i}"}
        else:
            ns[f"small_array_{i}"] = rng.random(1000)
    return ns


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def child_inprocess(iterations: int, history_points: list[int], profile: bool) -> dict[str, Any]:
    root = _project()
    store_uri = os.environ["NBMLOPS_TRACKING_URI"]
    shell = _shell()
    shell.push(_big_namespace())
    shell.run_line_magic("load_ext", "nbmlops")
    import nbmlops
    from nbmlops.tracking.session import get_session

    # the hand-written version: same sqlite file, its own experiment
    _run(shell, f"import mlflow\nmlflow.set_tracking_uri({store_uri!r})\nmlflow.set_experiment('bench-handwritten')")
    for _ in range(5):  # warm-up: store initialised, mlflow imported, every path run once
        _run(shell, UNTRACKED)
        _run(shell, TRACKED)
        nbmlops.flush(120)
        _run(shell, HANDWRITTEN)
    nbmlops.flush(120)
    history_start = len(shell.history_manager.input_hist_raw)

    # phase 1: a, b (flush outside the timed region), c, interleaved so drift hits all three alike
    untracked, tracked, handwritten, delivery, history = [], [], [], [], []
    for _ in range(iterations):
        untracked.append(_run(shell, UNTRACKED))
        history.append(len(shell.history_manager.input_hist_raw))
        tracked.append(_run(shell, TRACKED))
        t0 = time.perf_counter()
        nbmlops.flush(120)
        delivery.append(time.perf_counter() - t0)
        handwritten.append(_run(shell, HANDWRITTEN))

    # phase 2: tracked cells back to back, the writer never waited for
    session = get_session()
    nbmlops.flush(120)
    tracked_noflush, backlog = [], []
    t_block = time.perf_counter()
    for _ in range(iterations):
        tracked_noflush.append(_run(shell, TRACKED))
        backlog.append(session.pending)
    t_cells = time.perf_counter()
    nbmlops.flush(600)
    t_drained = time.perf_counter()

    # phase 3: how the per-cell cost grows with the kernel's history (each tracked cell logs it all)
    scaling = []
    filler = 0
    for point in history_points:
        while len(shell.history_manager.input_hist_raw) < point:
            _run(shell, FILLER.format(i=filler))
            filler += 1
        nbmlops.flush(600)
        times, waits = [], []
        for _ in range(10):
            times.append(_run(shell, TRACKED))
            t0 = time.perf_counter()
            nbmlops.flush(600)
            waits.append(time.perf_counter() - t0)
        scaling.append(
            {
                "history": len(shell.history_manager.input_hist_raw),
                "tracked_s": _median(times),
                "delivery_s": _median(waits),
            }
        )

    profile_text = None
    if profile:
        from pyinstrument import Profiler

        nbmlops.flush(600)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(20):
            shell.run_cell(TRACKED, store_history=True)
            profiler.stop()
            nbmlops.flush(600)
            profiler.start()
        profiler.stop()
        profile_text = profiler.output_text(unicode=False, color=False, show_all=False)

    return {
        "iterations": iterations,
        "history_start": history_start,
        "history_end_phase1": history[-1],
        "untracked": untracked,
        "tracked": tracked,
        "handwritten": handwritten,
        "delivery": delivery,
        "tracked_noflush": tracked_noflush,
        "backlog": backlog,
        "noflush_cells_s": t_cells - t_block,
        "noflush_drain_s": t_drained - t_cells,
        "scaling": scaling,
        "profile": profile_text,
        "store": str(root),
    }


CHILDREN = {"load-ext": child_load_ext, "first-cell": child_first_cell, "mlflow-init": child_mlflow_init}


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def _spawn(kind: str, extra: list[str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run one child in a fresh interpreter; return what it reported."""
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-") as tmp:
        out = Path(tmp, "result.json")
        env = dict(os.environ, IPYTHONDIR=str(Path(tmp, "ipython")), NBMLOPS_BENCH_DIR=tmp, PYTHONHASHSEED="0")
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--out", str(out), *(extra or [])]
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True, timeout=timeout)
        return json.loads(out.read_text())


def _machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    fs = "unknown"
    with contextlib.suppress(OSError):
        tmp = os.path.realpath(tempfile.gettempdir())
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and (tmp == parts[1] or tmp.startswith(parts[1].rstrip("/") + "/")) and len(parts[1]) >= len(best):
                best, fs = parts[1], f"{parts[2]} on {parts[1]}"
    from importlib import metadata

    versions = {name: metadata.version(name) for name in ("mlflow", "ipython", "sqlalchemy")}
    return {
        "nproc": str(cores),
        "cpu": model,
        "python": platform.python_version(),
        "tmp_fs": f"{tempfile.gettempdir()} ({fs})",
        **versions,
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_report(machine: dict[str, str], args: argparse.Namespace, inproc: dict[str, Any],
                 load_ext: list[dict[str, Any]], first: list[dict[str, Any]], init: list[dict[str, Any]]) -> str:
    a, b, c = inproc["untracked"], inproc["tracked"], inproc["handwritten"]
    nf = inproc["tracked_noflush"]
    ma, mb, mc, mnf = _median(a), _median(b), _median(c), _median(nf)
    added_b, added_c, added_nf = mb - ma, mc - ma, mnf - ma
    ratio_b, ratio_nf = added_b / added_c, added_nf / added_c
    n = inproc["iterations"]
    third = max(3, n // 3)
    load = [r["load_ext_s"] for r in load_ext]
    first_cell = [r["first_cell_s"] for r in first]
    delivered = [r["delivered_after_s"] for r in first]
    imp = [r["import_s"] for r in init]
    sinit = [r["store_init_s"] for r in init]
    first_run = [r["first_run_s"] for r in init]
    cold = _median(imp) + _median(sinit)
    ratio_first = _median(first_cell) / cold

    rows = [
        ("1a. untracked cell, blocking", f"{_ms(ma)} (p90 {_ms(_p90(a))})", "", "info"),
        ("1c. hand-written MLflow cell, blocking", f"{_ms(mc)} (p90 {_ms(_p90(c))}); added {_ms(added_c)}", "", "info"),
        ("1b. `%%track` cell, flush between cells, blocking", f"{_ms(mb)} (p90 {_ms(_p90(b))}); added {_ms(added_b)}", "", "info"),
        ("1b. added blocking / hand-written added (flushed)", f"{ratio_b:.2f}", f"<= {OVERHEAD_TARGET:.2f}", _verdict(ratio_b <= OVERHEAD_TARGET)),
        ("1b'. `%%track` back to back (no flush), blocking", f"{_ms(mnf)} (p90 {_ms(_p90(nf))}); added {_ms(added_nf)}", "", "info"),
        ("1b'. added blocking / hand-written added (no flush)", f"{ratio_nf:.2f}", f"<= {OVERHEAD_TARGET:.2f}", _verdict(ratio_nf <= OVERHEAD_TARGET)),
        ("1b'. no-flush block: backlog after last cell; drain time", f"{inproc['backlog'][-1]} records; {_s(inproc['noflush_drain_s'])}", "", "info"),
        ("1b'. no-flush block: %d cells + drain, wall" % n, f"{_s(inproc['noflush_cells_s'] + inproc['noflush_drain_s'])} (vs {n} hand-written: {_s(sum(c[:n]))})", "", "info"),
        ("1d. background delivery per tracked cell (flush wait)", f"{_ms(_median(inproc['delivery']))} (p90 {_ms(_p90(inproc['delivery']))})", "", "info"),
        ("1e. `%%track` blocking, first vs last third of phase 1", f"{_ms(_median(b[:third]))} -> {_ms(_median(b[-third:]))} (history {inproc['history_start']} -> {inproc['history_end_phase1']} cells)", "", "info"),
    ]
    for point in inproc["scaling"]:
        rows.append(
            (f"1f. `%%track` blocking at kernel history {point['history']} cells",
             f"{_ms(point['tracked_s'])}; added {_ms(point['tracked_s'] - ma)} = {(point['tracked_s'] - ma) / added_c:.2f} x hand-written; delivery {_ms(point['delivery_s'])}",
             f"<= {OVERHEAD_TARGET:.2f} x", _verdict((point["tracked_s"] - ma) / added_c <= OVERHEAD_TARGET))
        )
    rows += [
        (f"2a. `%load_ext nbmlops`, fresh process (median of {len(load)})", f"{_ms(_median(load))} (max {_ms(max(load))}); mlflow imported: {any(r['mlflow_imported'] for r in load_ext)}", f"<= {_ms(LOAD_EXT_TARGET_S)}", _verdict(_median(load) <= LOAD_EXT_TARGET_S)),
        (f"2b. `import mlflow`, fresh process (median of {len(imp)})", _s(_median(imp)), "", "info"),
        (f"2c. first sqlite store initialisation, fresh process (median of {len(sinit)})", _s(_median(sinit)), "", "info"),
        ("2d. first hand-written MLflow run after that (set_experiment + run)", _ms(_median(first_run)), "", "info"),
        (f"2e. first `%%track` cell, fresh process + fresh store, blocking (median of {len(first_cell)})", f"{_ms(_median(first_cell))} (max {_ms(max(first_cell))}) = {ratio_first:.3f} x (2b + 2c = {_s(cold)})", f"<= {FIRST_CELL_TARGET:.2f} x (2b + 2c)", _verdict(ratio_first <= FIRST_CELL_TARGET)),
        ("2f. first tracked run in the store after the cell (flush wait)", f"{_s(_median(delivered))}; run recorded correctly: {all(r['run_recorded'] for r in first)}", "", "info"),
    ]
    lines = [
        "| measure | value | target | result |",
        "|---|---|---|---|",
        *(f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows),
    ]
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    setup = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}; Python {machine['python']}, mlflow {machine['mlflow']}, "
        f"IPython {machine['ipython']}, SQLAlchemy {machine['sqlalchemy']}; temp dir {machine['tmp_fs']}.  \n"
        f"Date: {date}. Size: {'quick' if args.quick else 'full'} ({n} iterations per variant, "
        f"{len(load)} fresh processes per start-up figure)."
    )
    method = (
        "Method: one process, real IPython `InteractiveShell`, 200 user variables incl. a 50 MB numpy array, "
        "warmed up (5 rounds of each variant). Cells: (a) `alpha = 0.5; acc = alpha * 2`; (b) the same under "
        "`%%track`; (c) the same plus `with mlflow.start_run(): mlflow.log_param(...); mlflow.log_metric(...)` "
        "on the same sqlite file. a, b, c interleaved; `nbmlops.flush()` after each (b), outside the timed region. "
        "(b') the same tracked cell back to back without flushing. \"added\" = median minus median(a). "
        "1f: history filled with 7-line cells, median of 10 tracked cells (flushed) at each size. "
        "Start-up numbers are timed inside fresh interpreters (IPython already imported; fresh store; "
        "own IPYTHONDIR)."
    )
    return "\n".join([
        "## Tracking overhead (`benchmarks/bench_tracking.py`)",
        "",
        "Reproduce: `python benchmarks/bench_tracking.py` (add `--quick` for a smaller run, `--profile` for a "
        "pyinstrument profile of tracked cells).",
        "",
        setup,
        "",
        method,
        "",
        *lines,
    ])


def write_results(section: str) -> None:
    """Replace (or add) only the part of RESULTS.md between the tracking markers."""
    block = f"{START}\n{section}\n{END}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START in text and END in text and text.index(START) < text.index(END):
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and processes")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument("--profile", action="store_true", help="also profile 20 tracked cells with pyinstrument")
    parser.add_argument("--iterations", type=int, help="iterations per in-process variant (default 100, quick 15)")
    parser.add_argument("--processes", type=int, help="fresh processes per start-up figure (default 7, quick 3)")
    parser.add_argument("--child", choices=[*CHILDREN, "inprocess"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--history", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "inprocess":
            points = [int(p) for p in args.history.split(",") if p]
            result = child_inprocess(args.iterations, points, args.profile)
        else:
            result = CHILDREN[args.child]()
        Path(args.out).write_text(json.dumps(result))
        return 0

    iterations = args.iterations or (15 if args.quick else 100)
    processes = args.processes or (3 if args.quick else 7)
    history = [300] if args.quick else [500, 1000]
    machine = _machine()

    print(f"start-up: {processes} fresh processes each for %load_ext, first %%track cell, import mlflow ...", file=sys.stderr)
    load_ext = [_spawn("load-ext") for _ in range(processes)]
    first = [_spawn("first-cell") for _ in range(processes)]
    init = [_spawn("mlflow-init") for _ in range(processes)]
    print(f"in-process: {iterations} iterations per variant ...", file=sys.stderr)
    extra = ["--iterations", str(iterations), "--history", ",".join(map(str, history))]
    if args.profile:
        extra.append("--profile")
    inproc = _spawn("inprocess", extra)

    section = build_report(machine, args, inproc, load_ext, first, init)
    print(section)
    if inproc.get("profile"):
        print("\n--- pyinstrument profile of 20 tracked cells (main thread, flushed between cells) ---", file=sys.stderr)
        print(inproc["profile"], file=sys.stderr)
    if not args.no_write:
        write_results(section)
        print(f"\nwrote the tracking section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
