#!/usr/bin/env python
"""Serving: ``nbmlops serve NAME@champion`` (request logging on) against ``mlflow models serve -m
models:/NAME@champion`` on the same model and machine, under the same load, side by side in one run.

Run from the repository root::

    python benchmarks/bench_serve.py             # full size, writes the serve section of benchmarks/RESULTS.md
    python benchmarks/bench_serve.py --quick     # fewer rounds and requests (CI smoke)
    python benchmarks/bench_serve.py --no-write  # print the table only
    python benchmarks/bench_serve.py --profile   # also a py-spy profile of nbmlops' request path under load

What is measured (everything in a temporary project folder with its own sqlite store; both servers on 127.0.0.1,
each a process group of its own, started the way a user types them, with the same number of workers):

1. The model: a scikit-learn pipeline (``StandardScaler`` + ``LogisticRegression``) trained on scikit-learn's breast
   cancer data set (30 numeric features), registered twice with ``nbmlops.register`` (versions 1 and 2, another
   ``C``); ``champion`` points at version 1.
2. Latency and throughput: a bounded asynchronous client (aiohttp, ``--concurrency`` requests in flight, a fixed
   count of requests per block, keep-alive connections) posts MLflow's ``dataframe_split`` JSON to
   ``/invocations``: a single row, and a small batch (``--batch`` rows). Both servers are warmed up first. Blocks
   run as interleaved pairs (MLflow, nbmlops, then nbmlops, MLflow in the next round, ...); for each block the
   p50/p95/p99 of the client-side latency and the throughput (requests / wall time of the block); each figure is
   the median of the rounds, with the range; the ratios are taken round by round (nbmlops / MLflow within the same
   round) and their median is held to the targets: p50 <= 1.10x and throughput >= 0.9x MLflow's. Beside them, the
   server's CPU per request (all its processes and threads, from /proc), per block and over all the rounds.
3. An alias swap under that load: a single-row block against nbmlops during which ``champion`` is moved to version
   2 (what a promotion does in the registry); the block goes on until version 2 has answered for a while. Counted:
   failed requests (target 0: any status but 200, or no answer), the versions that answered (the
   ``nbmlops-model-version`` header), the time from the alias move to the first answer of version 2.
4. What the traffic log delivered: every request sent to nbmlops carries its own ``x-request-id``; the rows of the
   traffic datasets in the store (``nbmlops.serving.traffic.read_traffic``) are matched against them: while the
   server still runs (how long after the load the last row arrives), then after a graceful stop (the serving run
   FINISHED, its ``requests`` metric).

``--profile`` (also done when a ratio target is missed, unless ``--no-profile``): one more single-row block against
each server while ``py-spy record`` samples its processes; the table lists the busy time per request and where the
samples fall, by thread and by frame.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as _dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_tracking import _machine, _median
from results_file import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BIN = Path(sys.executable).parent
MODEL = "bench-serve-classifier"
P50_TARGET = 1.10  # nbmlops p50 <= 1.10 x MLflow's (issue 16)
THROUGHPUT_TARGET = 0.9  # nbmlops throughput >= 0.9 x MLflow's (issue 16)
SIDES = ("mlflow", "nbmlops")
LABELS = {"mlflow": "`mlflow models serve`", "nbmlops": "`nbmlops serve`"}


# ---------------------------------------------------------------------------------------------
# the model and the project
# ---------------------------------------------------------------------------------------------


def make_project(root: Path) -> dict[str, str]:
    """A project folder with its own store; the environment both servers get (nothing of the caller's
    ``NBMLOPS_*``/``MLFLOW_*`` settings leaks in)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench-serve'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    store = f"sqlite:///{root / '.nbmlops' / 'mlflow.db'}"
    env.update(NBMLOPS_TRACKING_URI=store, MLFLOW_TRACKING_URI=store, NBMLOPS_EXPERIMENT="bench-serve/train",
               NBMLOPS_ARTIFACT_ROOT=str(root / ".nbmlops" / "artifacts"), PYTHONUNBUFFERED="1",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as in an activated venv: `mlflow` runs `uvicorn`
    return env


def training_frame() -> tuple[Any, Any]:
    """scikit-learn's breast cancer data: 569 rows, 30 numeric features, a binary label."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.data, data.target


def register_versions(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """Register two versions of the pipeline with nbmlops (in this process, the project as cwd); ``champion`` ->
    version 1. Returns what the report needs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = training_frame()
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0)
    os.chdir(root)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("NBMLOPS_", "MLFLOW_"))})
    import nbmlops
    from nbmlops.tracking.session import close_session

    versions = []
    for C in (1.0, 0.1):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
        with nbmlops.track(f"train C={C}"):
            model.fit(X_train, y_train)
            info = nbmlops.register(model, MODEL, training_data=X_train, evaluation_data=X_test, timeout=300)
        versions.append(int(info.version))
    nbmlops.flush(300)
    close_session()
    set_alias("champion", versions[0], env)
    return {"versions": versions, "columns": list(X.columns), "rows": X_test.to_numpy().tolist()}


def set_alias(alias: str, version: int, env: dict[str, str]) -> None:
    """Point ``alias`` at ``version`` in the registry, as a promotion does."""
    from mlflow import MlflowClient

    MlflowClient(env["MLFLOW_TRACKING_URI"]).set_registered_model_alias(MODEL, alias, str(version))


# ---------------------------------------------------------------------------------------------
# the servers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    side: str
    command: list[str]
    url: str
    log: Path
    process: subprocess.Popen | None = None
    started_s: float = 0.0

    def start(self, cwd: Path, env: dict[str, str], timeout: float = 300) -> None:
        t0 = time.perf_counter()
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(self.command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise SystemExit(f"{self.side} server did not start: {' '.join(self.command)}\n"
                                 f"{self.log.read_text()[-4000:]}")
            time.sleep(0.25)
        self.started_s = time.perf_counter() - t0

    def pids(self) -> list[int]:
        """The server's processes: its own and every descendant (uvicorn workers)."""
        assert self.process is not None
        found, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
                found += [int(c) for c in children]
                frontier += [int(c) for c in children]
        return found

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server's processes have used so far."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, grace: float = 180) -> float:
        """SIGTERM to the server's main process (what ``kill`` or a supervisor sends), wait for it to exit;
        returns the seconds it took. The group is SIGKILLed after ``grace``."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        t0 = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.perf_counter() - t0
        self.kill()
        return elapsed

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)


def servers(root: Path, workers: int) -> dict[str, Server]:
    model_uri = f"models:/{MODEL}@champion"
    ports = {side: free_port() for side in SIDES}
    return {
        "mlflow": Server("mlflow", [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                                    "-h", "127.0.0.1", "-p", str(ports["mlflow"]), "-w", str(workers)],
                         f"http://127.0.0.1:{ports['mlflow']}", root / "mlflow-serve.log"),
        "nbmlops": Server("nbmlops", [str(BIN / "nbmlops"), "serve", f"{MODEL}@champion", "--host", "127.0.0.1",
                                      "--port", str(ports["nbmlops"]), "--workers", str(workers),
                                      "--log-requests", "1.0"],
                          f"http://127.0.0.1:{ports['nbmlops']}", root / "nbmlops-serve.log"),
    }


# ---------------------------------------------------------------------------------------------
# the load generator
# ---------------------------------------------------------------------------------------------


def bodies(columns: list[str], rows: list[list[float]], batch: int, count: int = 64) -> list[bytes]:
    """``count`` distinct ``dataframe_split`` bodies of ``batch`` rows each, taken in turn from ``rows``."""
    out = []
    for i in range(count):
        chosen = [rows[(i * batch + j) % len(rows)] for j in range(batch)]
        out.append(json.dumps({"dataframe_split": {"columns": columns, "data": chosen}}).encode())
    return out


@dataclass
class Block:
    """One block of requests against one server: what the client saw."""

    side: str
    kind: str
    rows_per_request: int
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    #: CPU seconds of the server's processes during the block (user + system, every thread)
    cpu_s: float = 0.0
    failed: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    versions: collections.Counter = field(default_factory=collections.Counter)
    ids: list[str] = field(default_factory=list)
    #: (seconds since the block started, version) of each answer, in completion order
    answers: list[tuple[float, int | None]] = field(default_factory=list)
    #: request id -> client latency (s)
    by_id: dict[str, float] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]

    @property
    def sent(self) -> int:
        return len(self.ids)

    @property
    def throughput(self) -> float:
        return self.sent / self.wall_s


async def _load(url: str, payloads: list[bytes], block: Block, concurrency: int, count: int,
                keep_going: Any = None, clock: float | None = None) -> None:
    """Send ``count`` requests (and more while ``keep_going(block)``), ``concurrency`` at a time; answers are
    timed from ``clock`` (a ``perf_counter`` value; default: now)."""
    import aiohttp

    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=120)
    next_index = 0
    t0 = time.perf_counter()
    clock = t0 if clock is None else clock

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < count or (keep_going is not None and keep_going(block)):
            index = next_index
            next_index += 1
            request_id = uuid.uuid4().hex
            block.ids.append(request_id)
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/invocations", data=payloads[index % len(payloads)],
                                        headers={**headers, "x-request-id": request_id}) as reply:
                    await reply.read()
                    status = reply.status
                    version = reply.headers.get("nbmlops-model-version")
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                status, version = None, None
                block.errors[type(error).__name__] += 1
            end = time.perf_counter()
            block.latencies.append(end - start)
            block.by_id[request_id] = end - start
            block.answers.append((end - clock, int(version) if version else None))
            if status != 200:
                block.failed += 1
                if status is not None:
                    block.errors[f"HTTP {status}"] += 1
            if version:
                block.versions[int(version)] += 1

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    block.wall_s = time.perf_counter() - t0


def run_block(server: Server, kind: str, payloads: list[bytes], rows: int, concurrency: int, count: int,
              keep_going: Any = None) -> Block:
    block = Block(server.side, kind, rows)
    cpu = server.cpu_s()
    asyncio.run(_load(server.url, payloads, block, concurrency, count, keep_going))
    block.cpu_s = server.cpu_s() - cpu
    return block


# ---------------------------------------------------------------------------------------------
# the alias swap under load
# ---------------------------------------------------------------------------------------------


def swap_block(server: Server, payloads: list[bytes], concurrency: int, count: int, env: dict[str, str],
               old: int, new: int, linger_s: float = 3.0, give_up_s: float = 120.0) -> dict[str, Any]:
    """Single-row load on ``server``; once a quarter of ``count`` has been sent, ``champion`` moves from ``old`` to
    ``new``. The block goes on until ``new`` has answered for ``linger_s`` seconds (or ``give_up_s`` after the
    move), and at least ``count`` requests. Times are seconds since the block started."""
    block = Block(server.side, "swap", 1)
    moved: dict[str, float] = {}
    clock = time.perf_counter()

    def promote() -> None:
        while len(block.ids) < count // 4:
            time.sleep(0.01)
        set_alias("champion", new, env)
        moved["at"] = time.perf_counter() - clock

    def first_new() -> float | None:
        if "first_new" not in moved:
            found = next((t for t, v in block.answers if v == new), None)
            if found is None:
                return None
            moved["first_new"] = found
        return moved["first_new"]

    def keep_going(_: Block) -> bool:
        if "at" not in moved:
            return True
        now = time.perf_counter() - clock
        seen = first_new()
        return now - moved["at"] < give_up_s if seen is None else now - seen < linger_s

    mover = threading.Thread(target=promote, daemon=True)
    mover.start()
    asyncio.run(_load(server.url, payloads, block, concurrency, count, keep_going, clock))
    mover.join(timeout=60)
    seen = first_new()
    old_after_new = sum(1 for t, v in block.answers if v == old and seen is not None and t > seen)
    return {"block": block, "moved_at": moved.get("at"), "first_new_at": seen, "old_after_new": old_after_new,
            "old": old, "new": new}


# ---------------------------------------------------------------------------------------------
# what the traffic log delivered
# ---------------------------------------------------------------------------------------------


def delivered(expected: collections.Counter) -> dict[str, Any]:
    """Compare the rows of every serving run of the model in the store (``read_traffic``, in the project this
    process works in) with what was sent: ``expected`` maps request id -> rows it carried; also the app's own
    latency of each request (its ``latency_ms``), by id."""
    from nbmlops.serving.traffic import read_traffic

    traffic = read_traffic(MODEL)
    frame, runs = traffic.requests, list(traffic.runs)
    if len(frame) == 0:
        return {"rows": 0, "ids": 0, "missing": len(expected), "extra": 0, "wrong_rows": 0, "runs": runs,
                "latency_ms": {}}
    counts = collections.Counter(frame["request_id"].astype(str))
    missing = sum(1 for rid in expected if rid not in counts)
    extra = sum(1 for rid in counts if rid not in expected)
    wrong = sum(1 for rid, n in expected.items() if rid in counts and counts[rid] != n)
    first = frame.drop_duplicates("request_id")
    return {"rows": len(frame), "ids": len(counts), "missing": missing, "extra": extra, "wrong_rows": wrong,
            "runs": runs, "latency_ms": dict(zip(first["request_id"].astype(str), first["latency_ms"].astype(float)))}


def wait_delivered(expected: collections.Counter, timeout: float) -> tuple[dict[str, Any], float]:
    """Poll the store until every request sent is there (or ``timeout``); the last look, and when it was."""
    t0 = time.perf_counter()
    while True:
        seen = delivered(expected)
        if seen["missing"] == 0 or time.perf_counter() - t0 > timeout:
            return seen, time.perf_counter() - t0
        time.sleep(1.0)


def serving_run(env: dict[str, str], run_id: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id)
    return {"status": run.info.status, "metrics": dict(run.data.metrics),
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith("nbmlops.serve.")}}


# ---------------------------------------------------------------------------------------------
# the profile
# ---------------------------------------------------------------------------------------------


#: py-spy's sampling rate (samples per second and thread)
SAMPLE_RATE = 250


def profile_block(server: Server, payloads: list[bytes], concurrency: int, count: int, out: Path,
                  settle_s: float = 10.0) -> dict[str, Any]:
    """A single-row block against ``server`` while ``py-spy record`` samples each of its processes (raw collapsed
    stacks, busy threads only), and ``settle_s`` seconds after it (so that the delivery of the block's traffic
    log, every 5 s, is counted too); returns the share of the samples per frame of interest and per thread, and
    the busy time per request."""
    recorders = []
    for pid in server.pids():
        path = out / f"pyspy-{pid}.txt"
        recorders.append((path, subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--output", str(path),
             "--rate", str(SAMPLE_RATE), "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.0)
    block = run_block(server, "profile", payloads, 1, concurrency, count)
    time.sleep(settle_s)
    for _, recorder in recorders:
        recorder.send_signal(signal.SIGINT)
    for _, recorder in recorders:
        with contextlib.suppress(subprocess.TimeoutExpired):
            recorder.wait(timeout=60)
    stacks: collections.Counter = collections.Counter()
    for path, _ in recorders:
        if path.exists():
            for line in path.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if stack and n.isdigit():
                    stacks[stack] += int(n)
    summary = summarise_stacks(stacks)
    return {"block": block, "busy_ms": summary["active"] / SAMPLE_RATE / block.sent * 1000, **summary}


#: frames whose inclusive share of the samples the profile reports (a substring of py-spy's ``name (path:line)``)
PROFILE_FRAMES = {
    "invocations (mlflow/pyfunc/scoring_server": "MLflow's `invocations` (parse, predict, serialize)",
    "_parse_json_data (": "MLflow: parse the JSON body",
    "_enforce_schema (": "MLflow: enforce the signature",
    "PyFuncModel.predict (": "pyfunc predict",
    "nbmlops/serving/app.py": "nbmlops app.py",
    "nbmlops/serving/traffic_log.py": "nbmlops traffic_log.py",
    "nbmlops/serving/recorder.py": "nbmlops recorder.py",
    "nbmlops/serving/metrics.py": "nbmlops metrics.py",
    "nbmlops/serving/follower.py": "nbmlops follower.py",
    "nbmlops/serving/shadow.py": "nbmlops shadow.py",
    "nbmlops/backend/": "nbmlops backend",
    "nbmlops/redact.py": "nbmlops redact.py",
    "nbmlops/journal.py": "nbmlops journal.py",
    "prometheus_client/": "prometheus_client",
    "uvicorn/": "uvicorn",
    "starlette/": "starlette",
    "fastapi/": "fastapi",
}


def summarise_stacks(stacks: collections.Counter) -> dict[str, Any]:
    total = sum(stacks.values())
    active = sum(n for s, n in stacks.items() if not _idle(s))
    shares: dict[str, float] = {}
    for needle in PROFILE_FRAMES:
        n = sum(count for stack, count in stacks.items() if not _idle(stack) and needle in stack)
        shares[needle] = n / active if active else 0.0
    leaves: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    for stack, n in stacks.items():
        if not _idle(stack):
            leaves[_short(stack.split(";")[-1])] += n
            threads[_thread(stack.split(";")[0])] += n
    return {"samples": total, "active": active, "shares": shares,
            "threads": [(name, n / active) for name, n in threads.most_common()] if active else [],
            "top_leaves": [(leaf, n / active) for leaf, n in leaves.most_common(8)] if active else []}


def _thread(frame: str) -> str:
    """py-spy's ``thread (123): name`` -> what the thread does."""
    name = frame.partition("): ")[2] or frame
    if name.startswith("asyncio_") or name.startswith("AnyIO worker"):
        return "request threads (MLflow's invocations, in the thread pool)"
    if name == "MainThread":
        return "event loop (uvicorn, ASGI, nbmlops app)"
    return re.sub(r"[-_]?\d+$", "", name)


def _idle(stack: str) -> bool:
    """A sample of a thread waiting (selector, lock, sleep, queue): not time spent on the request path."""
    leaf = stack.split(";")[-1]
    return any(word in leaf for word in ("select (", "poll (", "wait (", "sleep", "_worker (", "acquire",
                                         "epoll", "run_forever", "get (queue.py"))


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')').split(':')[0]).name})" if where else name


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _range(values: list[float], fmt: Any) -> str:
    return f"{fmt(_median(values))} ({fmt(min(values))} - {fmt(max(values))})"


def _ratio(values: list[float]) -> str:
    return f"{_median(values):.2f} ({min(values):.2f} - {max(values):.2f})"


def block_rows(label: str, rounds: list[dict[str, Block]]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for side in SIDES:
        blocks = [r[side] for r in rounds]
        latency = "; ".join(
            f"p{q} {_range([b.percentile(q) for b in blocks], _ms)}" for q in (50, 95, 99))
        rows.append((f"{label}: {LABELS[side]}, client latency (median of {len(blocks)} rounds, range)", latency,
                     "", "info"))
        rows.append((f"{label}: {LABELS[side]}, throughput", _range([b.throughput for b in blocks],
                                                                  lambda v: f"{v:,.0f} req/s"), "", "info"))
    cpu = {side: [r[side].cpu_s / r[side].sent for r in rounds] for side in SIDES}
    rows.append((f"{label}: the server's CPU per request (every process and thread, from /proc): MLflow; nbmlops; "
                 "nbmlops / MLflow round by round", f"{_range(cpu['mlflow'], _ms)}; {_range(cpu['nbmlops'], _ms)}; "
                 f"{_ratio([n / m for n, m in zip(cpu['nbmlops'], cpu['mlflow'])])}", "", "info"))
    p50 = [r["nbmlops"].percentile(50) / r["mlflow"].percentile(50) for r in rounds]
    p99 = [r["nbmlops"].percentile(99) / r["mlflow"].percentile(99) for r in rounds]
    tput = [r["nbmlops"].throughput / r["mlflow"].throughput for r in rounds]
    failed = sum(r[side].failed for r in rounds for side in SIDES)
    rows += [
        (f"**{label}: p50 latency, nbmlops / MLflow, round by round**", f"**{_ratio(p50)}**", f"<= {P50_TARGET:.2f}",
         "PASS" if _median(p50) <= P50_TARGET else "FAIL"),
        (f"**{label}: throughput, nbmlops / MLflow, round by round**", f"**{_ratio(tput)}**",
         f">= {THROUGHPUT_TARGET:.2f}", "PASS" if _median(tput) >= THROUGHPUT_TARGET else "FAIL"),
        (f"{label}: p99 latency, nbmlops / MLflow, round by round", _ratio(p99), "", "info"),
        (f"{label}: failed requests, both sides", str(failed), "0", "PASS" if failed == 0 else "FAIL"),
    ]
    return rows


def cpu_row(result: dict[str, Any]) -> tuple[str, str, str, str]:
    """The server's CPU over every measured round and the 10 s after them (the delivery of their traffic included),
    per request."""
    sent = {side: sum(r[kind][side].sent for r in result["rounds"] for kind in r) for side in SIDES}
    per = {side: result["cpu"][side] / sent[side] for side in SIDES}
    return ("5. the server's CPU over all the rounds and the 10 s after them (every process and thread, the "
            "delivery of the traffic log included), per request: MLflow; nbmlops; nbmlops / MLflow",
            f"{_ms(per['mlflow'])}; {_ms(per['nbmlops'])}; {per['nbmlops'] / per['mlflow']:.2f}", "", "info")


def inside_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """For nbmlops' blocks: the client's latency against the app's own (``latency_ms`` of the traffic rows, from
    the request's start in the app to its last byte handed to uvicorn): what the HTTP layer and the sockets add."""
    inside = result["delivered_final"]["latency_ms"]
    rows = []
    for kind, label in (("sequential", "one at a time"), ("single", "under load")):
        client, app = [], []
        for measured in result["rounds"]:
            for rid, seconds in measured[kind]["nbmlops"].by_id.items():
                if rid in inside:
                    client.append(seconds * 1000)
                    app.append(inside[rid])
        if client:
            c, a = _median(client), _median(app)
            rows.append((f"5. nbmlops, one row {label}: p50 of the client's latency vs the app's own `latency_ms` "
                         "(traffic rows of the same requests); the difference is outside the app (HTTP, sockets, "
                         "queueing)", f"{c:.2f} ms vs {a:.2f} ms: {c - a:.2f} ms outside", "", "info"))
    return rows


def profile_rows(profiles: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Where the time of a request goes on each side, from py-spy."""
    rows = [("7. profile (py-spy) of one single-row block under load on each side, and the 10 s after it (the "
             "delivery of its traffic log included): busy time of the server's threads per request: MLflow; nbmlops",
             "; ".join(f"{profiles[side]['busy_ms']:.2f} ms" for side in SIDES), "", "info")]
    for side in SIDES:
        prof = profiles[side]
        shares = "; ".join(f"{PROFILE_FRAMES[k]} {v:.0%}" for k, v in prof["shares"].items() if v >= 0.01)
        threads = "; ".join(f"{name} {share:.0%}" for name, share in prof["threads"])
        leaves = "; ".join(f"{leaf} {share:.0%}" for leaf, share in prof["top_leaves"])
        rows += [
            (f"7. {LABELS[side]}: share of the busy samples ({prof['active']:,}) by thread", threads or "none", "",
             "info"),
            (f"7. {LABELS[side]}: by frame (inclusive)", shares or "none", "", "info"),
            (f"7. {LABELS[side]}: by innermost frame", leaves or "none", "", "info"),
        ]
    return rows


def build_report(machine: dict[str, str], args: argparse.Namespace, result: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for kind, label in (("single", f"1. one row, {args.concurrency} in flight"),
                        ("batch", f"2. batch of {args.batch} rows, {args.concurrency} in flight"),
                        ("sequential", "3. one row, one request at a time")):
        rows += block_rows(label, [r[kind] for r in result["rounds"]])
    swap = result["swap"]
    block: Block = swap["block"]
    versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(block.versions.items()))
    first = f"{swap['first_new_at'] - swap['moved_at']:.2f} s" if swap["first_new_at"] is not None else "never"
    rows += [
        (f"**4. alias swap under load (v{swap['old']} -> v{swap['new']}): failed requests of {block.sent:,}**",
         f"**{block.failed}**" + (f" ({dict(block.errors)})" if block.errors else ""), "0",
         "PASS" if block.failed == 0 and swap["first_new_at"] is not None else "FAIL"),
        ("4. versions that answered (`nbmlops-model-version`)", versions or "none", "", "info"),
        ("4. from the alias move to the first answer of the new version (the follower polls every 2 s); answers of "
         "the old version after it", f"{first}; {swap['old_after_new']}", "", "info"),
        ("4. client latency during the swap block: p50; p99; max",
         f"{_ms(block.percentile(50))}; {_ms(block.percentile(99))}; {_ms(max(block.latencies))}", "", "info"),
    ]
    live, final = result["delivered_live"], result["delivered_final"]
    sent_requests, sent_rows = result["sent_requests"], result["sent_rows"]
    run = result["run"]
    rows += [
        (f"5. traffic rows in the store while the server runs, {result['live_wait_s']:.1f} s after the load ended "
         "(requests; rows)", f"{live['ids']:,} of {sent_requests:,}; {live['rows']:,} of {sent_rows:,}", "", "info"),
        ("**5. traffic rows in the store after a graceful stop: every request sent, each with its rows, nothing "
         "else**", f"**{final['ids']:,} of {sent_requests:,} requests; {final['rows']:,} of {sent_rows:,} rows**; "
         f"missing {final['missing']}, extra {final['extra']}, wrong row count {final['wrong_rows']}",
         "= sent", "PASS" if final["missing"] == final["extra"] == final["wrong_rows"] == 0
         and final["rows"] == sent_rows else "FAIL"),
        ("5. the serving run after the stop: status; `requests` metric; time to stop", f"{run.get('status')}; "
         f"{run.get('metrics', {}).get('requests', 'none')}; {result['stop_s']:.1f} s", "FINISHED", "PASS"
         if run.get("status") == "FINISHED" else "FAIL"),
        *inside_rows(result),
        cpu_row(result),
        ("6. start to first `/ping` answer: MLflow; nbmlops", f"{result['started']['mlflow']:.1f} s; "
         f"{result['started']['nbmlops']:.1f} s", "", "info"),
    ]
    if result.get("profile"):
        rows += profile_rows(result["profile"])
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    quick = "quick" if args.quick else "full"
    setup = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}; Python {machine['python']}, mlflow {machine['mlflow']}, "
        f"{result['versions']}; 1-minute load average {machine['load']}.  \n"
        f"Code measured: nbmlops {machine['code']}.  \n"
        f"Date: {date}. Size: {quick} ({args.rounds} rounds; per block {args.requests:,} single-row requests or "
        f"{args.batch_requests:,} batches of {args.batch} rows; {args.concurrency} in flight; {args.workers} "
        f"worker(s) per server).  \n"
        f"Command: `python benchmarks/bench_serve.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`."
    )
    method = (
        "Method: one temporary project with its own sqlite store; a scikit-learn pipeline (`StandardScaler` + "
        "`LogisticRegression`) on scikit-learn's breast cancer data (30 numeric features) registered twice with "
        "`nbmlops.register`, `champion` -> version 1. Both servers on 127.0.0.1, each its own process group, "
        "started as a user types them (nbmlops first: MLflow's `models:/` download on a local store writes its "
        "`registered_model_meta` file into the stored model folder, which nbmlops' SHA-256 check then refuses) "
        f"with {args.workers} worker(s): `mlflow models serve -m "
        "models:/NAME@champion --env-manager local -w N` and `nbmlops serve NAME@champion --workers N "
        "--log-requests 1.0` (every request logged with its body and response). The client (aiohttp, one process, "
        f"{args.concurrency} requests in flight on keep-alive connections) posts `dataframe_split` JSON to "
        "`/invocations`, each request with its own `x-request-id`; both servers are warmed up first. Blocks are "
        "interleaved pairs whose order alternates from round to round; latency is measured by the client from "
        "sending to the whole answer; throughput is requests / wall time of the block; ratios are taken within "
        "each round (both sides under the same conditions) and their median is held to the targets; the server's "
        "CPU is read from /proc (user + system time of all its processes) around each block, and over all the "
        "rounds plus the 10 s after them, which holds the delivery of their traffic log. 3: single rows "
        "one request at a time (no queueing: the latency of one request). 4: during "
        "a single-row block against nbmlops, once a quarter of it has been sent, `champion` moves to version 2 "
        "(`MlflowClient.set_registered_model_alias`, what a promotion does); the block goes on until version 2 has "
        "answered for 3 s. (`mlflow models serve` resolves the alias once, at start, so it has no counterpart.) "
        "5: every request id sent to nbmlops (warm-up and swap included) is looked up in the traffic datasets "
        "(`nbmlops.serving.traffic.read_traffic`): first while the server still runs, then after SIGTERM ends "
        "it (graceful stop: the recorder delivers the rest). Other jobs share the 2 cores while this runs, so "
        "absolute figures move between runs; the pairs are interleaved so that each ratio compares like with like."
    )
    lines = ["| measure | value | target | result |", "|---|---|---|---|",
             *(f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows)]
    return "\n".join([
        "## Serving: `nbmlops serve` against `mlflow models serve` (`benchmarks/bench_serve.py`)",
        "",
        "Reproduce: `python benchmarks/bench_serve.py` (`--quick` for a smaller run, `--profile` for a py-spy "
        "profile of `nbmlops serve` under load, `--workers N`).",
        "",
        setup,
        "",
        method,
        "",
        *lines,
    ])


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    env = make_project(root)
    print("registering two versions of the model ...", file=sys.stderr)
    model = register_versions(root, env)
    old, new = model["versions"]
    single = bodies(model["columns"], model["rows"], 1)
    batch = bodies(model["columns"], model["rows"], args.batch)
    kinds = {"single": (single, 1, args.requests, args.concurrency),
             "batch": (batch, args.batch, args.batch_requests, args.concurrency),
             "sequential": (single, 1, max(50, args.requests // 4), 1)}
    started: dict[str, float] = {}
    sent: collections.Counter = collections.Counter()  # request id -> rows it carried (nbmlops side)

    def record(block: Block) -> Block:
        if block.side == "nbmlops":
            for rid in block.ids:
                sent[rid] = block.rows_per_request
        return block

    pair = servers(root, args.workers)
    try:
        # nbmlops first: `mlflow models serve -m models:/...` on a local artifact store writes MLflow's
        # `registered_model_meta` file into the stored model folder, which nbmlops' SHA-256 check then refuses
        for side in ("nbmlops", "mlflow"):
            print(f"starting {side} ...", file=sys.stderr)
            pair[side].start(root, env)
            started[side] = pair[side].started_s
        for side in SIDES:  # warm-up: every path (both payload kinds) run on each side
            for payloads, rows, count, concurrency in kinds.values():
                record(run_block(pair[side], "warmup", payloads, rows, concurrency, max(50, count // 10)))
        time.sleep(10)  # the warm-up's traffic delivered before the CPU count starts
        cpu_before = {side: pair[side].cpu_s() for side in SIDES}
        rounds = []
        for index in range(args.rounds):
            order = SIDES if index % 2 == 0 else tuple(reversed(SIDES))
            measured: dict[str, dict[str, Block]] = {}
            for kind, (payloads, rows, count, concurrency) in kinds.items():
                measured[kind] = {}
                for side in order:
                    measured[kind][side] = record(run_block(pair[side], kind, payloads, rows, concurrency, count))
            print(f"round {index + 1}/{args.rounds}: " + ", ".join(
                f"{kind} p50 {b['mlflow'].percentile(50) * 1000:.2f}/{b['nbmlops'].percentile(50) * 1000:.2f} ms"
                for kind, b in measured.items()), file=sys.stderr)
            rounds.append(measured)
        time.sleep(10)  # the rounds' traffic delivered (the recorder delivers every 5 s)
        cpu = {side: pair[side].cpu_s() - cpu_before[side] for side in SIDES}
        missed = any(
            _median([r[kind]["nbmlops"].percentile(50) / r[kind]["mlflow"].percentile(50) for r in rounds]) > P50_TARGET
            or _median([r[kind]["nbmlops"].throughput / r[kind]["mlflow"].throughput for r in rounds])
            < THROUGHPUT_TARGET for kind in kinds)
        profile = None
        if args.profile or (missed and not args.no_profile):
            print("profiling nbmlops serve under load ...", file=sys.stderr)
            profile = {side: profile_block(pair[side], single, args.concurrency, args.requests, root)
                       for side in SIDES}
            record(profile["nbmlops"]["block"])
        print("alias swap under load ...", file=sys.stderr)
        swap = swap_block(pair["nbmlops"], single, args.concurrency, args.requests, env, old, new)
        record(swap["block"])
        print("waiting for the traffic log to reach the store ...", file=sys.stderr)
        live, live_wait = wait_delivered(sent, timeout=args.delivery_timeout)
        stop_s = pair["nbmlops"].stop()
        final = delivered(sent)
        run = serving_run(env, final["runs"][0]) if len(final["runs"]) == 1 else {"status": f"runs: {final['runs']}"}
    finally:
        for server in pair.values():
            server.kill()
    from importlib import metadata

    return {
        "rounds": rounds, "swap": swap, "profile": profile, "started": started, "cpu": cpu,
        "delivered_live": live, "live_wait_s": live_wait, "delivered_final": final, "stop_s": stop_s, "run": run,
        "sent_requests": len(sent), "sent_rows": sum(sent.values()),
        "versions": ", ".join(f"{name} {metadata.version(name)}"
                              for name in ("scikit-learn", "uvicorn", "fastapi", "aiohttp", "pandas")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests (CI smoke)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of nbmlops serve under load")
    parser.add_argument("--no-profile", action="store_true",
                        help="no profile, even when a ratio target is missed (CI smoke)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--requests", type=int, help="single-row requests per block (default 2000, quick 200)")
    parser.add_argument("--batch-requests", type=int, help="batch requests per block (default 1000, quick 100)")
    parser.add_argument("--batch", type=int, default=16, help="rows per batch request (default 16)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="server workers, both sides (default 1)")
    parser.add_argument("--delivery-timeout", type=float, default=120.0,
                        help="seconds to wait for the traffic log to reach the store while serving (default 120)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project (logs, store)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.requests = args.requests or (200 if args.quick else 2000)
    args.batch_requests = args.batch_requests or (100 if args.quick else 1000)

    machine = _machine()
    tmp = tempfile.mkdtemp(prefix="nbmlops-bench-serve-")
    try:
        result = measure(args, Path(tmp, "project"))
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    machine["load"] += f" at start, {os.getloadavg()[0]:.2f} at end"
    section = build_report(machine, args, result)
    print(section)
    if not args.no_write:
        write_section("serve", section)
        print(f"\nwrote the serve section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
