#!/usr/bin/env python
"""What ``%%track`` costs end to end against hand-written MLflow, how much it holds up the user, and what
loading nbmlops costs.

Run from the repository root::

    python benchmarks/bench_tracking.py            # full size, writes benchmarks/RESULTS.md
    python benchmarks/bench_tracking.py --quick    # fewer iterations and processes
    python benchmarks/bench_tracking.py --no-write # print the table only
    python benchmarks/bench_tracking.py --profile  # also print a cProfile of tracked cells and of delivery

What is measured (every number in a fresh temporary project directory with its own sqlite store;
every child process gets its own ``IPYTHONDIR``, so nothing outside the temp dirs is touched):

E. The targets, end to end. In one process with a real IPython ``InteractiveShell`` (the namespace of 1.),
   warmed up: rounds of (``--cells``, default 200, trivial ``%%track`` cells, then ``nbmlops.flush()``: until
   every run is in the store) and (the same cells hand-written with MLflow's fluent API on a sqlite file of
   their own, made by MLflow with its defaults as a user without nbmlops has it; and, for comparison, on
   nbmlops' store file), which side goes first rotating; wall and CPU time (every thread: the kernel's and the
   background) per block; target: median of the per-round ratios <= 0.8. Then the HTTP requests one trivial
   tracked run makes to a real ``mlflow server`` (``tests/conftest.py``'s helper) behind a counting loopback
   proxy, beside the hand-written fluent run's; target <= 6.
1. Blocking (info) overhead per cell, in one process with a real IPython ``InteractiveShell`` holding a
   big-ish user namespace (200 variables incl. a 50 MB numpy array), warmed up:

   (a) ``alpha = 0.5; acc = alpha * 2`` untracked,
   (b) the same under ``%%track``,
   (c) the same capture written by hand with MLflow's fluent API on the same sqlite file.

   Added blocking = median(b) - median(a), compared with median(c) - median(a); the target is
   <= 1/5. (b) is measured twice: with ``nbmlops.flush()`` between cells, outside the timed region
   (no backlog: the background threads only have the cell's own records and capture work), and
   back to back without flushing (the writer's backlog competes for the GIL, the two cores and the
   disk, as in "Run All"). Then: how (b) and its delivery grow with the kernel's history, and a
   diagnostic breakdown of (b) (user-thread fsyncs; contention with the background threads).
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

from results_file import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

UNTRACKED = "alpha = 0.5\nacc = alpha * 2"
TRACKED = "%%track\n" + UNTRACKED
HANDWRITTEN = (
    UNTRACKED
    + "\nwith mlflow.start_run():\n"
    + "    mlflow.log_param('alpha', alpha)\n"
    + "    mlflow.log_metric('acc', acc)"
)
COMPUTE = "total = 0\nfor i in range(1_000_000):\n    total += i"
FILLER = """# filler cell {i}
import math
values = [math.sqrt(k) for k in range(10)]
total = sum(values)
def helper(x, scale=2.0):
    return x * scale + total
result_{i} = helper(3.0)
"""

END_TO_END_TARGET = 0.8  # tracked cells until in the store <= 0.8 x the same cells hand-written with MLflow
HTTP_REQUESTS_TARGET = 6  # requests per trivial tracked run against a tracking server
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
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _fsync_probe(directory: Path, count: int = 50) -> float:
    """Median seconds of one 300-byte append + ``os.fdatasync`` here: what a durable journal record costs."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 300)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return _median(times)


def child_breakdown(iterations: int) -> dict[str, Any]:
    """Where a tracked cell's blocking time goes, at a short kernel history.

    Interleaves (a) untracked and two forms of (b) tracked, each followed by a flush: as shipped,
    with the ``os.fdatasync`` calls made on the user's thread counted and timed; and "quiet", a
    diagnostic with the background writer and capture thread held off until the cell has returned
    (no GIL or disk contention during the cell: what is left is the user-thread work itself).
    """
    import concurrent.futures
    import threading

    root = _project()
    shell = _shell()
    shell.push(_big_namespace())
    shell.run_line_magic("load_ext", "nbmlops")
    import nbmlops
    from nbmlops.tracking import delivery
    from nbmlops.tracking import session as session_module

    for _ in range(5):
        _run(shell, UNTRACKED)
        _run(shell, TRACKED)
        nbmlops.flush(120)

    real_fdatasync = os.fdatasync
    main = threading.main_thread()
    counted = {"calls": 0, "seconds": 0.0}
    mode = {"quiet": False}
    deferred: list[tuple[Any, Any, tuple[Any, ...]]] = []
    real_submit, real_background = delivery.Writer.submit, session_module.Session.background

    def fdatasync(fd: int) -> None:
        if threading.current_thread() is not main:
            return real_fdatasync(fd)
        counted["calls"] += 1
        t0 = time.perf_counter()
        real_fdatasync(fd)
        counted["seconds"] += time.perf_counter() - t0
        return None

    held: list[tuple[Any, list[Any], bool]] = []

    def submit(self: Any, items: list[Any], in_journal: bool = True) -> None:  # the writer sees them after the cell
        if not mode["quiet"]:
            return real_submit(self, items, in_journal)
        held.append((self, items, in_journal))
        return None

    def background(self: Any, fn: Any, *args: Any) -> Any:  # hold capture work until the cell returns
        if not mode["quiet"]:
            return real_background(self, fn, *args)
        deferred.append((self, fn, args))
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(None)
        return done

    def tracked_cell(quiet: bool) -> float:
        mode.update(quiet=quiet)
        try:
            return _run(shell, TRACKED)
        finally:
            mode.update(quiet=False)
            for writer, items, in_journal in held:
                real_submit(writer, items, in_journal)
            held.clear()
            for session, fn, args in deferred:
                real_background(session, fn, *args)
            deferred.clear()
            nbmlops.flush(120)

    probe_before = _fsync_probe(root)
    os.fdatasync = fdatasync
    delivery.Writer.submit = submit
    session_module.Session.background = background
    result: dict[str, list[float]] = {k: [] for k in ("untracked", "tracked", "quiet")}
    calls, synced = [], []
    try:
        for _ in range(iterations):
            result["untracked"].append(_run(shell, UNTRACKED))
            counted.update(calls=0, seconds=0.0)
            result["tracked"].append(tracked_cell(quiet=False))
            calls.append(counted["calls"])
            synced.append(counted["seconds"])
            result["quiet"].append(tracked_cell(quiet=True))
    finally:
        os.fdatasync = real_fdatasync
        delivery.Writer.submit = real_submit
        session_module.Session.background = real_background
    return {
        **result,
        "fsync_calls": calls,
        "fsync_seconds": synced,
        "probe": [probe_before, _fsync_probe(root)],
        "history_end": len(shell.history_manager.input_hist_raw),
    }


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
    from IPython.core import magic

    no_var_expand = bool(getattr(shell.find_cell_magic("track"), magic.MAGIC_NO_VAR_EXPAND_ATTR, False))
    t0 = time.perf_counter()
    for _ in range(100):
        shell.var_expand("")
    var_expand_s = (time.perf_counter() - t0) / 100
    probes = [_fsync_probe(root)]

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
    probes.append(_fsync_probe(root))

    # phase 2b: user computation while the writer drains a backlog (the GIL is shared)
    compute_busy, compute_quiet, pending_at_compute = [], [], []
    for _ in range(3):
        for _ in range(20):
            _run(shell, TRACKED)
        pending_at_compute.append(session.pending)
        compute_busy.append(_run(shell, COMPUTE))
        nbmlops.flush(600)
        compute_quiet.append(_run(shell, COMPUTE))

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
        profile_text = _profile_tracked(shell, nbmlops)

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
        "compute_busy": compute_busy,
        "compute_quiet": compute_quiet,
        "pending_at_compute": pending_at_compute,
        "profile": profile_text,
        "probes": probes,
        "no_var_expand": no_var_expand,
        "var_expand_s": var_expand_s,
    }


def child_end_to_end(rounds: int, cells: int, profile: bool) -> dict[str, Any]:
    """End to end: ``cells`` trivial ``%%track`` cells until every run is in the store (``flush``), against
    ``cells`` hand-written MLflow cells (each done when its ``with`` block ends), in interleaved rounds
    (which side goes first alternates). Wall and process CPU time (kernel thread plus background) per side."""
    root = _project()
    store_uri = os.environ["NBMLOPS_TRACKING_URI"]
    shell = _shell()
    shell.push(_big_namespace())
    shell.run_line_magic("load_ext", "nbmlops")
    import nbmlops

    # the hand-written side as a user without nbmlops runs it: its own store file, made by MLflow with its defaults
    # (rollback journal, synchronous=FULL); and, for comparison (info), on nbmlops' own store (WAL, FULL)
    own_uri = f"sqlite:///{root / 'handwritten' / 'mlflow.db'}"
    _run(shell, TRACKED)
    nbmlops.flush(600)  # nbmlops' store made (in the background) before the user's MLflow opens it
    _run(shell, "import mlflow")
    for uri in (own_uri, store_uri):
        _run(shell, f"mlflow.set_tracking_uri({uri!r})\nmlflow.set_experiment('bench-handwritten')")
        for _ in range(5):
            _run(shell, TRACKED)
            _run(shell, HANDWRITTEN)
    nbmlops.flush(600)

    threads: list[dict[str, float]] = []

    def tracked_block() -> tuple[float, float]:
        before = _thread_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(cells):
            _run(shell, TRACKED)
        nbmlops.flush(600)
        elapsed = time.perf_counter() - t0
        after = _thread_cpu()
        used = {name: after[name] - before.get(name, 0.0) for name in after}
        threads.append(used)
        return elapsed, time.process_time() - c0 + used.get("delivery", 0.0)  # the delivery process's CPU too

    def handwritten_block(uri: str) -> tuple[float, float]:
        _run(shell, f"mlflow.set_tracking_uri({uri!r})\nmlflow.set_experiment('bench-handwritten')")
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(cells):
            _run(shell, HANDWRITTEN)
        return time.perf_counter() - t0, time.process_time() - c0

    sides: dict[str, Any] = {
        "tracked": tracked_block,
        "handwritten": lambda: handwritten_block(own_uri),
        "handwritten_wal": lambda: handwritten_block(store_uri),
    }
    measured: dict[str, list[list[float]]] = {name: [] for name in sides}
    writer_profile = None
    names = list(sides)
    for index in range(rounds):
        for name in names[index % 3 :] + names[: index % 3]:  # which side goes first rotates
            measured[name].append(list(sides[name]()))
    tracked, handwritten = measured["tracked"], measured["handwritten"]
    if profile:
        writer_profile = _profile_writer(shell, nbmlops, cells)
    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("bench-tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=50000) if experiment else []
    finished = sum(1 for run in runs if run.info.status == "FINISHED" and run.data.metrics.get("acc") == 1.0)
    expected = 11 + rounds * cells + (cells if profile else 0)
    return {
        "rounds": rounds,
        "cells": cells,
        "tracked": tracked,
        "handwritten": handwritten,
        "handwritten_wal": measured["handwritten_wal"],
        "threads": threads,
        "all_visible": finished == expected,
        "runs_found": finished,
        "profile": writer_profile,
        "root": str(root),
    }


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by this process's threads, by kind (the kernel's, nbmlops' writer and capture
    threads, the rest), and by nbmlops' delivery process (``delivery``), read from ``/proc``."""
    import threading

    from nbmlops.backend.delivery_process import delivery_process

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    main = threading.main_thread().native_id
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick
            tid = int(task.name)
            name = names.get(tid, "")
            kind = (
                "kernel" if tid == main
                else "writer" if name.startswith("nbmlops-writer")
                else "capture" if name.startswith("nbmlops-capture")
                else "other"
            )  # fmt: skip
            used[kind] = used.get(kind, 0.0) + seconds
    child = delivery_process().pid
    with contextlib.suppress(OSError, ValueError, TypeError):
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        used["delivery"] = (int(fields[11]) + int(fields[12])) / tick
    return used


def child_http_count(runs: int) -> dict[str, Any]:
    """HTTP requests per trivial run against a real ``mlflow server`` behind a counting loopback proxy: a
    ``%%track`` cell (flushed after each), then the hand-written fluent version, both warmed up first."""
    sys.path.insert(0, str(HERE.parent))
    from tests.conftest import mlflow_server
    from tests.reliability.faults import FaultProxy

    root = _project()
    os.environ.pop("NBMLOPS_ARTIFACT_ROOT")  # the server keeps the artifacts
    with mlflow_server(root / "server") as server, FaultProxy(server) as proxy:
        os.environ["NBMLOPS_TRACKING_URI"] = proxy.uri
        shell = _shell()
        shell.run_line_magic("load_ext", "nbmlops")
        import nbmlops

        def requests(code: str, flush: bool) -> list[str]:
            before = len(proxy.seen)
            _run(shell, code)
            if flush:
                nbmlops.flush(120)
            return [f"{seen.method} {seen.path.split('?')[0].split('/artifacts/')[0]}" for seen in proxy.seen[before:]]

        first = [requests(TRACKED, True) for _ in range(2)]
        tracked = [requests(TRACKED, True) for _ in range(runs)]
        _run(shell, f"import mlflow\nmlflow.set_tracking_uri({proxy.uri!r})")
        _run(shell, "mlflow.set_experiment('bench-handwritten')")
        hand_first = [requests(HANDWRITTEN, False) for _ in range(2)]
        handwritten = [requests(HANDWRITTEN, False) for _ in range(runs)]
        forwarded = all(seen.action == "forwarded" for seen in proxy.seen)
    return {
        "first": first,
        "tracked": tracked,
        "hand_first": hand_first,
        "handwritten": handwritten,
        "all_forwarded": forwarded,
    }


def _profile_writer(shell: Any, nbmlops: Any, cells: int) -> str:
    """cProfile the writer thread and the capture thread while ``cells`` tracked cells are delivered."""
    import cProfile
    import io
    import pstats

    from nbmlops.tracking import delivery, session

    profiles = {"writer": cProfile.Profile(), "capture": cProfile.Profile()}
    real_deliver = delivery.Deliverer.deliver

    def deliver(self: Any, *args: Any, **kwargs: Any) -> Any:
        profiles["writer"].enable()
        try:
            return real_deliver(self, *args, **kwargs)
        finally:
            profiles["writer"].disable()

    real_background = session.Session.background

    def background(self: Any, fn: Any, *args: Any) -> Any:
        def profiled(*inner: Any) -> Any:
            profiles["capture"].enable()
            try:
                return fn(*inner)
            finally:
                profiles["capture"].disable()

        return real_background(self, profiled, *args)

    delivery.Deliverer.deliver = deliver
    session.Session.background = background
    try:
        for _ in range(cells):
            _run(shell, TRACKED)
        nbmlops.flush(600)
    finally:
        delivery.Deliverer.deliver = real_deliver
        session.Session.background = real_background
    out = io.StringIO()
    for key, stats_for in profiles.items():
        out.write(f"=== {key} thread, {cells} tracked cells\n")
        stats = pstats.Stats(stats_for, stream=out)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


def _profile_tracked(shell: Any, nbmlops: Any, cells: int = 20) -> str:
    """cProfile ``cells`` tracked cells: the user's thread, then the background writer and capture thread."""
    import cProfile
    import functools
    import io
    import pstats

    from nbmlops.tracking import cell, delivery, run

    history = len(shell.history_manager.input_hist_raw)
    nbmlops.flush(600)
    user = cProfile.Profile()
    for _ in range(cells):
        user.enable()
        shell.run_cell(TRACKED, store_history=True)
        user.disable()
        nbmlops.flush(600)

    background = {"writer": cProfile.Profile(), "capture": cProfile.Profile()}
    wall = {"writer": 0.0, "capture": 0.0}
    originals = []

    def wrap(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            background[key].enable()  # profiles the calling (background) thread only
            try:
                return original(*args, **kwargs)
            finally:
                background[key].disable()
                wall[key] += time.perf_counter() - t0

        setattr(owner, name, wrapper)

    wrap(delivery.Deliverer, "deliver", "writer")
    wrap(cell.TrackedCell, "_log_code", "capture")
    wrap(run.Run, "_capture_context", "capture")
    try:
        for _ in range(cells):
            shell.run_cell(TRACKED, store_history=True)
            nbmlops.flush(600)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)

    out = io.StringIO()
    out.write(f"=== user's thread: {cells} tracked cells at a kernel history of {history} cells\n")
    stats = pstats.Stats(user, stream=out)
    stats.sort_stats("cumulative").print_stats(r"nbmlops|fdatasync|posix", 25)
    for key, title in (
        ("capture", "capture thread (code/history, git, environment)"),
        ("writer", "writer thread (hands records to the delivery process, waits for its answer)"),
    ):
        out.write(f"=== {title}: {wall[key] / cells * 1000:.1f} ms wall per cell (profiled)\n")
        stats = pstats.Stats(background[key], stream=out)
        stats.sort_stats("cumulative").print_stats(
            r"nbmlops|mlflow/store/tracking/sqlalchemy_store|fdatasync|fsync", 20
        )
    return out.getvalue()


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
            if (
                len(parts) > 2
                and (tmp == parts[1] or tmp.startswith(parts[1].rstrip("/") + "/"))
                and len(parts[1]) >= len(best)
            ):
                best, fs = parts[1], f"{parts[2]} on {parts[1]}"
    from importlib import metadata

    from nbmlops.tracking.context import git_state

    state = git_state(HERE.parent)
    code = f"commit {state.commit[:7]}" + (" + uncommitted changes" if state.dirty else "") if state else "unknown"
    versions = {name: metadata.version(name) for name in ("mlflow", "ipython", "sqlalchemy")}
    return {
        "code": code,
        "load": f"{os.getloadavg()[0]:.2f}",
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


def _spread(values: list[float], fmt: Any = _s) -> str:
    return f"{fmt(_median(values))} ({fmt(min(values))} - {fmt(max(values))})"


def _requests(runs: list[list[str]]) -> str:
    """The median count of a run's requests, and what the median run sent (kind x count)."""
    counts = [len(run) for run in runs]
    typical = sorted(runs, key=len)[len(runs) // 2]
    kinds: dict[str, int] = {}
    for request in typical:
        kinds[request] = kinds.get(request, 0) + 1
    shown = ", ".join(f"{kind.replace('/api/2.0/', '')} x{n}" if n > 1 else kind.replace("/api/2.0/", "")
                      for kind, n in kinds.items())
    return f"{_median(counts):g} (min {min(counts)}, max {max(counts)}): {shown}"


def _end_to_end_rows(e2e: dict[str, Any], http: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The targets: end-to-end time against hand-written MLflow on sqlite, HTTP requests per run on a server."""
    tracked = [wall for wall, _ in e2e["tracked"]]
    hand = [wall for wall, _ in e2e["handwritten"]]
    hand_wal = [wall for wall, _ in e2e["handwritten_wal"]]
    ratios = [t / h for t, h in zip(tracked, hand)]
    ratios_wal = [t / h for t, h in zip(tracked, hand_wal)]
    cells = e2e["cells"]
    ratio = _median(ratios)
    kinds = ("kernel", "writer", "capture", "other", "delivery")
    cpu = {kind: _median([t.get(kind, 0.0) for t in e2e["threads"]]) / cells for kind in kinds}
    hand_cpu = _median([c for _, c in e2e["handwritten"]]) / cells
    tracked_cpu = _median([c for _, c in e2e["tracked"]]) / cells
    per_run = _median([len(run) for run in http["tracked"]])

    def ms(value: float) -> str:
        return _ms(value)

    return [
        (
            f"E1. {cells} trivial `%%track` cells + `flush` until every run is in the store, wall "
            f"(median, min - max of {e2e['rounds']} rounds)",
            _spread(tracked) + f"; all runs in the store: {e2e['all_visible']}",
            "",
            "info",
        ),
        (
            f"E2. the same {cells} cells hand-written with MLflow's fluent API, wall (their own store file, made by "
            "MLflow with its defaults: rollback journal, synchronous=FULL)",
            _spread(hand),
            "",
            "info",
        ),
        (
            "E2b. the same hand-written cells on nbmlops' store file (WAL, synchronous=FULL for the user's calls), "
            "wall; E1 / E2b round by round",
            _spread(hand_wal) + f"; {_median(ratios_wal):.2f} ({min(ratios_wal):.2f} - {max(ratios_wal):.2f})",
            "",
            "info",
        ),
        (
            "**E3. end to end: E1 / E2, round by round**",
            f"**{ratio:.2f}** ({min(ratios):.2f} - {max(ratios):.2f})",
            f"<= {END_TO_END_TARGET:.2f}",
            _verdict(ratio <= END_TO_END_TARGET),
        ),
        (
            "E4. CPU per cell, the kernel's process and nbmlops' delivery process: tracked (kernel / writer / "
            "capture / other threads / delivery process) vs hand-written",
            f"{ms(tracked_cpu)} ({ms(cpu['kernel'])} / {ms(cpu['writer'])} / {ms(cpu['capture'])} / "
            f"{ms(cpu['other'])} / {ms(cpu['delivery'])}) vs {ms(hand_cpu)}",
            "",
            "info",
        ),
        (
            "**E5. HTTP requests per trivial `%%track` run, real `mlflow server` (the cell run again, flushed)**",
            f"**{per_run:g}**; " + _requests(http["tracked"]),
            f"<= {HTTP_REQUESTS_TARGET}",
            _verdict(per_run <= HTTP_REQUESTS_TARGET and max(len(r) for r in http["tracked"]) <= HTTP_REQUESTS_TARGET),
        ),
        ("E6. the same run hand-written with MLflow's fluent API", _requests(http["handwritten"]), "", "info"),
        (
            "E7. the session's first two `%%track` runs (experiment looked up, environment stored once)",
            " and ".join(str(len(run)) for run in http["first"]) + " requests",
            "",
            "info",
        ),
    ]


def build_report(
    machine: dict[str, str],
    args: argparse.Namespace,
    inproc: dict[str, Any],
    brk: dict[str, Any],
    load_ext: list[dict[str, Any]],
    first: list[dict[str, Any]],
    init: list[dict[str, Any]],
    e2e: dict[str, Any],
    http: dict[str, Any],
) -> str:
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
    ka, kb, kq = _median(brk["untracked"]), _median(brk["tracked"]), _median(brk["quiet"])
    probes = inproc["probes"] + brk["probe"]
    ok = _verdict

    def info(within: bool) -> str:
        return "info: " + ("within" if within else "over")

    rows = [*_end_to_end_rows(e2e, http),
        ("1a. untracked cell, blocking", f"{_ms(ma)} (p90 {_ms(_p90(a))})", "", "info"),
        ("1c. hand-written MLflow cell, blocking", f"{_ms(mc)} (p90 {_ms(_p90(c))}); added {_ms(added_c)}", "", "info"),
        (
            "1b. `%%track` cell, flush between cells, blocking",
            f"{_ms(mb)} (p90 {_ms(_p90(b))}); added {_ms(added_b)}",
            "",
            "info",
        ),
        (
            "**1b. added blocking / hand-written added (flushed)**",
            f"**{ratio_b:.2f}**",
            f"info (blocking bound <= {OVERHEAD_TARGET:.2f})",
            info(ratio_b <= OVERHEAD_TARGET),
        ),
        (
            "1b'. `%%track` back to back, no flush, blocking",
            f"{_ms(mnf)} (p90 {_ms(_p90(nf))}); added {_ms(added_nf)}",
            "",
            "info",
        ),
        (
            "**1b'. added blocking / hand-written added (no flush)**",
            f"**{ratio_nf:.2f}**",
            f"info (blocking bound <= {OVERHEAD_TARGET:.2f})",
            info(ratio_nf <= OVERHEAD_TARGET),
        ),
        (
            "1b'. no-flush block: records waiting after the last cell; time to drain them",
            f"{inproc['backlog'][-1]}; {_s(inproc['noflush_drain_s'])}",
            "",
            "info",
        ),
        (
            f"1b'. no-flush block: {n} tracked cells + drain, wall",
            f"{_s(inproc['noflush_cells_s'] + inproc['noflush_drain_s'])} (vs {n} hand-written cells: {_s(sum(c[:n]))})",
            "",
            "info",
        ),
        (
            "1d. background delivery per tracked cell (flush wait after 1b)",
            f"{_ms(_median(inproc['delivery']))} (p90 {_ms(_p90(inproc['delivery']))})",
            "",
            "info",
        ),
        (
            "1e. `%%track` blocking, first vs last third of 1b",
            f"{_ms(_median(b[:third]))} -> {_ms(_median(b[-third:]))} (kernel history {inproc['history_start']} -> {inproc['history_end_phase1']} cells)",
            "",
            "info",
        ),
    ]
    for point in inproc["scaling"]:
        ratio = (point["tracked_s"] - ma) / added_c
        rows.append(
            (
                f"1f. `%%track` blocking with a kernel history of {point['history']} cells",
                f"{_ms(point['tracked_s'])}; added = {ratio:.2f} x hand-written; delivery {_ms(point['delivery_s'])}",
                f"info (blocking bound <= {OVERHEAD_TARGET:.2f} x)",
                info(ratio <= OVERHEAD_TARGET),
            )
        )
    rows += [
        (
            "1g. untracked pure-Python loop cell (1M iterations): quiet vs while the writer drains a backlog",
            (
                f"{_ms(_median(inproc['compute_quiet']))} vs {_ms(_median(inproc['compute_busy']))} "
                f"({min(inproc['pending_at_compute'])}-{max(inproc['pending_at_compute'])} records waiting)"
            ),
            "",
            "info",
        ),
        (
            f"1h. breakdown ({len(brk['tracked'])} cells, short history): `%%track` blocking; `os.fdatasync` calls on the user's thread per cell; time in them",
            f"{_ms(kb)} (added {_ms(kb - ka)}); {statistics.mode(brk['fsync_calls'])} calls; {_ms(_median(brk['fsync_seconds']))}",
            "",
            "info",
        ),
        (
            "1i. diagnostic: the same with the writer and capture thread held off until the cell returns",
            f"{_ms(kq)} (added {_ms(kq - ka)})",
            "",
            "info",
        ),
        (
            "1j. `fdatasync` of a 300 B append on this disk (probes during the run)",
            " / ".join(_ms(p) for p in probes),
            "",
            "info",
        ),
        (
            "1k. `%%track` has `@no_var_expand`; what `var_expand` would cost per call on this namespace",
            f"{inproc['no_var_expand']}; {inproc['var_expand_s'] * 1e6:.0f} us",
            "",
            "info",
        ),
        (
            f"2a. `%load_ext nbmlops`, fresh process (median of {len(load)})",
            f"{_ms(_median(load))} (max {_ms(max(load))}); imports mlflow: {any(r['mlflow_imported'] for r in load_ext)}",
            f"<= {_ms(LOAD_EXT_TARGET_S)}",
            ok(_median(load) <= LOAD_EXT_TARGET_S),
        ),
        (f"2b. `import mlflow`, fresh process (median of {len(imp)})", _s(_median(imp)), "", "info"),
        (
            f"2c. first sqlite store initialisation, fresh process (median of {len(sinit)})",
            _s(_median(sinit)),
            "",
            "info",
        ),
        ("2d. then the first hand-written run (set_experiment + run)", _ms(_median(first_run)), "", "info"),
        (
            f"2e. first `%%track` cell of a fresh process, store not created yet, blocking (median of {len(first_cell)})",
            f"{_ms(_median(first_cell))} (max {_ms(max(first_cell))}) = {ratio_first:.3f} x (2b + 2c = {_s(cold)})",
            f"<= {FIRST_CELL_TARGET:.2f} x (2b + 2c)",
            ok(ratio_first <= FIRST_CELL_TARGET),
        ),
        (
            "2f. that first run in the store (flush wait after the cell); recorded correctly",
            f"{_s(_median(delivered))}; {all(r['run_recorded'] for r in first)}",
            "",
            "info",
        ),
    ]
    lines = [
        "| measure | value | target | result |",
        "|---|---|---|---|",
        *(f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows),
    ]
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    setup = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}; Python {machine['python']}, mlflow {machine['mlflow']}, "
        f"IPython {machine['ipython']}, SQLAlchemy {machine['sqlalchemy']}; temp dir {machine['tmp_fs']}; "
        f"1-minute load average {machine['load']}.  \n"
        f"Code measured: nbmlops {machine['code']}.  \n"
        f"Date: {date}. Size: {'quick' if args.quick else 'full'} ({e2e['rounds']} end-to-end rounds of "
        f"{e2e['cells']} + {e2e['cells']} cells, {len(http['tracked'])} runs counted per HTTP figure; {n} iterations "
        f"per blocking variant, {len(load)} fresh processes per start-up figure).  \n"
        f"Command: `python benchmarks/bench_tracking.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`."
    )
    method = (
        "Method, E: one process, the namespace below, warmed up (5 cells of each side); rounds of "
        f"{e2e['cells']} `%%track` cells then `nbmlops.flush()` (every run in the store: checked after the last "
        f"round) against {e2e['cells']} hand-written cells on their own store file (made by MLflow with its defaults, "
        "as a user without nbmlops has it: nbmlops never opens it, so neither its WAL mode nor its group commit "
        f"applies) and {e2e['cells']} on nbmlops' store file (E2b), which side goes first rotating; E3 is the "
        "median (and range) of each round's ratio; CPU from the process and, by thread, from /proc, plus that of nbmlops' delivery process (the child that applies the records to MLflow, off the kernel's GIL). E5-E7: a "
        "real `mlflow server` (sqlite, artifacts served by it) behind a counting loopback proxy; the same "
        "trivial cell run again and flushed after each run (so nothing of another run is counted), after two "
        "warm-up runs; the hand-written cell after two warm-up runs too. The project folder is not a git "
        "repository (neither side records git state).  \n"
        "Method, 1-2 (blocking, info): one process, real IPython `InteractiveShell`, 200 user variables incl. a 50 MB numpy array, "
        "warmed up (5 rounds of each variant). Cells: (a) `alpha = 0.5; acc = alpha * 2`; (b) the same under "
        "`%%track`; (c) the same plus `with mlflow.start_run(): mlflow.log_param(...); mlflow.log_metric(...)` "
        "on the same sqlite file. a, b, c interleaved; `nbmlops.flush()` after each (b), outside the timed region. "
        "(b') the same tracked cell back to back without flushing; its baseline is median(a) above. "
        '"added" = median minus median(a). 1f: history filled with 7-line untracked cells, then the median of 10 '
        "tracked cells (flushed). 1g: three bursts of 20 tracked cells without flushing, each followed by a "
        "1M-iteration loop cell timed while the writer drains, and again after a flush. 1h/1i: a separate fresh "
        "process, the two forms interleaved, each followed by a flush. Start-up figures are timed inside fresh "
        "interpreters (IPython already imported; fresh store; own IPYTHONDIR). `fdatasync` latency on this VM "
        "swings between ~0.1 ms and ~4 ms from one minute to the next (1j), so absolute numbers move between runs; "
        "a, b and c are interleaved so that each ratio compares like with like."
    )
    return "\n".join(
        [
            "## Tracking: end to end and overhead (`benchmarks/bench_tracking.py`)",
            "",
            (
                "Reproduce: `python benchmarks/bench_tracking.py` (`--quick` for a smaller run, `--profile` for a "
                "cProfile of tracked cells at the longest history and of the delivery threads end to end)."
            ),
            "",
            setup,
            "",
            method,
            "",
            *lines,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and processes")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument("--profile", action="store_true", help="also cProfile 20 tracked cells at the longest history")
    parser.add_argument("--iterations", type=int, help="iterations per in-process variant (default 100, quick 15)")
    parser.add_argument("--processes", type=int, help="fresh processes per start-up figure (default 7, quick 3)")
    parser.add_argument("--rounds", type=int, help="end-to-end rounds (default 5, quick 3)")
    parser.add_argument("--cells", type=int, help="cells per end-to-end block (default 200, quick 100)")
    parser.add_argument(
        "--child", choices=[*CHILDREN, "inprocess", "breakdown", "end-to-end", "http-count"], help=argparse.SUPPRESS
    )
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--history", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "inprocess":
            points = [int(p) for p in args.history.split(",") if p]
            result = child_inprocess(args.iterations, points, args.profile)
        elif args.child == "breakdown":
            result = child_breakdown(args.iterations)
        elif args.child == "end-to-end":
            result = child_end_to_end(args.rounds, args.cells, args.profile)
        elif args.child == "http-count":
            result = child_http_count(args.rounds)
        else:
            result = CHILDREN[args.child]()
        Path(args.out).write_text(json.dumps(result))
        return 0

    iterations = args.iterations or (15 if args.quick else 100)
    processes = args.processes or (3 if args.quick else 7)
    history = [300] if args.quick else [500, 1000]
    machine = _machine()

    print(
        f"start-up: {processes} fresh processes each for %load_ext, first %%track cell, import mlflow ...",
        file=sys.stderr,
    )
    load_ext = [_spawn("load-ext") for _ in range(processes)]
    first = [_spawn("first-cell") for _ in range(processes)]
    init = [_spawn("mlflow-init") for _ in range(processes)]
    print(f"in-process: {iterations} iterations per variant ...", file=sys.stderr)
    extra = ["--iterations", str(iterations), "--history", ",".join(map(str, history))]
    if args.profile:
        extra.append("--profile")
    inproc = _spawn("inprocess", extra)
    print("breakdown ...", file=sys.stderr)
    brk = _spawn("breakdown", ["--iterations", str(min(iterations, 40))])
    rounds, cells = args.rounds or (3 if args.quick else 5), args.cells or (100 if args.quick else 200)
    print(f"end to end: {rounds} rounds of {cells} tracked + {cells} hand-written cells ...", file=sys.stderr)
    e2e = _spawn("end-to-end", ["--rounds", str(rounds), "--cells", str(cells), *(["--profile"] if args.profile else [])])
    print("HTTP requests per run against an mlflow server ...", file=sys.stderr)
    http = _spawn("http-count", ["--rounds", "5"])

    machine["load"] += f" at start, {os.getloadavg()[0]:.2f} at end"
    section = build_report(machine, args, inproc, brk, load_ext, first, init, e2e, http)
    print(section)
    if inproc.get("profile"):
        print("\n--- cProfile of tracked cells at the longest history (flushed between cells) ---", file=sys.stderr)
        print(inproc["profile"], file=sys.stderr)
    if e2e.get("profile"):
        print("\n--- cProfile of the writer and capture threads, end to end ---", file=sys.stderr)
        print(e2e["profile"], file=sys.stderr)
    if not args.no_write:
        write_section("tracking", section)
        print(f"\nwrote the tracking section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
