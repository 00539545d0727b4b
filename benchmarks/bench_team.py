#!/usr/bin/env python
"""What ``%%track`` costs in team mode: a real ``mlflow server`` on PostgreSQL with artifacts proxied by the
server, against the same runs hand-written with MLflow's fluent API on the same server.

Run from the repository root (needs PostgreSQL's server binaries, e.g. Debian's ``postgresql``, and the ``team``
and ``test`` extras)::

    python benchmarks/bench_team.py            # full size, writes the team section of benchmarks/RESULTS.md
    python benchmarks/bench_team.py --quick    # fewer rounds and cells
    python benchmarks/bench_team.py --no-write # print the table only

What is measured (a private PostgreSQL cluster and an ``mlflow server`` on a database of it, both on 127.0.0.1 in
temporary folders, started by ``tests/team/servers.py``; every child process gets its own project folder and
``IPYTHONDIR``; nothing outside the temporary folders is touched):

T1-T3. End to end, in one process with a real IPython ``InteractiveShell`` (warmed up): rounds of (``--cells``
   trivial ``%%track`` cells, then ``nbmlops.flush()``: until every run is in the server's store) and (the same
   cells hand-written with MLflow's fluent API against the same server, each done when its ``with`` block ends),
   which side goes first alternating; wall and CPU per block (the kernel's process and nbmlops' delivery process);
   T3 is the median of the per-round ratios. Every tracked run is then counted in PostgreSQL itself.
T4-T6. The HTTP requests of one trivial tracked run (flushed after each) and of the hand-written fluent run,
   through a counting loopback proxy (``tests/reliability/faults.py``) in front of the same server; target <= 6
   per tracked run (issue 12's E5, there on sqlite).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_tracking import HANDWRITTEN, TRACKED, _machine, _median, _requests, _run, _shell, _spread, _thread_cpu
from results_file import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
sys.path.insert(0, str(HERE.parent))

HTTP_REQUESTS_TARGET = 6  # requests per trivial tracked run against a tracking server (issue 12, E5)
END_TO_END_TARGET = 0.8  # tracked runs until in the store <= 0.8 x the same runs hand-written (issue 12, E3)
TRACKED_EXPERIMENT = "bench-tracked"
HANDWRITTEN_EXPERIMENT = "bench-handwritten"


# ---------------------------------------------------------------------------------------------
# children (each runs in a fresh process, in a project folder of its own)
# ---------------------------------------------------------------------------------------------


def _project(server: str) -> Path:
    """A fresh project folder as cwd (not a git repository), tracking to ``server``."""
    root = Path(os.environ["NBMLOPS_BENCH_DIR"], "project")
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    os.chdir(root)
    for name in [n for n in os.environ if n.startswith(("NBMLOPS_", "MLFLOW_")) and n != "NBMLOPS_BENCH_DIR"]:
        os.environ.pop(name)
    os.environ["NBMLOPS_TRACKING_URI"] = server
    os.environ["NBMLOPS_EXPERIMENT"] = TRACKED_EXPERIMENT
    return root


def _point_mlflow(shell: Any, uri: str) -> None:
    _run(shell, f"import mlflow\nmlflow.set_tracking_uri({uri!r})\nmlflow.set_experiment({HANDWRITTEN_EXPERIMENT!r})")


def child_end_to_end(server: str, rounds: int, cells: int) -> dict[str, Any]:
    """``cells`` trivial ``%%track`` cells + ``flush`` against ``cells`` hand-written fluent cells, both on
    ``server``, in interleaved rounds; wall and CPU (this process's and the delivery process's) per block."""
    _project(server)
    shell = _shell()
    shell.run_line_magic("load_ext", "nbmlops")
    import nbmlops

    _point_mlflow(shell, server)
    for _ in range(5):  # warm-up: experiments made, environment stored, every path run once
        _run(shell, TRACKED)
        _run(shell, HANDWRITTEN)
    nbmlops.flush(600)

    def tracked_block() -> tuple[float, float]:
        before = _thread_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(cells):
            _run(shell, TRACKED)
        nbmlops.flush(600)
        elapsed = time.perf_counter() - t0
        delivery = _thread_cpu().get("delivery", 0.0) - before.get("delivery", 0.0)
        return elapsed, time.process_time() - c0 + delivery

    def handwritten_block() -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(cells):
            _run(shell, HANDWRITTEN)
        return time.perf_counter() - t0, time.process_time() - c0

    measured: dict[str, list[list[float]]] = {"tracked": [], "handwritten": []}
    for index in range(rounds):
        order = [("tracked", tracked_block), ("handwritten", handwritten_block)]
        for name, block in order if index % 2 == 0 else reversed(order):
            measured[name].append(list(block()))
    return {"rounds": rounds, "cells": cells, "warmup": 5, **measured}


def child_http_count(server: str, runs: int) -> dict[str, Any]:
    """HTTP requests per trivial run through a counting loopback proxy in front of ``server``: a ``%%track``
    cell (flushed after each), then the hand-written fluent version; two warm-up runs of each first."""
    from tests.reliability.faults import FaultProxy

    with FaultProxy(server) as proxy:
        _project(proxy.uri)
        os.environ["NBMLOPS_EXPERIMENT"] = f"{TRACKED_EXPERIMENT}-http"
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
        _point_mlflow(shell, proxy.uri)
        hand_first = [requests(HANDWRITTEN, False) for _ in range(2)]
        handwritten = [requests(HANDWRITTEN, False) for _ in range(runs)]
        forwarded = all(seen.action == "forwarded" for seen in proxy.seen)
    return {"first": first, "tracked": tracked, "hand_first": hand_first, "handwritten": handwritten,
            "all_forwarded": forwarded}


def _spawn(kind: str, extra: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run one child in a fresh interpreter; return what it reported."""
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-team-") as tmp:
        out = Path(tmp, "result.json")
        env = dict(os.environ, IPYTHONDIR=str(Path(tmp, "ipython")), NBMLOPS_BENCH_DIR=tmp, PYTHONHASHSEED="0")
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--out", str(out), *extra]
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True, timeout=timeout)
        return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _in_postgres(backend: str) -> dict[str, int]:
    """The tracked experiment's finished runs with their param and metric, counted in PostgreSQL itself."""
    from tests.team.servers import query

    rows = query(backend, """
        SELECT count(*),
               count(*) FILTER (WHERE r.status = 'FINISHED'
                                AND EXISTS (SELECT 1 FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = 'alpha')
                                AND EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid
                                            AND m.key = 'acc' AND m.value = 1.0))
        FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
        WHERE e.name = %s AND r.lifecycle_stage = 'active'""", TRACKED_EXPERIMENT)
    return {"runs": int(rows[0][0]), "complete": int(rows[0][1])}


def build_report(machine: dict[str, str], args: argparse.Namespace, e2e: dict[str, Any], http: dict[str, Any],
                 stored: dict[str, int], versions: dict[str, str]) -> str:
    cells, rounds = e2e["cells"], e2e["rounds"]
    tracked = [wall for wall, _ in e2e["tracked"]]
    hand = [wall for wall, _ in e2e["handwritten"]]
    ratios = [t / h for t, h in zip(tracked, hand)]
    ratio = _median(ratios)
    per_run = _median([len(run) for run in http["tracked"]])
    expected = e2e["warmup"] + rounds * cells

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    rows = [
        (f"T1. {cells} trivial `%%track` cells + `flush` until every run is in the server's store, wall "
         f"(median, min - max of {rounds} rounds); per run",
         f"{_spread(tracked)}; {ms(_median(tracked) / cells)}", "", "info"),
        (f"T2. the same {cells} cells hand-written with MLflow's fluent API against the same server, wall; per run",
         f"{_spread(hand)}; {ms(_median(hand) / cells)}", "", "info"),
        ("**T3. end to end: T1 / T2, round by round**", f"**{ratio:.2f}** ({min(ratios):.2f} - {max(ratios):.2f})",
         f"<= {END_TO_END_TARGET:.2f} (issue 12's E3)", "PASS" if ratio <= END_TO_END_TARGET else "FAIL"),
        ("T3b. CPU per run: tracked (kernel process + delivery process) vs hand-written",
         f"{ms(_median([c for _, c in e2e['tracked']]) / cells)} vs {ms(_median([c for _, c in e2e['handwritten']]) / cells)}",
         "", "info"),
        ("T3c. tracked runs in PostgreSQL afterwards (active; FINISHED with param `alpha` and metric `acc` = 1.0)",
         f"{stored['runs']}; {stored['complete']} of {expected} expected", f"= {expected}",
         "PASS" if stored["runs"] == stored["complete"] == expected else "FAIL"),
        ("**T4. HTTP requests per trivial `%%track` run, `mlflow server` on PostgreSQL (the cell run again, flushed)**",
         f"**{per_run:g}**; " + _requests(http["tracked"]), f"<= {HTTP_REQUESTS_TARGET}",
         "PASS" if per_run <= HTTP_REQUESTS_TARGET and max(map(len, http["tracked"])) <= HTTP_REQUESTS_TARGET
         else "FAIL"),
        ("T5. the same run hand-written with MLflow's fluent API", _requests(http["handwritten"]), "", "info"),
        ("T6. the session's first two `%%track` runs (experiment looked up, environment stored once)",
         " and ".join(str(len(run)) for run in http["first"]) + " requests", "", "info"),
    ]
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    setup = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}; Python {machine['python']}, mlflow {machine['mlflow']}, "
        f"SQLAlchemy {machine['sqlalchemy']}, psycopg {versions['psycopg']}, PostgreSQL {versions['postgres']}; "
        f"1-minute load average {machine['load']}.  \n"
        f"Code measured: nbmlops {machine['code']}.  \n"
        f"Date: {date}. Size: {'quick' if args.quick else 'full'} ({rounds} end-to-end rounds of {cells} + {cells} "
        f"runs, {len(http['tracked'])} runs counted per HTTP figure).  \n"
        f"Command: `python benchmarks/bench_team.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`."
    )
    method = (
        "Method: a private PostgreSQL cluster (default settings, fsync on) and `mlflow server --backend-store-uri "
        "postgresql://... --artifacts-destination <folder> --serve-artifacts --workers 1` on 127.0.0.1, started "
        "by `tests/team/servers.py`. T1-T3: one process with a real IPython `InteractiveShell`, warmed up (5 cells "
        "of each side); rounds of the trivial cell `alpha = 0.5; acc = alpha * 2` under `%%track` then "
        "`nbmlops.flush()`, against the same cell plus `with mlflow.start_run(): mlflow.log_param(...); "
        "mlflow.log_metric(...)` on the same server, which side goes first alternating; T3 is the median (and "
        "range) of each round's ratio; afterwards every tracked run is counted in PostgreSQL (T3c). T4-T6: a "
        "counting loopback proxy (`tests/reliability/faults.py`) in front of the same server, in the measuring "
        "process; each tracked run flushed before the next (nothing of another run counted), after two warm-up runs; "
        "the hand-written cell after two warm-up runs too. The project folder is not a git repository. Other work "
        "shared the 2 cores while this ran (see the load average), so absolute times move between runs; the "
        "two sides are interleaved so that each ratio compares like with like."
    )
    lines = ["| measure | value | target | result |", "|---|---|---|---|",
             *(f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows)]
    return "\n".join([
        "## Team mode: `%%track` against an `mlflow server` on PostgreSQL (`benchmarks/bench_team.py`)",
        "",
        "Reproduce: `python benchmarks/bench_team.py` (`--quick` for a smaller run; needs PostgreSQL's server "
        "binaries and the `team` and `test` extras).",
        "",
        setup,
        "",
        method,
        "",
        *lines,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and cells")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument("--rounds", type=int, help="end-to-end rounds (default 5, quick 3)")
    parser.add_argument("--cells", type=int, help="runs per end-to-end block (default 100, quick 30)")
    parser.add_argument("--child", choices=["end-to-end", "http-count"], help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    rounds, cells = args.rounds or (3 if args.quick else 5), args.cells or (30 if args.quick else 100)
    if args.child:
        if args.child == "end-to-end":
            result = child_end_to_end(args.server, rounds, cells)
        else:
            result = child_http_count(args.server, rounds)
        Path(args.out).write_text(json.dumps(result))
        return 0

    from importlib import metadata

    from tests.reliability.faults import clean_env
    from tests.team.servers import MissingPostgres, mlflow_team_server, new_database, postgres, query

    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-team-") as tmp, contextlib.ExitStack() as servers:
        try:
            pg_uri = servers.enter_context(postgres(Path(tmp, "postgres")))
        except MissingPostgres as missing:
            print(f"bench_team: {missing}", file=sys.stderr)
            return 2
        backend = new_database(pg_uri, "bench")
        folder = Path(tmp, "server")
        server = servers.enter_context(mlflow_team_server(folder, backend, str(folder / "artifacts"), env=clean_env()))
        print(f"end to end: {rounds} rounds of {cells} tracked + {cells} hand-written runs ...", file=sys.stderr)
        e2e = _spawn("end-to-end", ["--server", server.uri, "--rounds", str(rounds), "--cells", str(cells)])
        print("HTTP requests per run through a counting proxy ...", file=sys.stderr)
        http = _spawn("http-count", ["--server", server.uri, "--rounds", "5"])
        stored = _in_postgres(backend)
        versions = {"psycopg": metadata.version("psycopg"), "postgres": str(query(backend, "SHOW server_version")[0][0])}
    machine["load"] += f" at start, {os.getloadavg()[0]:.2f} at end"
    section = build_report(machine, args, e2e, http, stored, versions)
    print(section)
    if not args.no_write:
        write_section("team", section)
        print(f"\nwrote the team section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
