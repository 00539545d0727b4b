"""Budgets against a misbehaving tracking server: how long each answer takes.

    python benchmarks/bench_budgets.py [--rounds 5] [--budget 10] [--flush-timeout 10] [--quick] [--no-write]

A real `mlflow server` on 127.0.0.1 behind a loopback proxy (`tests/reliability/faults.py`) that
  (a) accepts every connection and never answers (`/health` included),
  (b) answers `/health` but holds every API call (the probe says the server is up, its calls hang),
  (c) refuses connections (the proxy's port, closed),
  (d) answers 503 to every request.
For each, the time until the answer of
  1. `nbmlops status` (the command, in a process of its own), journals waiting;
  2. `nbmlops sync` with 3 journals waiting (written by 3 processes that ended during an outage of that URI);
  3. `%nbmlops status` in a real IPython `InteractiveShell` (its own process, the extension loaded, right after a
     `%%track` cell): the magic call alone is timed;
  4. `nbmlops.flush(timeout=F)` right after a tracked run (its own process): the call alone is timed.
Each round also runs all four against the healthy server (the same proxy, no fault), interleaved with the faults;
their order rotates from round to round.

Budgets (README, "Nothing lost" / Budgets, and `nbmlops/config.py`): every call has `call_timeout` (default
`DEFAULT_CALL_TIMEOUT`, 10 s), and `nbmlops sync`, `nbmlops status` and `%nbmlops status` "end within about one
budget however the server misbehaves"; `flush(timeout)` gives up after its timeout. Targets (median of the rounds):
  - 1, 2: the time beyond `nbmlops status` against the healthy server in the same round (starting Python,
    importing MLflow, one answered call: no part of any budget) <= 1.25 x call_timeout;
  - 3: the call itself <= 1.25 x call_timeout;
  - 4: the call itself <= 1.25 x F.
The margin, a quarter of the budget, is what "about one budget" allows on a loaded 2-core machine.

Results go to the `budgets` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from results_file import write_section

from nbmlops.config import DEFAULT_CALL_TIMEOUT

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.conftest import mlflow_server  # noqa: E402  (the repository's root is on the path only now)
from tests.reliability.faults import Fault, FaultProxy, clean_env  # noqa: E402

#: the faults, in the order of the table
FAULTS = {
    "never answers": "accepts every connection and never answers, /health included",
    "API hangs": "answers /health, holds every API call",
    "refused": "refuses connections (the proxy's port, closed)",
    "503": "answers 503 to every request",
}
HEALTHY = "healthy"
ANSWERS = ("nbmlops status", "nbmlops sync", "%nbmlops status", "nbmlops.flush(timeout)")
JOURNALS = 3
MARGIN = 0.25
EXPERIMENT = "bench-budgets"

ONE_RUN = textwrap.dedent("""
    import nbmlops
    with nbmlops.track("budget", params={"a": 1}):
        nbmlops.log_metric("m", 1.0)
""")

MAGIC_STATUS = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmlops")
    shell.run_cell_magic("track", "--name budget", "x = 1\\nscore = x * 2")
    shown = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(shown):
        shell.run_line_magic("nbmlops", "status")
    seconds = time.monotonic() - start
    print(json.dumps({"seconds": seconds, "answer": shown.getvalue()}), file=sys.__stdout__, flush=True)
""")

FLUSH = textwrap.dedent("""
    import json, sys, time
    import nbmlops
    from nbmlops.exceptions import FlushTimeoutError
    with nbmlops.track("budget", params={"a": 1}):
        nbmlops.log_metric("m", 1.0)
    start = time.monotonic()
    try:
        nbmlops.flush(timeout=float(sys.argv[1]))
        answer = "delivered"
    except FlushTimeoutError as exc:
        answer = f"FlushTimeoutError: {exc}"
    print(json.dumps({"seconds": time.monotonic() - start, "answer": answer}), flush=True)
""")


@dataclass
class Timing:
    """One answer: how long it took (seconds), and what it was (one line)."""

    seconds: float
    answer: str
    answered: bool = True


@dataclass
class Results:
    """Every timing, by (answer, fault), in round order."""

    rounds: int
    budget: float
    flush_timeout: float
    timings: dict[tuple[str, str], list[Timing]] = field(default_factory=dict)

    def add(self, answer: str, fault: str, timing: Timing) -> None:
        self.timings.setdefault((answer, fault), []).append(timing)
        print(f"  {answer:24} {fault:14} {timing.seconds:7.2f} s  {timing.answer[:110]}", flush=True)


class Bench:
    """The proxy in front of the server, the outage that writes journals, and the children's settings."""

    def __init__(self, server: str, work: Path, budget: float, flush_timeout: float) -> None:
        self.work = work
        self.budget = budget
        self.flush_timeout = flush_timeout
        self.front = FaultProxy(server)
        closed = FaultProxy(server)
        closed.close()
        self.refused_uri = closed.uri
        self.guard = 10 * budget + 180  # a child still running after this gave no answer
        self._count = 0

    def close(self) -> None:
        self.front.close()

    def uri(self, fault: str) -> str:
        """The tracking URI under ``fault`` (the proxy set up for it)."""
        self.front.clear()
        if fault == "never answers":
            self.front.add(Fault("hang", path="/"))
        elif fault == "API hangs":
            self.front.add(Fault("hang", path="/api/"))
        elif fault == "503":
            self.front.add(Fault("status", path="/", status=503))
        elif fault == "refused":
            return self.refused_uri
        return self.front.uri

    def env(self, uri: str) -> dict[str, str]:
        return clean_env(
            NBMLOPS_TRACKING_URI=uri, NBMLOPS_EXPERIMENT=EXPERIMENT, NBMLOPS_CALL_TIMEOUT=f"{self.budget:g}",
            NBMLOPS_FLUSH_TIMEOUT="0", IPYTHONDIR=str(self.work / "ipython"), PYTHONDONTWRITEBYTECODE="1",
        )

    def folder(self, name: str) -> Path:
        """A new project folder (its own journal)."""
        self._count += 1
        path = self.work / f"{self._count:03d}-{name}"
        path.mkdir(parents=True)
        (path / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
        return path

    def journals(self, fault: str) -> Path:
        """A project folder with :data:`JOURNALS` journals that wait: written by processes that ended while the store
        answered 503 (``fault`` refused: could not be reached) at the URI ``fault`` is measured at (a journal's
        records name their store, and sync delivers them there)."""
        project = self.folder("journals")
        env = {**self.env(self.uri("refused" if fault == "refused" else "503")), "NBMLOPS_CALL_TIMEOUT": "0.5"}
        processes = [
            subprocess.Popen([sys.executable, "-c", ONE_RUN], cwd=project, env=env, stderr=subprocess.DEVNULL)
            for _ in range(JOURNALS)
        ]
        for process in processes:
            if process.wait(timeout=600) != 0:
                raise SystemExit("a process writing a journal failed")
        found = list((project / ".nbmlops" / "journal").glob("*.journal"))
        if len(found) != JOURNALS:
            raise SystemExit(f"expected {JOURNALS} journals, found {len(found)}")
        return project

    def copy_of(self, project: Path) -> Path:
        copy = self.folder("copy")
        shutil.copytree(project / ".nbmlops", copy / ".nbmlops")
        return copy

    def cli(self, project: Path, uri: str, command: str) -> Timing:
        """``nbmlops <command>`` in ``project``, timed from start to exit (its answer: the exit code and last line)."""
        start = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "nbmlops.cli", command], cwd=project, env=self.env(uri), capture_output=True,
                text=True, timeout=self.guard,
            )
        except subprocess.TimeoutExpired:
            return Timing(self.guard, f"no answer after {self.guard:g} s", answered=False)
        seconds = time.monotonic() - start
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        said = next((line for line in lines if "answer" in line or "not delivered" in line or "unavailable" in line),
                    lines[-1] if lines else "")
        said = said.replace(f"{project}/.nbmlops/journal/", "")
        return Timing(seconds, f"exit {result.returncode}: {said.strip()}")

    def child(self, script: str, uri: str, *args: str) -> Timing:
        """A Python child that times its own call and prints ``{"seconds", "answer"}``."""
        try:
            result = subprocess.run(
                [sys.executable, "-c", script, *args], cwd=self.folder("child"), env=self.env(uri),
                capture_output=True, text=True, timeout=self.guard,
            )
        except subprocess.TimeoutExpired:
            return Timing(self.guard, f"no answer after {self.guard:g} s", answered=False)
        try:
            found = json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise SystemExit(f"the child failed:\n{result.stdout}\n{result.stderr}") from None
        answer = " / ".join(line.strip() for line in found["answer"].splitlines() if line.strip())
        return Timing(found["seconds"], answer)


def one_round(bench: Bench, results: Results, number: int) -> None:
    """All four answers under every fault and against the healthy server; the order rotates from round to round."""
    order = [HEALTHY, *FAULTS]
    shift = number % len(order)
    order = order[shift:] + order[:shift]
    waiting = {fault: bench.journals(fault) for fault in ("503", "refused")}
    print(f"round {number + 1}: {', '.join(order)}", flush=True)
    for fault in order:
        uri = bench.uri(fault)
        project = bench.copy_of(waiting["refused" if fault == "refused" else "503"])
        results.add(ANSWERS[0], fault, bench.cli(project, uri, "status"))
        results.add(ANSWERS[1], fault, bench.cli(project, uri, "sync"))
        results.add(ANSWERS[2], fault, bench.child(MAGIC_STATUS, uri))
        results.add(ANSWERS[3], fault, bench.child(FLUSH, uri, f"{bench.flush_timeout:g}"))


@dataclass
class Row:
    answer: str
    fault: str
    median: float
    low: float
    high: float
    beyond: float | None
    limit: float
    passed: bool
    said: str


def rows_of(results: Results) -> list[Row]:
    rows = []
    # what a command costs before any budget applies: starting Python, importing MLflow, one answered call
    healthy = [t.seconds for t in results.timings[(ANSWERS[0], HEALTHY)]]
    for answer in ANSWERS:
        for fault in [HEALTHY, *FAULTS]:
            timings = results.timings[(answer, fault)]
            seconds = [t.seconds for t in timings]
            cli = answer.startswith("nbmlops ")
            budget = results.flush_timeout if answer.startswith("nbmlops.flush") else results.budget
            limit = (1 + MARGIN) * budget
            beyond = statistics.median(s - h for s, h in zip(seconds, healthy)) if cli and fault != HEALTHY else None
            measured = beyond if beyond is not None else statistics.median(seconds)
            passed = fault == HEALTHY or (measured <= limit and all(t.answered for t in timings))
            rows.append(Row(answer, fault, statistics.median(seconds), min(seconds), max(seconds), beyond, limit,
                            passed, timings[-1].answer))
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| answer | fault | time to answer, median (min-max) | beyond healthy status, median | target | result | its answer "
        "(last round) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        beyond = f"{row.beyond:.2f} s" if row.beyond is not None else ""
        target = "" if row.fault == HEALTHY else (
            f"{'beyond healthy status' if row.beyond is not None else 'call'} <= {row.limit:.1f} s")
        result = "info" if row.fault == HEALTHY else "PASS" if row.passed else "FAIL"
        said = row.said.replace("|", "/")
        said = said if len(said) <= 140 else said[:137] + "..."
        lines.append(f"| `{row.answer}` | {row.fault} | {row.median:.2f} s ({row.low:.2f}-{row.high:.2f}) | {beyond} "
                     f"| {target} | {result} | {said} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    import mlflow

    return f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, mlflow {mlflow.__version__}"


def code_measured() -> str:
    from nbmlops.tracking.context import git_state

    state = git_state(HERE.parent)  # the whole work tree: other people's edits count as "uncommitted"
    return f"commit {state.commit[:7]}" + (" + uncommitted changes" if state.dirty else "") if state else "unknown"


def section(results: Results, rows: list[Row], command: str, load: tuple[float, float], started: str) -> str:
    faults = "; ".join(f"({chr(97 + i)}) {name}: {what}" for i, (name, what) in enumerate(FAULTS.items()))
    return (
        "## Budgets against a misbehaving server (`benchmarks/bench_budgets.py`)\n\n"
        f"Reproduce: `{command}`.\n\n"
        f"Machine: {machine()}; 1-minute load average {load[0]:.2f} at start, {load[1]:.2f} at end.  \n"
        f"Code measured: nbmlops {code_measured()}.  \n"
        f"Date: {started}. Rounds: {results.rounds}; call_timeout {results.budget:g} s (the default is "
        f"{DEFAULT_CALL_TIMEOUT:g} s), "
        f"flush timeout {results.flush_timeout:g} s.\n\n"
        "Method: a real `mlflow server` on 127.0.0.1 behind a loopback proxy (tests/reliability/faults.py). Faults: "
        f"{faults}. Each round runs, under each fault and against the healthy server (the same proxy, no fault), "
        "in an order that rotates from round to round: `nbmlops status` and then `nbmlops sync` in a project with "
        f"{JOURNALS} journals waiting (written by {JOURNALS} processes that ended during an outage of the URI the "
        "fault is measured at, since records name their store; a fresh copy per fault), each timed from start to exit; `%nbmlops status` in a real IPython `InteractiveShell` right "
        "after a `%%track` cell, and `nbmlops.flush(timeout)` right after a tracked run, each in a process of its "
        "own that times the call alone. Targets (README, \"Nothing lost\": the commands and the magic \"end within "
        "about one budget however the server misbehaves\"; flush gives up after its timeout): the median of the "
        f"rounds <= (1 + {MARGIN:g}) x the budget, the margin being what \"about\" allows on a loaded 2-core "
        "machine; for the two commands, of the time beyond `nbmlops status` against the healthy server in the "
        "same round (median of the per-round differences): what a command costs before any budget applies, "
        "starting Python, importing MLflow and one answered call (a healthy `nbmlops sync` does real work, "
        "delivering the journals, so it is shown for information only). Every fault's answer must also come by itself: a process still running after "
        "10 x budget + 180 s fails its row.\n\n" + table(rows)
    )


@contextlib.contextmanager
def working_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-budgets-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every answer under every fault (default 5)")
    parser.add_argument("--budget", type=float, default=DEFAULT_CALL_TIMEOUT,
                        help=f"call_timeout in seconds (default {DEFAULT_CALL_TIMEOUT:g}, as shipped)")
    parser.add_argument("--flush-timeout", type=float, default=10.0,
                        help="the timeout given to flush (default 10, flush_timeout's default)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, a budget and a flush timeout of 6 s")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.budget, args.flush_timeout = 2, 6.0, 6.0
    command = "python benchmarks/bench_budgets.py" + "".join(
        f" {flag}" for flag, on in (("--quick", args.quick),) if on) + (
        "" if args.quick else f" --rounds {args.rounds} --budget {args.budget:g} --flush-timeout {args.flush_timeout:g}")
    load_at_start = os.getloadavg()[0]
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = Results(args.rounds, args.budget, args.flush_timeout)
    with working_folder() as work, mlflow_server(work / "server", env=clean_env()) as server:
        bench = Bench(server, work, args.budget, args.flush_timeout)
        try:
            for number in range(args.rounds):
                one_round(bench, results, number)
        finally:
            bench.close()
    rows = rows_of(results)
    text = section(results, rows, command, (load_at_start, os.getloadavg()[0]), started)
    print()
    print(text)
    if not args.no_write:
        write_section("budgets", text)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
