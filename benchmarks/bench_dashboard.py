#!/usr/bin/env python
"""How fast the dashboard opens and filters on 10,000 runs, against ``mlflow.search_runs`` on the same store.

Run from the repository root::

    python benchmarks/bench_dashboard.py              # 10,000 runs, writes benchmarks/RESULTS.md
    python benchmarks/bench_dashboard.py --runs 2000  # another size (its own cached store)
    python benchmarks/bench_dashboard.py --no-write   # print the table only

The store: a sqlite MLflow store of one experiment holding N cell runs (5 params, 4 metrics, the tags a
``%%track`` run has; 20 cells; 90 % FINISHED, 8 % FAILED, 2 % KILLED; starts spread over 30 days). The
first 50 runs are written through ``MlflowClient`` (create_run, log_batch, set_terminated); the rest go
into the same tables through MLflow's own SQLAlchemy models in one transaction (the API takes ~40 ms a
run on this disk: 7 minutes for 10,000), and the benchmark checks that both kinds read back alike. The
store is cached in the temp dir, keyed by size and MLflow version.

What is measured, each in a fresh process (own ``IPYTHONDIR``, working directory in a temp dir):

1. warm (a kernel that has already tracked runs: mlflow imported, store opened): the dashboard's first page
   (the count and the runs table of the first 50 runs), timed until what a kernel sends to show it is
   computed (``_repr_mimebundle_``, whose static HTML holds the table), the first one of the process (which
   imports ipywidgets) and the median of the next ones, in interleaved rounds with one page of
   ``MlflowClient.search_runs(max_results=50)`` (the target's baseline) and the same page as a pandas frame
   (``mlflow.search_runs``). What loads after the first page on a background thread (the controls and tabs,
   the experiment and cell lists, the first live poll) is timed apart, to its end, and each round waits for
   it before the next side runs. Then filters applied through the widgets (metric expression, status, cell,
   a compound expression, a sort, the next page), each timed until the table's HTML is there, paired with one
   filtered page; and, for scale, the frame of every run.
2. cold: a fresh interpreter opening the dashboard (import included), and one calling ``mlflow.search_runs``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from results_file import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
EXPERIMENT = "bench-dashboard"
FILTER = "accuracy > 0.9"
FIRST_RENDER_TARGET_S = 1.5
PAGE_RATIO_TARGET = 1.0  # the dashboard's first page against one search_runs page of the same size
FILTER_TARGET_S = 0.3
API_RUNS = 50  # runs written through MlflowClient; the rest in bulk
CELLS = 20
DAY_MS = 86_400_000


# ---------------------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------------------


def _run_values(i: int, rng: random.Random, now_ms: int) -> dict[str, Any]:
    cell = i % CELLS
    roll = rng.random()
    status = "FINISHED" if roll < 0.90 else "FAILED" if roll < 0.98 else "KILLED"
    start = now_ms - 30 * DAY_MS + int(i * 30 * DAY_MS / 10_000) + rng.randrange(1000)
    accuracy = min(0.999, max(0.0, rng.gauss(0.8, 0.08)))
    return {
        "name": f"cell {i + 1}",
        "status": status,
        "start": start,
        "end": start + rng.randrange(200, 120_000),
        "tags": {
            "nbmlops.kind": "cell",
            "nbmlops.cell_key": f"{cell:08x}-bench-cell",
            "nbmlops.execution_count": str(i + 1),
            "nbmlops.run_key": uuid.UUID(int=rng.getrandbits(128)).hex,
            "mlflow.source.name": "/bench/notebook.ipynb",
            "mlflow.source.type": "NOTEBOOK",
            "nbmlops.python": "3.11.7",
        },
        "params": {
            "alpha": f"{rng.choice([0.001, 0.01, 0.1, 1.0, 10.0])}",
            "depth": str(rng.randrange(2, 12)),
            "model": rng.choice(["ridge", "lasso", "forest", "boosting"]),
            "n_estimators": str(rng.choice([50, 100, 200, 400])),
            "seed": str(i % 5),
        },
        "metrics": {
            "accuracy": accuracy,
            "loss": round(1 - accuracy + rng.random() / 10, 6),
            "f1": min(1.0, accuracy + rng.gauss(0, 0.02)),
            "train_seconds": rng.random() * 100,
        },
    }


def build_store(path: Path, runs: int) -> dict[str, Any]:
    """Write the benchmark store at ``path`` (must not exist); returns what was written and how long it took."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import insert

    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{path}")
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(path.parent / "artifacts").as_uri())
    rng = random.Random(20261123)
    now_ms = int(time.time() * 1000)
    values = [_run_values(i, rng, now_ms) for i in range(runs)]
    for v in values[:API_RUNS]:
        run = client.create_run(experiment_id, start_time=v["start"], tags=v["tags"], run_name=v["name"])
        client.log_batch(run.info.run_id, metrics=[Metric(k, x, v["start"], 0) for k, x in v["metrics"].items()],
                         params=[Param(k, x) for k, x in v["params"].items()])
        client.set_terminated(run.info.run_id, v["status"], end_time=v["end"])
    api_seconds = time.perf_counter() - t0
    template = client.search_runs([experiment_id], max_results=1)[0]  # what MlflowClient wrote, to mirror
    extra_tags = {k: v for k, v in template.data.tags.items() if k not in values[0]["tags"] and k != "mlflow.runName"}
    store = client._tracking_client.store
    artifact_root = template.info.artifact_uri.rsplit("/", 2)[0]
    rows: dict[str, list[dict[str, Any]]] = {"runs": [], "tags": [], "params": [], "metrics": [], "latest": []}
    for v in values[API_RUNS:]:
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        rows["runs"].append({
            "run_uuid": run_id, "name": v["name"], "source_type": "UNKNOWN", "source_name": "",
            "entry_point_name": "", "user_id": template.info.user_id, "status": v["status"],
            "start_time": v["start"], "end_time": v["end"], "deleted_time": None, "source_version": "",
            "lifecycle_stage": "active", "artifact_uri": f"{artifact_root}/{run_id}/artifacts",
            "experiment_id": int(experiment_id),
        })
        tags = {**v["tags"], **extra_tags, "mlflow.runName": v["name"]}
        rows["tags"] += [{"key": k, "value": x, "run_uuid": run_id} for k, x in tags.items()]
        rows["params"] += [{"key": k, "value": x, "run_uuid": run_id} for k, x in v["params"].items()]
        for key, value in v["metrics"].items():
            metric = {"key": key, "value": value, "timestamp": v["start"], "step": 0, "is_nan": False, "run_uuid": run_id}
            rows["metrics"].append(metric)
            rows["latest"].append(dict(metric))
    with store.ManagedSessionMaker() as session:
        for model, key in ((SqlRun, "runs"), (SqlTag, "tags"), (SqlParam, "params"), (SqlMetric, "metrics"),
                           (SqlLatestMetric, "latest")):
            if rows[key]:
                session.execute(insert(model.__table__), rows[key])
    check = _check_store(client, experiment_id, values)
    return {"experiment_id": experiment_id, "runs": runs, "api_runs": min(API_RUNS, runs), "api_seconds": api_seconds,
            "seconds": time.perf_counter() - t0, **check}


def _check_store(client: Any, experiment_id: str, values: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs written through the API and in bulk read back the same way: same tag keys, params and metrics."""
    api = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"], max_results=3)
    bulk = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=3)
    same_shape = all(
        set(a.data.tags) == set(b.data.tags) and set(a.data.params) == set(b.data.params)
        and set(a.data.metrics) == set(b.data.metrics) and a.info.lifecycle_stage == b.info.lifecycle_stage
        for a in api for b in bulk
    )
    last = values[-1]
    newest = bulk[0]
    values_match = (newest.info.run_name == last["name"] and newest.data.params == last["params"]
                    and newest.data.metrics == last["metrics"] and newest.info.status == last["status"])
    return {"same_shape": same_shape, "values_match": values_match}


def cached_store(runs: int) -> tuple[Path, dict[str, Any]]:
    from importlib import metadata

    folder = Path(tempfile.gettempdir(), "nbmlops-bench-dashboard", f"{runs}-mlflow{metadata.version('mlflow')}")
    db, info_file = folder / "mlflow.db", folder / "store.json"
    if info_file.exists() and db.exists():
        return db, {**json.loads(info_file.read_text()), "cached": True}
    if folder.exists():
        for leftover in folder.glob("mlflow.db*"):
            leftover.unlink()
    print(f"building a store of {runs} runs in {folder} ...", file=sys.stderr)
    info = build_store(db, runs)
    if not (info["same_shape"] and info["values_match"]):
        raise SystemExit(f"the bulk-written runs do not read back like API-written ones: {info}")
    info_file.write_text(json.dumps(info))
    return db, {**info, "cached": False}


# ---------------------------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------------------------


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def child_warm(uri: str, repeats: int) -> dict[str, Any]:
    import mlflow

    from nbmlops.backend.store import open_store
    from nbmlops.config import resolve_settings
    from nbmlops.tracking.search import _probed_count, count_runs, experiment_ids
    from nbmlops.tracking.search import _store as _client

    open_store(uri, None).client.search_experiments(max_results=1)  # the kernel has tracked: store open
    mlflow.set_tracking_uri(uri)
    settings = resolve_settings()
    [experiment_id] = experiment_ids(uri, [EXPERIMENT])

    def open_dashboard() -> Any:  # until what a kernel sends to show it is computed: the first page's HTML in it
        from nbmlops.widgets.app import Dashboard

        dashboard = Dashboard(EXPERIMENT, settings=settings)
        bundle = dashboard._repr_mimebundle_()
        assert "nbmlops-runs-table" in dashboard.table.value and "nbmlops-runs-table" in bundle["text/html"]
        return dashboard

    def loaded(dashboard: Any, started: float) -> float:
        """Seconds from ``started`` until what loads after the first page is there (not part of the first page)."""
        assert dashboard.wait_loaded(600) and not dashboard.error.value, dashboard.error.value
        assert len(dashboard.cell_filter.options) == CELLS + 1  # "any cell" and every cell
        return time.perf_counter() - started

    client = mlflow.MlflowClient(uri)

    def one_page() -> Any:  # what a user would otherwise do to look at the latest 50 runs: the same store's client
        return client.search_runs([experiment_id], max_results=50)

    def one_frame_page() -> Any:  # the same page as a pandas frame, through the fluent API
        return mlflow.search_runs(experiment_ids=[experiment_id], max_results=50)

    def one_filtered_page() -> Any:
        return client.search_runs([experiment_id], filter_string=f"metrics.{FILTER}", max_results=50)

    one_page(), one_frame_page()  # mlflow's search paths warmed like ours
    started = time.perf_counter()
    first_s, dashboard = _timed(open_dashboard)
    first_loaded_s = loaded(dashboard, started)
    total = dashboard.runs.total
    dashboard.close()
    opened, opened_loaded, page_base, frame_base = [], [], [], []
    sides = ("dashboard", "page", "frame")
    for i in range(repeats):  # interleaved: each round rotates which side goes first
        for side in sides[i % 3:] + sides[:i % 3]:
            if side == "dashboard":
                started = time.perf_counter()
                seconds, again = _timed(open_dashboard)
                opened.append(seconds)
                opened_loaded.append(loaded(again, started))  # the background work ends before the next side
                again.close()
            elif side == "page":
                page_base.append(_timed(one_page)[0])
            else:
                frame_base.append(_timed(one_frame_page)[0])

    dashboard = open_dashboard()
    loaded(dashboard, time.perf_counter())
    cell = dashboard.cell_filter.options[3][1]
    def choose(widget: Any, value: Any) -> Any:
        return lambda: setattr(widget, "value", value)

    def nothing() -> None:
        return None

    # (label, prepare (untimed), apply (timed: one application of the filter), undo)
    actions = [
        (f"metric expression `{FILTER}`", nothing, choose(dashboard.expression, FILTER), choose(dashboard.expression, "")),
        ("status FAILED", nothing, choose(dashboard.status_filter, "FAILED"), choose(dashboard.status_filter, "")),
        ("one cell of 20", nothing, choose(dashboard.cell_filter, cell), choose(dashboard.cell_filter, "")),
        ("`accuracy > 0.8 and loss < 0.3`, status FINISHED already chosen",
         choose(dashboard.status_filter, "FINISHED"), choose(dashboard.expression, "accuracy > 0.8 and loss < 0.3"),
         lambda: (setattr(dashboard.status_filter, "value", ""), setattr(dashboard.expression, "value", ""))),
        ("sort by metrics.accuracy", nothing, lambda: dashboard.sort("metrics.accuracy", True),
         lambda: dashboard.sort("start", True)),
        ("next page", nothing, dashboard.next_button.click, lambda: dashboard.show_page(0)),
    ]
    filters: dict[str, list[float]] = {label: [] for label, _, _, _ in actions}
    filtered_page_base: list[float] = []
    for _ in range(repeats):
        for label, prepare, apply, undo in actions:
            prepare()
            before = dashboard.table.value
            seconds, _ = _timed(apply)
            assert dashboard.table.value != before and not dashboard.error.value, (label, dashboard.error.value)
            filters[label].append(seconds)
            undo()
            if label.startswith("metric expression"):  # its pair: one filtered page through mlflow
                filtered_page_base.append(_timed(one_filtered_page)[0])
    dashboard.expression.value = FILTER
    filtered_count = dashboard.runs.total
    dashboard.live.poll()
    polls = [_timed(dashboard.live.poll)[0] for _ in range(repeats)]  # nothing running: what a live tick costs
    dashboard.expression.value = ""
    charts = [_timed(lambda: dashboard.charts.over_runs("accuracy")) for _ in range(repeats)]
    dashboard.close()

    baseline, baseline_filtered = [], []
    frame_rows = frame_filtered_rows = 0
    for _ in range(max(2, repeats // 2)):
        seconds, frame = _timed(lambda: mlflow.search_runs(experiment_ids=[experiment_id]))
        baseline.append(seconds)
        frame_rows = len(frame)
        seconds, frame = _timed(lambda: mlflow.search_runs(experiment_ids=[experiment_id],
                                                           filter_string=f"metrics.{FILTER}"))
        baseline_filtered.append(seconds)
        frame_filtered_rows = len(frame)
    count_s, _ = _timed(lambda: count_runs(uri, [experiment_id], f"metrics.{FILTER}"))
    probed_s, probed = _timed(lambda: _probed_count(_client(uri), [experiment_id], f"metrics.{FILTER}"))
    return {
        "first_open_s": first_s, "first_loaded_s": first_loaded_s, "open_s": opened, "loaded_s": opened_loaded,
        "page_base_s": page_base, "frame_page_base_s": frame_base,
        "filtered_page_base_s": filtered_page_base, "total": total, "filters": filters,
        "filtered_count": filtered_count, "baseline_s": baseline, "baseline_filtered_s": baseline_filtered,
        "frame_rows": frame_rows, "frame_filtered_rows": frame_filtered_rows,
        "sql_count_s": count_s, "probed_count_s": probed_s, "probed_count": probed, "poll_s": polls,
        "chart_s": [seconds for seconds, _ in charts], "chart_points": len(charts[0][1].series[0].y),
    }


def child_cold_dashboard(uri: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    from nbmlops.widgets.app import Dashboard

    dashboard = Dashboard(EXPERIMENT)
    assert "nbmlops-runs-table" in dashboard._repr_mimebundle_()["text/html"]
    seconds = time.perf_counter() - t0
    assert dashboard.wait_loaded(600) and not dashboard.error.value, dashboard.error.value
    loaded_s = time.perf_counter() - t0
    dashboard.close()
    return {"seconds": seconds, "loaded_s": loaded_s}


def child_cold_baseline(uri: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    frame = mlflow.search_runs(experiment_ids=[experiment.experiment_id])
    return {"seconds": time.perf_counter() - t0, "rows": len(frame)}


CHILDREN = {"warm": child_warm, "cold-dashboard": child_cold_dashboard, "cold-baseline": child_cold_baseline}


def _spawn(kind: str, uri: str, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-dash-") as tmp:
        out = Path(tmp, "out.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
        env.update(NBMLOPS_TRACKING_URI=uri, IPYTHONDIR=str(Path(tmp, "ipython")), NBMLOPS_UI_URL="http://127.0.0.1:5000")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--uri", uri, "--repeats", str(repeats),
             "--out", str(out)],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=1800, check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"child {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_report(machine: dict[str, str], store: dict[str, Any], warm: dict[str, Any], cold: list[dict[str, Any]],
                 cold_base: list[dict[str, Any]], command: str) -> tuple[str, bool]:
    median = statistics.median
    runs = store["runs"]
    open_median = median(warm["open_s"])
    first = warm["first_open_s"]
    base = median(warm["baseline_s"])
    base_filtered = median(warm["baseline_filtered_s"])
    filter_medians = {label: median(times) for label, times in warm["filters"].items()}
    filter_max = {label: max(times) for label, times in warm["filters"].items()}
    expression = filter_medians[f"metric expression `{FILTER}`"]
    page_base = median(warm["page_base_s"])
    frame_page_base = median(warm["frame_page_base_s"])
    loaded = median(warm["loaded_s"])
    filtered_page_base = median(warm["filtered_page_base_s"])
    spread = {key: f"{_ms(min(warm[key]))}-{_ms(max(warm[key]))}"
              for key in ("open_s", "page_base_s", "frame_page_base_s", "loaded_s")}
    render_ok = max(first, open_median) <= FIRST_RENDER_TARGET_S and open_median <= PAGE_RATIO_TARGET * page_base
    filters_ok = max(filter_medians.values()) <= FILTER_TARGET_S
    counts_ok = warm["filtered_count"] == warm["frame_filtered_rows"] == warm["probed_count"] and warm["total"] == runs
    cold_open = median(c["seconds"] for c in cold)
    cold_loaded = median(c["loaded_s"] for c in cold)
    cold_base_s = median(c["seconds"] for c in cold_base)
    rows = [
        ((f"store: {runs:,} runs in one experiment ({store['api_runs']} through MlflowClient, the rest in bulk); "
          "bulk rows read back like API rows"),
         f"{'cached' if store['cached'] else 'built'} in {store['seconds']:.1f} s; {store['same_shape'] and store['values_match']}",
         "", "info"),
        ("**1a. dashboard's first page (count + table of 50 runs, as a kernel shows it), first in a warm process "
         "(imports ipywidgets)**", f"**{_ms(first)}**", f"<= {FIRST_RENDER_TARGET_S} s",
         _verdict(first <= FIRST_RENDER_TARGET_S)),
        (f"**1b. the same, median of the next {len(warm['open_s'])} (spread {spread['open_s']})**",
         f"**{_ms(open_median)}**", f"<= {FIRST_RENDER_TARGET_S} s", _verdict(open_median <= FIRST_RENDER_TARGET_S)),
        (("1c. baseline, interleaved with 1b: one page, `MlflowClient.search_runs([...], max_results=50)` "
          f"(median of {len(warm['page_base_s'])}, spread {spread['page_base_s']})"), _ms(page_base), "", "info"),
        ("**1d. dashboard first page / one `search_runs` page (1b / 1c); the dashboard also counts every run and "
         "renders the table**", f"**{open_median / page_base:.2f}x**", f"<= {PAGE_RATIO_TARGET:g}x",
         _verdict(open_median <= PAGE_RATIO_TARGET * page_base)),
        (("1e. the same page as a pandas frame, `mlflow.search_runs(experiment_ids=[...], max_results=50)`, "
          f"interleaved with 1b (median of {len(warm['frame_page_base_s'])}, spread {spread['frame_page_base_s']}); "
          f"1b / 1e"), f"{_ms(frame_page_base)}; {open_median / frame_page_base:.2f}x", "", "info"),
        (("1f. not part of the first page: from opening until what loads after it on a background thread is there "
          "(the controls and tabs, the experiment list, the cell list with each cell's runs (one scan of the "
          f"experiment), the first live poll); median of {len(warm['loaded_s'])}, spread {spread['loaded_s']}; "
          f"first in the process {_ms(warm['first_loaded_s'])}"), _ms(loaded), "", "info"),
        (("1g. for scale, not a like-for-like figure: the frame of every run, `mlflow.search_runs(experiment_ids=[...])` "
          f"(median of {len(warm['baseline_s'])}; {warm['frame_rows']:,} rows)"), _ms(base), "", "info"),
    ]
    for label, seconds in filter_medians.items():
        rows.append((f"2. apply: {label} (median of {len(warm['filters'][label])}; max {_ms(filter_max[label])})",
                     _ms(seconds), f"<= {_ms(FILTER_TARGET_S)}", _verdict(seconds <= FILTER_TARGET_S)))
    rows += [
        ((f"2b. baseline, interleaved with the metric expression: one filtered page, `MlflowClient.search_runs(..., "
          f"filter_string='metrics.{FILTER}', max_results=50)` (median of {len(warm['filtered_page_base_s'])})"),
         _ms(filtered_page_base), "", "info"),
        (f"**2c. dashboard filter (new count, page and table) / one filtered `search_runs` page (`{FILTER}` / 2b)**",
         f"**{expression / filtered_page_base:.2f}x**", "", "info"),
        ((f"2d. for scale: the frame of every filtered run, `mlflow.search_runs(..., filter_string='metrics.{FILTER}')` "
          f"(median of {len(warm['baseline_filtered_s'])}; {warm['frame_filtered_rows']:,} rows)"),
         _ms(base_filtered), "", "info"),
        (f"3. same count of `{FILTER}`: dashboard, search_runs frame, offset probing",
         f"{warm['filtered_count']:,} / {warm['frame_filtered_rows']:,} / {warm['probed_count']:,}", "equal",
         _verdict(counts_ok)),
        ("3b. that count: one SQL count query vs probing offsets with one-run pages (non-SQL stores)",
         f"{_ms(warm['sql_count_s'])} vs {_ms(warm['probed_count_s'])}", "", "info"),
        (f"3c. a live refresh with nothing changed: the RUNNING runs and one count (median of {len(warm['poll_s'])})",
         _ms(median(warm["poll_s"])), "", "info"),
        ((f"3d. the chart's data: accuracy of the latest {warm['chart_points']:,} runs against their start "
          f"(median of {len(warm['chart_s'])})"), _ms(median(warm["chart_s"])), "", "info"),
        (f"4a. cold: fresh interpreter, `import nbmlops.widgets` + dashboard + first page (median of {len(cold)}); "
         f"everything loaded after it: {_ms(cold_loaded)}", _ms(cold_open), "", "info"),
        (f"4b. cold baseline: fresh interpreter, `import mlflow` + `search_runs` (median of {len(cold_base)})",
         _ms(cold_base_s), "", "info"),
    ]
    table = ["| measure | value | target | result |", "|---|---|---|---|",
             *(f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows)]
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    setup = (f"Machine: {machine['nproc']} cores, {machine['cpu']}; Python {machine['python']}, mlflow "
             f"{machine['mlflow']}, ipywidgets {machine['ipywidgets']}, SQLAlchemy {machine['sqlalchemy']}; "
             f"1-minute load average {machine['load']} at start, {os.getloadavg()[0]:.2f} at end (other jobs share "
             f"this machine: figures move with it). Date: {date}.")
    method = (
        "Method: each figure in a fresh process. Warm (1, 2, 3): mlflow imported and the store opened first, as in "
        "a kernel that has tracked runs; the dashboard is `Dashboard(experiment)` with its defaults (page of 50, "
        "live refresh on; nothing is running, so no live thread). The first page is the count and the runs table "
        "of the 50 newest runs; it is timed until what a kernel sends to show the dashboard is computed "
        "(`_repr_mimebundle_`: the widget view and the static HTML holding the table). The rest (the header, the "
        "tabs and the runs tab's controls, the experiment list, the cell list, the first live poll) is built on a "
        "background thread that starts once the mimebundle is made (a control used earlier is built at once); it "
        "is timed apart (1f), from opening until it ends, "
        "and every round waits for it to end before the next side runs, so it never overlaps a baseline. The "
        "baseline is one page of the same size from the same store: `MlflowClient.search_runs(..., "
        "max_results=50)` (1c), and as a pandas frame (1e), in interleaved rounds with the dashboard in the same "
        "process (the order rotates each round). A filter is timed from setting the widget's value (what Enter or "
        "a dropdown sends) to the new count, page and table HTML; each action is undone before the next. A page "
        "is read-only SQL of ours over MLflow's tables, with MLflow's filter and ordering rules: the page's run "
        "ids in MLflow's order and the count (under a filter, a window count in the same query), then one query "
        "per table for those 50 runs. The frame of every run is shown for scale only."
    )
    section = "\n".join([
        "## Dashboard (`benchmarks/bench_dashboard.py`)", "", f"Reproduce: `{command}`.", "", setup, "", method, "",
        *table,
    ])
    return section, render_ok and filters_ok and counts_ok


def _machine() -> dict[str, str]:
    from importlib import metadata

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "python": platform.python_version(),
        "mlflow": metadata.version("mlflow"), "ipywidgets": metadata.version("ipywidgets"),
        "sqlalchemy": metadata.version("sqlalchemy"), "load": f"{os.getloadavg()[0]:.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the store (default 10,000)")
    parser.add_argument("--repeats", type=int, default=9, help="repetitions of each warm figure (default 9)")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per cold figure (default 3)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = CHILDREN[args.child](args.uri, args.repeats) if args.child == "warm" else CHILDREN[args.child](args.uri)
        Path(args.out).write_text(json.dumps(result))
        return 0

    db, store = cached_store(args.runs)
    uri = f"sqlite:///{db}"
    machine = _machine()
    print("warm process ...", file=sys.stderr)
    warm = _spawn("warm", uri, args.repeats)
    print(f"cold processes ({args.processes} each) ...", file=sys.stderr)
    cold = [_spawn("cold-dashboard", uri, 1) for _ in range(args.processes)]
    cold_base = [_spawn("cold-baseline", uri, 1) for _ in range(args.processes)]
    command = "python benchmarks/bench_dashboard.py" + (f" --runs {args.runs}" if args.runs != 10_000 else "")
    section, passed = build_report(machine, store, warm, cold, cold_base, command)
    print(section)
    print("\nresult: " + ("PASS" if passed else "FAIL"), file=sys.stderr)
    if not args.no_write:
        write_section("dashboard", section)
        print(f"wrote the dashboard section of {RESULTS}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
