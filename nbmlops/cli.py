"""The ``nbmlops`` command.

Exit codes: 0 success; 1 the operation failed (for example the tracking store is unreachable, or
a notebook failed); 2 usage error (a bad option or setting, no such model); 3 a gate failed or a
promotion was refused; 4 not reproduced; 5 drift detected; 6 nothing to compare (a reproduced run
recorded no metric and no output); 70 internal error (a bug: an exception nbmlops did not expect);
130 interrupted.

Every error reaches the user as one line on stderr, ``nbmlops: <message>``, never as a traceback
(``NBMLOPS_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import select
import shlex
import signal
import sys
import traceback
from collections.abc import Sequence

from nbmlops.config import SETTING_NAMES, Settings, configure, resolve_settings
from nbmlops.exceptions import ConfigError, NbmlopsError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130
#: the live traffic window of monitor --traffic, models compare --traffic and promote --beat ALIAS:online_*
DEFAULT_TRAFFIC_WINDOW = "24h"
#: set to 1 to see the traceback of an error as well as its one line
DEBUG_ENV = "NBMLOPS_DEBUG"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbmlops",
        description="Jupyter-native MLOps on MLflow: tracked notebook cells, crash-safe journals, the MLflow UI.",
        epilog="Exit codes: 0 success, 1 the operation failed (e.g. store unreachable, notebook failed), "
        "2 usage error, 3 a gate failed or a promotion was refused, 4 not reproduced, 5 drift detected, "
        "6 nothing to compare (reproduce), 70 internal error, 130 interrupted. Errors are one line; "
        f"{DEBUG_ENV}=1 adds the traceback.",
    )
    parser.add_argument(
        "--tracking-uri", help="tracking store (default: NBMLOPS_TRACKING_URI, MLFLOW_TRACKING_URI, pyproject, embedded)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    ui = commands.add_parser("ui", help="open the MLflow UI on the store (bound to 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, this machine only)")

    run = commands.add_parser(
        "run",
        help="execute a notebook headlessly with papermill, as one tracked run",
        description=(
            "Execute NOTEBOOK with papermill as one MLflow run (nbmlops.kind=notebook); its %%track cells "
            "become child runs and their metrics are rolled up to it. Parameters follow papermill's "
            "conventions (a cell tagged 'parameters'); names the notebook does not declare, and values of "
            "the wrong type for their parameter (its annotation or '# type:' comment, else its default's "
            "type: 'abc' for C = 1.0), are refused before any kernel starts. To pass a string that looks "
            "like a number, use -y \"label: '123'\". --timeout stops a cell that runs longer (status TIMEOUT) "
            "and its kernel; Ctrl-C stops the run (KILLED) and its kernel."
        ),
        epilog="Exit codes: 0 success, 1 the notebook failed (error, timeout, dead kernel), 2 usage error "
        "(no such notebook, unknown parameter or one of the wrong type, malformed gate), 3 a gate failed, "
        "70 internal error, 130 interrupted.",
    )
    run.add_argument("notebook", help="the .ipynb to execute")
    _add_parameter_options(run)
    run.add_argument("--name", help="run name (default: the notebook's name)")
    run.add_argument("--output", help="where to write the executed notebook (default: .nbmlops/outputs/)")
    run.add_argument("--cwd", help="working directory of the kernel")
    run.add_argument(
        "--status-file", metavar="PATH",
        help="keep the run's status in PATH as JSON, replaced whole at each change: state (queued, running, "
        "finished, failed, timeout, killed, cancelled), cells done and total, the cell executing, run id and "
        "experiment id (once the store has the run), experiment, output notebook, its HTML render's artifact "
        "path, start and end times, exit code, a failure's one-line error (secrets redacted), pid; once it ended, "
        "its final metrics and each gate's outcome",
    )
    _add_gate_options(run, "one testcase per notebook and gate")
    _add_execution_options(run)

    sweep = commands.add_parser(
        "sweep",
        help="execute a notebook once per combination of parameter values, in parallel, under one sweep run",
        description=(
            "Execute NOTEBOOK once per combination of the --grid values, each as its own notebook run (as "
            "`nbmlops run` records it), all children of one sweep run (nbmlops.kind=sweep). Combinations run "
            "in parallel in local processes, or on a Dask cluster with --dask (the tracking store must then be "
            "a tracking server; start Dask workers with --nthreads 1). A failing combination does not stop the "
            "others. At the end, a table of every run, ranked by --objective, names the best."
        ),
        epilog="Exit codes: 0 every combination finished and passed its gates, 1 a combination failed, "
        "2 usage error (a grid or -p value of the wrong type for its parameter is refused before any run), "
        "3 a gate failed, 70 internal error, 130 interrupted.",
    )
    sweep.add_argument("notebook", help="the .ipynb to execute")
    sweep.add_argument(
        "--grid", action="append", required=True, metavar="NAME=V1,V2,...",
        help="values to try for a parameter, read like -p values, such as alpha=0.1,1,10; repeatable "
        "(every combination runs)",
    )
    sweep.add_argument("--random", type=int, metavar="N", help="run N distinct combinations drawn at random")
    sweep.add_argument("--seed", type=int, help="seed of --random (the same seed draws the same combinations)")
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="notebooks at once on this machine (default: CPUs)")
    where.add_argument(
        "--dask", metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); needs a tracking server",
    )
    _add_parameter_options(sweep)
    sweep.add_argument(
        "--ship", action="append", default=[], metavar="PATH",
        help="with --dask: a file or folder under the notebook's project that the workers need, besides the files "
        "the parameters name (those travel by themselves, and so do small files the notebook's code names, but "
        "not one over 256 KiB or named like a secret); repeatable",
    )
    sweep.add_argument(
        "--output-dir", metavar="DIR",
        help="where to write the executed notebooks, <index>.ipynb each (default: .nbmlops/outputs/sweep-<key>/)",
    )
    sweep.add_argument("--objective", metavar="METRIC", help="rank the runs by this metric and name the best")
    direction = sweep.add_mutually_exclusive_group()
    direction.add_argument("--maximize", dest="maximize", action="store_true", help="higher --objective is better")
    direction.add_argument(
        "--minimize", dest="maximize", action="store_false",
        help="lower --objective is better (default: minimize names such as loss, error, rmse; maximize others)",
    )
    sweep.set_defaults(maximize=None)
    _add_gate_options(sweep, "one testcase per combination and gate")
    _add_execution_options(sweep)

    reproduce = commands.add_parser(
        "reproduce",
        help="re-execute a recorded notebook or %%%%track cell run and check that the result is the same",
        description=(
            "Re-execute RUN_ID headlessly: a notebook run from its logged input notebook with the same typed "
            "parameters; a %%track cell run from a notebook rebuilt out of the kernel history it recorded. The new "
            "run is tagged nbmlops.reproduces=RUN_ID and compared cell run by cell run (matched by cell id, else "
            "by position and source): every metric at every step, and every output dataset by content (from its "
            "snapshot; by fingerprint when it has none), within --rtol/--atol; timings (fit_time, ...) are left out "
            "and listed. The first difference is named with its likely cause (unseeded randomness, changed input "
            "data, environment or code); differences in params, input fingerprints and environment are listed."
        ),
        epilog="Exit codes: 0 reproduced (at least one metric or output compared, all matched), 1 the operation "
        "failed (e.g. store unreachable), 2 usage error (unknown run, a run of another kind, nothing recorded to "
        "re-execute), 4 not reproduced (a metric or output differs or is missing, or the execution failed), "
        "6 nothing to compare (the original run recorded no metric and no output dataset).",
    )
    reproduce.add_argument(
        "run_id", metavar="RUN_ID",
        help="MLflow run id of a notebook run or a %%%%track cell run; or a model version (NAME/VERSION or NAME@ALIAS): "
        "the run that registered it (its notebook run when it ran headlessly)",
    )
    reproduce.add_argument(
        "--register", action="store_true",
        help="register the models the notebook registers (each new version tagged nbmlops.reproduction_of); "
        "by default a reproduction registers nothing (its runs are tagged nbmlops.registration_skipped)",
    )
    reproduce.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance per number (default 1e-9)")
    reproduce.add_argument("--atol", type=float, default=0.0, help="absolute tolerance per number (default 0)")
    reproduce.add_argument("--output", help="where to write the executed notebook (default: .nbmlops/outputs/)")
    reproduce.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="stop with status TIMEOUT when a cell runs longer"
    )
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bar")

    commands.add_parser(
        "sync", help="deliver records left in journals by processes that ended before the store took them",
        epilog="Exit codes: 0 every record was delivered (journals still owned by running processes are left "
        "to them), 1 a record was damaged, refused by the store or could not reach it (each listed on stderr).",
    )
    commands.add_parser("status", help="where runs are stored, what is waiting, how to open the UI")
    commands.add_parser("config", help="every setting, and where its value came from")

    runs = commands.add_parser("runs", help="manage runs")
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    runs_commands.add_parser(
        "reap", help="mark FAILED the runs left RUNNING by processes that died (SIGKILL, out of memory)"
    )
    data = commands.add_parser("data", help="list, show, compare and export data snapshots")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_commands.add_parser("list", help="stored snapshots, newest first")
    data_commands.add_parser("show", help="a snapshot's shape and profile").add_argument("fingerprint")
    diff = data_commands.add_parser("diff", help="schema, row count and statistic changes from A to B")
    diff.add_argument("a", metavar="A", help="fingerprint of the earlier data")
    diff.add_argument("b", metavar="B", help="fingerprint of the later data")
    collect = data_commands.add_parser(
        "gc", help="delete the snapshots no run, registered model version or reproduce needs",
        description="Delete data snapshots (here and, with data_store=mlflow, from the MLflow artifact store) that "
        "no run of the tracking store (its snapshot tags and input datasets; records still waiting in a journal "
        "count), no registered model version (its training run's) needs, unless stored or re-used within the "
        "retention window (and the last hour). Prints what it frees and what it keeps, and why. Exit codes: 0 "
        "done, 1 a store could not be asked or refused a deletion (nothing is deleted when the tracking store "
        "cannot be asked), 2 usage.",
    )
    collect.add_argument("--keep-days", type=_days, default=30.0, metavar="N",
                         help="keep snapshots stored or re-used within the last N days (default 30; 0: none)")
    collect.add_argument("--dry-run", action="store_true", help="delete nothing; say what would be freed")
    get = data_commands.add_parser("get", help="write a snapshot to PATH (.parquet, .csv or .npy)")
    get.add_argument("fingerprint")
    get.add_argument("path")

    models = commands.add_parser("models", help="registered models: list, show, promote through gates")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_commands.add_parser("list", help="registered models, their latest version and aliases")
    show = models_commands.add_parser("show", help="a model's versions, aliases, lineage and gate history")
    show.add_argument("name", help="registered model name")
    promote = models_commands.add_parser(
        "promote",
        help="point an alias at a version, only if every gate passes",
        description=(
            "Point ALIAS of model NAME at VERSION when every check passes: the source run FINISHED; each --gate "
            "holds on the run's metrics; each --beat finds the candidate at least as good as the version holding "
            "that alias; and the candidate was evaluated on the same data as the versions it replaces or beats. "
            "A missing, NaN or infinite metric fails. Every decision, accepted or refused, is recorded on the "
            "version. Of two promotions racing for one alias, exactly one wins."
        ),
        epilog="Exit codes: 0 promoted (or already there), 1 the operation failed, 2 usage error or no such "
        "model, 3 refused (a check failed, or the alias changed meanwhile): the registry is unchanged.",
    )
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", type=int, help="the version to promote")
    promote.add_argument("--alias", required=True, help="the alias to move, such as champion")
    promote.add_argument(
        "--gate", action="append", default=[], metavar="EXPR",
        help='condition on the run\'s metrics, such as "accuracy >= 0.9 and rmse < 1.2"; repeatable',
    )
    promote.add_argument(
        "--beat", action="append", default=[], metavar="ALIAS:METRIC[:max|min]",
        help="be at least as good as the version holding ALIAS on METRIC (higher is better unless the name "
        "says loss, error, rmse, ... or :min); repeatable",
    )
    promote.add_argument(
        "--allow-new-evaluation-data", action="store_true",
        help="accept a candidate evaluated on different data than the incumbent (recorded in the decision)",
    )
    promote.add_argument(
        "--since", default=DEFAULT_TRAFFIC_WINDOW, metavar="WHEN",
        help="the live traffic a --beat ALIAS:online_accuracy (online_mae, online_rmse) reads: a duration back from "
        f"now (30m, 24h, 7d) or an ISO time (default {DEFAULT_TRAFFIC_WINDOW})",
    )
    compare = models_commands.add_parser(
        "compare",
        help="two versions side by side on the live traffic: agreement, online metric, latency",
        description=(
            "Compare versions A and B of model NAME (each an alias such as champion, or a version number) on the "
            "live traffic logged by `nbmlops serve` since --since: the rows each answered or scored as a shadow "
            "(--shadow), their requests, errors, latency p50/p95/p99, online metric on the rows that got feedback "
            "(online_accuracy for a classifier, online_mae and online_rmse for a regressor), and how often they "
            "agree on the rows both scored."
        ),
        epilog="Exit codes: 0 compared, 1 the operation failed, 2 usage error (no such model, alias or version; "
        "neither version has logged traffic in the window).",
    )
    compare.add_argument("name", help="registered model name")
    compare.add_argument("a", metavar="A", help="alias or version, such as champion")
    compare.add_argument("b", metavar="B", help="alias or version, such as challenger")
    compare.add_argument("--traffic", action="store_true", required=True,
                         help="compare on the live traffic (the only comparison so far)")
    compare.add_argument("--since", default=DEFAULT_TRAFFIC_WINDOW, metavar="WHEN",
                         help=f"a duration back from now (30m, 24h, 7d) or an ISO time (default {DEFAULT_TRAFFIC_WINDOW})")
    lineage = commands.add_parser(
        "lineage",
        help="where a model or run came from: run, notebook, cell, commit, datasets and their producers",
    )
    lineage.add_argument("target", metavar="NAME@ALIAS|NAME/VERSION|RUN_ID")

    monitor = commands.add_parser(
        "monitor",
        help="compare new data, or the live traffic a served model answered, with its training data; retrain "
        "when it drifted",
        description=(
            "Compare DATA (.csv, .parquet, .json, .jsonl, .feather) with the data MODEL was trained on (its "
            "snapshot, else its recorded profile): PSI per feature, a KS test for numeric features, and drift "
            "of the model's predictions when the training rows are at hand. With --traffic instead of DATA, "
            "compare the requests the version answered (logged by `nbmlops serve`, delivered to the store) since "
            "--since: the drift of their inputs, of the logged predictions against the model's predictions on the "
            "training rows, and the live figures: latency_p50_ms, latency_p95_ms, latency_p99_ms, requests, "
            "errors, error_rate, online_accuracy (a classifier) or online_mae and online_rmse (a regressor) on "
            "the rows that got feedback, and shadow_agreement (with shadow_rows, shadow_latency_p95_ms, ...) when "
            "another version shadowed it; --gate conditions apply to these metrics. The result is a monitoring "
            "run (experiment monitor/NAME) with metrics per feature and an HTML report with plots. With "
            "--retrain, drift executes NOTEBOOK headlessly (as `nbmlops run`); the version of MODEL it registers "
            "gets the 'challenger' alias if the --retrain-gate conditions (without --traffic, --gate) hold on its "
            "run. The model is loaded only when its "
            "artifact's SHA-256 is the one recorded when it was logged, its MLmodel paths stay inside it, and it "
            "is saved in a form that runs no code: XGBoost JSON, a LightGBM text model, CatBoost cbm, or skops "
            "holding only types nbmlops trusts; anything else (pickle, other types, no recorded SHA-256) only "
            "with --trust-pickle or the trusted_models setting."
        ),
        epilog="Exit codes: 0 no drift (and every --gate passed), 5 drift (with --retrain: and the challenger was "
        "registered), 1 the operation or the retraining failed, 2 usage error (unreadable data, schema mismatch, "
        "no such model, a model nbmlops refuses to load, no logged traffic of the version in the window), 3 a "
        "--gate on the live metrics failed, or the retrained model failed its gates.",
    )
    monitor.add_argument("model", metavar="NAME@ALIAS|NAME/VERSION")
    monitor.add_argument("data", metavar="DATA", nargs="?", help="the new data (or --traffic)")
    monitor.add_argument(
        "--traffic", action="store_true",
        help="monitor the live traffic the version answered (and, shadowed, the version shadowing it) instead of DATA",
    )
    monitor.add_argument(
        "--since", default=DEFAULT_TRAFFIC_WINDOW, metavar="WHEN",
        help=f"with --traffic: the window, a duration back from now (30m, 24h, 7d) or an ISO time "
        f"(default {DEFAULT_TRAFFIC_WINDOW})",
    )
    monitor.add_argument("--threshold", type=float, default=0.2, help="PSI above which a feature drifted (0.2)")
    monitor.add_argument("--bins", type=int, default=10, help="PSI bins for numeric features (10)")
    monitor.add_argument("--report", metavar="PATH", help="where to write the HTML report (default .nbmlops/monitor/)")
    monitor.add_argument("--retrain", metavar="NOTEBOOK", help="notebook to execute headlessly when drifted")
    monitor.add_argument(
        "--trust-pickle", action="store_true",
        help="trust this model: load it although it uses pickle, skops types outside nbmlops' list, or has no "
        "recorded SHA-256 (a changed artifact is refused all the same); runs code from the registry",
    )
    _add_parameter_options(monitor)
    monitor.add_argument(
        "--gate", action="append", default=[], metavar="EXPR",
        help='with --traffic: a condition on the monitoring metrics, such as "latency_p95_ms < 50 and error_rate '
        '< 0.01" (exit 3 when one fails); without it: as --retrain-gate; repeatable',
    )
    monitor.add_argument(
        "--retrain-gate", action="append", default=[], metavar="EXPR",
        help="condition the retrained model's run must meet to become @challenger; repeatable",
    )
    serve = commands.add_parser(
        "serve",
        help="serve a registered model over MLflow's scoring protocol, following its alias",
        description=(
            "Serve MODEL (NAME@ALIAS) with MLflow's scoring app: /invocations takes every input MLflow's "
            "`mlflow models serve` takes and answers as it does (/ping, /health, /version too), so its clients work "
            "unchanged. In addition: GET /model (name, alias, version serving, serving run, since when, shadow), "
            "GET /metrics (Prometheus), POST /feedback (observed labels by request id), and the headers "
            "nbmlops-model-version and nbmlops-request-id on every answer. The server follows the alias: when it "
            "moves, the new version is loaded in the background, checked against the serving signature and "
            "swapped in at once (requests in flight finish on the old one); a version that cannot be loaded or "
            "does not fit is refused and the old one keeps serving. Each request is logged (the sampled fraction "
            "--log-requests with its body and answer) to a local traffic log, delivered as Parquet traffic "
            "datasets to a serving run of experiment serve/NAME. The model loads only as `nbmlops monitor` loads "
            "it (see --trust-pickle)."
        ),
        epilog="Exit codes: 0 stopped (Ctrl-C or SIGTERM), 1 the operation failed (store unreachable, the worker "
        "processes failed), 2 usage error (not NAME@ALIAS, no such model or alias, a model nbmlops refuses to "
        "load, a bad option, the port is in use).",
    )
    serve.add_argument("model", metavar="NAME@ALIAS")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="serving processes (default 1); each loads the model and follows the alias")
    serve.add_argument("--log-requests", type=float, default=1.0, metavar="RATE",
                       help="fraction of requests logged with their body and answer (default 1; every request's "
                       "status, latency and version are logged)")
    serve.add_argument("--shadow", metavar="ALIAS",
                       help="also score each request with the version ALIAS points to (such as challenger), off "
                       "the response path; both answers are logged")
    serve.add_argument(
        "--trust-pickle", action="store_true",
        help="trust this model: load it although it uses pickle, skops types outside nbmlops' list, or has no "
        "recorded SHA-256 (a changed artifact is refused all the same); runs code from the registry",
    )
    serve.add_argument("--poll", type=_seconds, default=2.0, metavar="SECONDS",
                       help="how often to ask the registry where the aliases point (default 2)")
    serve.add_argument("--log-max-mb", type=float, metavar="MB",
                       help="the traffic log not yet delivered may take this much disk (default 1024); past it, "
                       "requests are served and counted but not logged")
    return parser


def _add_parameter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="a parameter; VALUE is read as int, float, True/False/None when it looks like one",
    )
    parser.add_argument("-f", "--parameters-file", metavar="FILE", help="parameters from a YAML file")
    parser.add_argument("-y", "--yaml", metavar="YAML", help="parameters as a YAML string")


def _add_gate_options(parser: argparse.ArgumentParser, junit: str) -> None:
    parser.add_argument(
        "--gate", action="append", default=[], metavar="EXPR",
        help='a condition on the metrics, such as "accuracy >= 0.9" or "rmse < 1.2 and mae < 1"; repeatable',
    )
    parser.add_argument("--junit", metavar="FILE", help=f"write a JUnit XML report ({junit})")


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", help="MLflow experiment (default: <project>/<the notebook's path in the project>)")
    parser.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS",
        help="stop with status TIMEOUT when a cell runs longer (its kernel is interrupted, then shut down)",
    )
    parser.add_argument("--kernel", help="kernel name (default: the notebook's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _seconds(text: str) -> float:
    """A number of seconds > 0 (argparse type)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return seconds


def _days(text: str) -> float:
    """A number of days >= 0 (argparse type)."""
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not 0 <= days < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return days


def _read_parameters(args: argparse.Namespace) -> dict[str, object]:
    """Parameters from -f, then -y, then -p (later ones win)."""
    from pathlib import Path

    from nbmlops.runner.execute import ParameterFileError, parse_parameter_file
    from nbmlops.runner.parameters import parse_value

    parameters: dict[str, object] = {}
    if args.parameters_file:
        try:
            text = Path(args.parameters_file).read_text()
        except OSError as exc:
            raise ParameterFileError(f"cannot read parameters file: {exc}") from None
        parameters.update(parse_parameter_file(text))
    if args.yaml:
        parameters.update(parse_parameter_file(args.yaml))
    parameters.update({name: parse_value(value) for name, value in args.parameter})
    return parameters


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Called without ``argv`` it is the process's own command, which exits next: the objects made so far
    are then frozen out of the garbage collector, so that the interpreter's last collection over MLflow,
    SQLAlchemy, papermill and nbconvert (over half a second) does not hold up the exit, and a Ctrl-C
    during the exit ends the process at once instead of interrupting an exit handler. After a Ctrl-C the
    command has recorded what it could (runs KILLED, records in the journal): it exits at once, without
    waiting for exit handlers on a store that does not answer.
    """
    try:
        code = _main(argv)
    finally:
        if argv is None:
            gc.freeze()
            with contextlib.suppress(ValueError):  # not the main thread: no signal handlers
                signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_INTERRUPTED))
    if argv is None and code == EXIT_INTERRUPTED:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _command(args)
    except BaseException as exc:
        return _report(exc)


def _command(args: argparse.Namespace) -> int:
    """Run the subcommand. Its output is flushed, and the tracking session it may have started is ended,
    before it returns: a closed pipe, or a store that fails at the end, is reported as its error, never by
    an exit handler."""
    if args.tracking_uri:
        configure(tracking_uri=args.tracking_uri)  # for every part of the command, not just this call
    settings = resolve_settings()
    handler = {
        "ui": _ui,
        "run": _run,
        "sweep": _sweep,
        "reproduce": _reproduce,
        "sync": _sync,
        "status": _status,
        "config": _config,
        "runs": _reap,
        "data": _data,
        "models": _models,
        "lineage": _lineage,
        "monitor": _monitor,
        "serve": _serve,
    }[args.command]
    try:
        code = handler(settings, args)
        sys.stdout.flush()
        return code
    finally:
        session = sys.modules.get("nbmlops.tracking.session")  # imported by the commands that track
        if session is not None:
            session.close_session(settings.flush_timeout)


def _report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (and its traceback with ``NBMLOPS_DEBUG=1``); return its exit code.

    An :class:`~nbmlops.exceptions.NbmlopsError` exits with the code its class carries (``exit_code``: 2 for a
    usage error, 1 for a failed operation, 3 for a refused promotion); Ctrl-C is 130; a closed standard
    output (``nbmlops ... | head``) ends the command quietly (1); anything else is a bug, an internal error
    (70). ``SystemExit`` passes through.
    """
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, BrokenPipeError) and _stdout_closed():
        return EXIT_FAILED
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        message, code = "interrupted", EXIT_INTERRUPTED
    elif isinstance(exc, NbmlopsError):
        message = str(exc)
        code = exc.exit_code
    elif isinstance(exc, Exception):
        shown = _one_line(str(exc))
        shown = shown if len(shown) <= 500 else shown[:500] + "..."
        message = f"internal error: {type(exc).__name__}: {shown} (run with {DEBUG_ENV}=1 for the traceback)"
        code = EXIT_INTERNAL
    else:
        raise exc
    try:
        print(f"nbmlops: {_one_line(message)}", file=sys.stderr, flush=True)
    except OSError:  # no stderr to tell
        pass
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader has gone; it is then pointed at /dev/null, so that
    the interpreter's last flush does not fail too."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or no real file behind stdout
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def _ui(settings: Settings, args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", settings.tracking_uri]
    if settings.artifact_root:
        command += ["--default-artifact-root", settings.artifact_root]
    command += ["--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI for {settings.tracking_uri} at http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    os.execv(sys.executable, command)
    return EXIT_OK  # pragma: no cover - execv does not return


def _run(settings: Settings, args: argparse.Namespace) -> int:
    _skip_unused_imports()
    from nbmlops.runner.execute import describe
    from nbmlops.runner.forked import run_notebook_forked
    from nbmlops.runner.status_file import run_status

    parameters = _read_parameters(args)
    with run_status(args.status_file, args.notebook, parameters) as status:
        result = run_notebook_forked(
            args.notebook,
            args.output,
            parameters,
            experiment=args.experiment,
            name=args.name,
            gates=args.gate,
            cwd=args.cwd,
            kernel_name=args.kernel,
            timeout=args.timeout,
            progress_bar=not args.no_progress,
            hooks=status.hooks(),
            on_run=status.run_delivered,
        )
        status.ended(result)
    text = describe(result)
    if result.run_id:
        text += _registered_text(result.run_id, result.run_key, settings)
    _finish(settings, args, text, [result.report()], "nbmlops")
    return result.exit_code


def _skip_unused_imports() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` in this process (0.7 s of grammar building).

    nbformat, which papermill and nbconvert use, validates notebooks with jsonschema, whose format
    checkers import it when it is installed (Jupyter installs it) to check "iri" formats; nbformat never
    checks formats, so nothing here needs it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _registered_text(run_id: str, run_key: str, settings: Settings) -> str:
    """Lines naming the model versions the notebook's cells registered, and how to promote one."""
    from nbmlops.registry.models import registered_by

    try:
        versions = registered_by(run_id, run_key, settings)
    except NbmlopsError as exc:  # the run is done and recorded: the listing is a courtesy
        return f"\n  models: not listed ({exc})"
    lines = [f"\n  model: {v.name} version {v.version}" for v in versions]
    if versions:
        first = versions[0]
        gate = _example_gate(first.run_id, settings)
        command = f"{_self_command()} models promote {shlex.quote(first.name)} {first.version} --alias champion"
        lines.append(f"\n  promote: {command}" + (f" --gate {shlex.quote(gate)}" if gate else ""))
    return "".join(lines)


#: metrics a promotion gate most often names, in the order a hint prefers them
_GATE_METRICS = ("accuracy", "f1", "roc_auc", "auc", "r2", "precision", "recall")


def _example_gate(run_id: str | None, settings: Settings) -> str | None:
    """A gate that holds for the version registered by ``run_id`` (its main metric, rounded the safe way), so
    the printed promote command can be copied as it is; None when the run has no metric a gate can name."""
    import re

    from nbmlops.tracking.search import get_rows
    from nbmlops.tracking.values import lower_is_better

    if not run_id:
        return None
    try:
        rows = get_rows(settings.tracking_uri, [run_id])
    except NbmlopsError:
        return None
    metrics = {k: v for k, v in (rows[0].metrics if rows else {}).items()
               if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and math.isfinite(v)}
    if not metrics:
        return None
    name = next((m for m in _GATE_METRICS if m in metrics), min(metrics))
    value = metrics[name]
    if lower_is_better(name):
        return f"{name} <= {math.ceil(value * 100) / 100:g}"
    return f"{name} >= {math.floor(value * 100) / 100:g}"


def _self_command() -> str:
    """How this shell runs nbmlops: ``nbmlops`` when that name finds this very script on PATH, else the script's
    path (``.venv/bin/nbmlops`` from the project folder), so a printed hint can be copied as it is."""
    import shutil
    from pathlib import Path

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.name != "nbmlops" or not script.exists():
        return "nbmlops"
    found = shutil.which("nbmlops")
    if found and Path(found).resolve() == script.resolve():
        return "nbmlops"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.resolve().relative_to(Path.cwd().resolve())))
    return shlex.quote(str(script.resolve()))


def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from nbmlops.runner.execute import NotebookNotFoundError
    from nbmlops.runner.grid import parse_grid
    from nbmlops.runner.ranking import format_table
    from nbmlops.runner.sweep import run_sweep

    grid, fixed = parse_grid(args.grid), _read_parameters(args)
    if not Path(args.notebook).is_file():
        raise NotebookNotFoundError(args.notebook)
    result = run_sweep(
        args.notebook,
        grid,
        fixed=fixed,
        random=args.random,
        seed=args.seed,
        workers=args.workers,
        dask=args.dask,
        gates=args.gate,
        objective=args.objective,
        maximize=args.maximize,
        experiment=args.experiment,
        timeout=args.timeout,
        kernel_name=args.kernel,
        progress=not args.no_progress,
        output_dir=args.output_dir,
        ship=args.ship,
    )
    _finish(settings, args, format_table(result), result.reports(), f"nbmlops sweep {Path(args.notebook).name}")
    return result.exit_code


def _finish(settings: Settings, args: argparse.Namespace, text: str, reports: list, suite: str) -> None:
    """Print the outcome and where it is stored; write the JUnit report and the CI summary."""
    from nbmlops.runner.reports import append_github_summary, write_junit

    print(text)
    print(_where(settings))
    if args.junit:
        write_junit(args.junit, reports, suite_name=suite)
    append_github_summary(reports)


def _reproduce(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.registry.lineage import run_to_reproduce
    from nbmlops.runner.reproduce import format_report, reproduce

    result = reproduce(
        run_to_reproduce(args.run_id, settings),
        rtol=args.rtol,
        atol=args.atol,
        settings=settings,
        output=args.output,
        timeout=args.timeout,
        progress_bar=not args.no_progress,
        register=args.register,
    )
    print(format_report(result))
    print(_where(settings))
    return result.exit_code


def _sync(settings: Settings, args: argparse.Namespace) -> int:
    """Deliver the journals of processes that ended: exit 0 only when every record was delivered, 1 when
    one was damaged, refused by the store or left for a store that could not be reached (each named on
    stderr, one line each). A journal a running process still owns is left to it, and is not an error."""
    from nbmlops.backend.addresses import StoreAddresses
    from nbmlops.tracking.delivery import sync_journals

    report = sync_journals(settings.journal_dir, addresses=StoreAddresses.from_environment(settings.tracking_uri))
    problems = report.problems()
    for line in problems:
        print(line, file=sys.stderr)
    print(f"delivered {report.delivered} record(s) from {report.journals} journal(s)")
    if report.busy:
        owned = ", ".join(report.busy)
        print(f"{len(report.busy)} journal(s) still owned by a running process (not an error): {owned}")
    if report.runs_failed:
        print(f"marked {len(report.runs_failed)} run(s) of dead processes FAILED")
    if problems:
        print(f"nbmlops: {len(problems)} problem(s) above: not everything was delivered", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


def _data(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from nbmlops.data import diff_profiles, format_diff
    from nbmlops.tracking.artifact_snapshots import open_snapshot_store

    store = open_snapshot_store(settings)
    if args.data_command == "list":
        for snap in store.list():
            shape = "x".join(map(str, snap.shape))
            print(f"{snap.fingerprint}  {snap.kind:<9} {shape:<14} {snap.bytes:>12,} B  {snap.created:%Y-%m-%d %H:%M}")
    elif args.data_command == "show":
        snap = store.info(args.fingerprint)
        shown = {"fingerprint": snap.fingerprint, "path": str(snap.path), "kind": snap.kind, "shape": snap.shape,
                 "bytes": snap.bytes, "created": snap.created.isoformat(), "profile": snap.profile}
        print(json.dumps(shown, indent=2))
    elif args.data_command == "diff":
        print(format_diff(diff_profiles(store.info(args.a).profile, store.info(args.b).profile)))
    elif args.data_command == "gc":
        from nbmlops.tracking.snapshot_gc import collect_snapshots

        print(collect_snapshots(settings, keep_days=args.keep_days, dry_run=args.dry_run).format())
    else:
        print(store.get(args.fingerprint, args.path))
    return EXIT_OK


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.registry import ModelReference, PromotionRefused, list_models, list_versions, promote
    from nbmlops.registry.listing import format_models, format_versions

    if args.models_command == "list":
        print(format_models(list_models(settings)))
    elif args.models_command == "show":
        print(format_versions(args.name, list_versions(args.name, settings)))
    elif args.models_command == "compare":
        from nbmlops.registry.traffic_monitor import compare_on_traffic

        print(compare_on_traffic(args.name, args.a, args.b, since=args.since, settings=settings).format())
    else:
        try:
            promotion = promote(
                ModelReference(args.name, version=args.version), args.alias, gates=args.gate, beat=args.beat,
                allow_new_evaluation_data=args.allow_new_evaluation_data, since=args.since, settings=settings,
            )
        except PromotionRefused as refused:
            print(refused.promotion.format())
            return refused.promotion.exit_code
        print(promotion.format())
        return promotion.exit_code
    return EXIT_OK


def _lineage(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.registry.lineage import format_lineage, lineage

    print(format_lineage(lineage(args.target, settings)))
    return EXIT_OK


def _monitor(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.registry.monitor import monitor

    parameters = _read_parameters(args)
    if parameters and not args.retrain:
        raise ConfigError("-p/-f/-y", "parameters are for the --retrain notebook; give --retrain", "argument")
    if args.traffic == (args.data is not None):
        raise ConfigError("DATA/--traffic", "monitor either DATA or the live traffic (--traffic): give one of them", "argument")
    live_gates, retrain_gates = (args.gate, args.retrain_gate) if args.traffic else ([], args.gate + args.retrain_gate)
    result = monitor(args.model, args.data, traffic=args.traffic, since=args.since, threshold=args.threshold,
                     bins=args.bins, retrain=args.retrain, parameters=parameters, gates=retrain_gates,
                     traffic_gates=live_gates, report=args.report, trust_pickle=args.trust_pickle, settings=settings)
    print(result.format())
    return result.exit_code


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.serving import serve

    serve(args.model, host=args.host, port=args.port, workers=args.workers, log_requests=args.log_requests,
          shadow=args.shadow, trust_pickle=args.trust_pickle, poll=args.poll, log_max_mb=args.log_max_mb,
          settings=settings)
    return EXIT_OK


def _reap(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.tracking.reap import reap

    report = reap(settings)
    for line in report.sync.problems():  # damaged, refused or undelivered journal records, as sync says them
        print(line, file=sys.stderr)
    for key in report.sync.runs_failed:
        print(f"FAILED {report.sync.runs.get(key, key)}: kernel_died: its journal ended without the run's end")
    for run in report.failed:
        print(f"FAILED {run.run_id}{f' ({run.name})' if run.name else ''}: {run.failure}: {run.reason}")
    failed = len(report.failed) + len(report.sync.runs_failed)
    print(f"marked {failed} run(s) of dead processes FAILED")
    return EXIT_OK if report.sync.ok else EXIT_FAILED


def _where(settings: Settings) -> str:
    """Where runs are stored, and how to look at them."""
    from nbmlops.redact import redact_uri, strip_userinfo

    lines = [f"runs are stored in {redact_uri(settings.tracking_uri)}"]
    served = settings.sources.get("ui_url", "").startswith("default: the MLflow UI Jupyter Server serves")
    if served:
        lines.append(f"open the MLflow UI in the Jupyter page, at {settings.ui_url}")
    elif settings.tracking_uri.startswith(("http://", "https://")) or settings.sources.get("ui_url") != "default":
        lines.append(f"open the MLflow UI: {strip_userinfo(settings.ui_url)}")
    else:
        lines.append(f"open the MLflow UI: {_self_command()} ui   (then browse http://127.0.0.1:5000)")
    return "\n".join(lines)


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.backend.store import open_store
    from nbmlops.journal import list_journals
    from nbmlops.redact import redact_uri

    print(f"tracking store: {redact_uri(settings.tracking_uri)}")
    if settings.artifact_root:
        print(f"artifacts:      {settings.artifact_root}")
    journals = list_journals(settings.journal_dir)
    if journals:
        print(f"journals:       {len(journals)} in {settings.journal_dir} (`nbmlops sync` delivers any left over)")
    rows = open_store(settings.tracking_uri, settings.artifact_root).experiment_run_counts()
    print("experiments:")
    for experiment_id, name, count in rows:
        if name == "Default" and count == 0:
            continue
        print(f"  [{experiment_id}] {name}: {count} run(s)")
    print(_where(settings).splitlines()[-1])
    return EXIT_OK


def _config(settings: Settings, args: argparse.Namespace) -> int:
    from nbmlops.redact import redact_uri

    print(f"root           = {settings.root}")
    for key in SETTING_NAMES:
        value = getattr(settings, key)
        shown = ",".join(value) if isinstance(value, tuple) else redact_uri(str(value)) if value else value
        print(f"{key:18} = {shown}  ({settings.sources.get(key, 'default')})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
