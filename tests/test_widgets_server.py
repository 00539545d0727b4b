"""The runs view on a tracking server (``http://``): no SQL to count with, so counts probe offsets and pages
come from MLflow's own search; the answers must be the same as on a database store. And the dashboard on a slow
one: its first page does not wait for the list of cells, which fills the cell dropdown when it comes."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from nbmlops.config import resolve_settings
from nbmlops.tracking import search
from nbmlops.widgets.app import Dashboard
from nbmlops.widgets.runs import RunsView
from tests.conftest import mlflow_server

RUNS = 23
HOLD_S = 120.0  # the longest a held cell-list search waits (the test releases it much sooner)
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def test_runs_view_on_a_tracking_server_counts_pages_sorts_and_filters(tmp_path: Path):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as uri:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("served")
        for i in range(RUNS):
            run = client.create_run(experiment_id, start_time=1_700_000_000_000 + i * 1000, run_name=f"run {i:02d}",
                                    tags={"nbmlops.cell_key": f"cell-{i % 3}"})
            client.log_metric(run.info.run_id, "acc", i / RUNS)
            client.set_terminated(run.info.run_id, "FAILED" if i % 5 == 0 else "FINISHED")

        assert search.count_runs(uri, [experiment_id]) == RUNS
        view = RunsView(uri, [experiment_id], page_size=5)
        assert view.total == RUNS and view.pages == 5 and view.stats["counts"] == 1
        view.page(4)
        assert [r.name for r in view.rows()] == ["run 02", "run 01", "run 00"]
        view.sort_by("metrics.acc", descending=True)
        assert view.rows()[0].name == f"run {RUNS - 1:02d}"
        view.set_filter(status="FAILED", expression="acc >= 0.2")
        assert view.total == len([i for i in range(RUNS) if i % 5 == 0 and i / RUNS >= 0.2])
        assert {c.key: c.runs for c in view.cells()} == {"cell-0": 8, "cell-1": 8, "cell-2": 7}
        view.set_filter(cell="cell-1")
        assert view.total == 8 and {r.cell for r in view.rows()} == {"cell-1"}


class CellListGate:
    """A loopback HTTP proxy in front of an MLflow server that holds the searches listing tracked cells (the
    dashboard's cell dropdown; other searches with ``needles`` in their request) until :attr:`release` is set, or
    answers them with ``failure`` (an HTTP status) and ``message`` instead of the server; everything else goes
    straight through."""

    def __init__(self, upstream: str, failure: int | None = None,
                 needles: tuple[bytes, ...] = (b"nbmlops.cell_key", b"LIKE"),
                 message: bytes = b"refused by the gate") -> None:
        self.release = threading.Event()
        self.held = threading.Event()  # set when a cell-list search arrived
        parts = urllib.parse.urlsplit(upstream)
        target = (parts.hostname or "127.0.0.1", parts.port or 80)
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/runs/search") and all(needle in body for needle in needles):
                    gate.held.set()
                    if failure is not None:
                        self._reply(failure, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "' + message + b'"}')
                        return
                    gate.release.wait(HOLD_S)
                connection = http.client.HTTPConnection(*target, timeout=120)
                try:
                    sent = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    connection.request(self.command, self.path, body=body, headers=sent)
                    reply = connection.getresponse()
                    data = reply.read()
                finally:
                    connection.close()
                self._reply(reply.status, data, [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP])

            def _reply(self, status: int, data: bytes, headers: list[tuple[str, str]] | None = None) -> None:
                self.send_response(status)
                for key, value in headers or [("Content-Type", "application/json")]:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="cell-list-gate", daemon=True)
        self._thread.start()
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def test_first_page_shows_while_the_cell_list_loads_then_the_cell_dropdown_fills_and_filters(tmp_path: Path):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as uri:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("slow cells")
        for i in range(9):
            run = client.create_run(experiment_id, start_time=1_700_000_000_000 + i * 1000, run_name=f"run {i}",
                                    tags={"nbmlops.cell_key": f"cell-{i % 3}"})
            client.set_terminated(run.info.run_id, "FAILED" if i % 2 == 0 else "FINISHED")
        gate = CellListGate(uri)
        dashboard = Dashboard("slow cells", settings=resolve_settings(tmp_path, tracking_uri=gate.uri), live=False)
        try:
            # the first page is there while the cell list is still held: the constructor did not wait for it
            assert dashboard.count_label.value == "9 runs" and dashboard.table.value.count("data-run-id") == 9
            assert gate.held.wait(HOLD_S) and not dashboard.wait_loaded(0)
            assert dashboard.cell_filter.options == (("any cell", ""),)
            dashboard.status_filter.value = "FAILED"  # the controls work meanwhile
            assert dashboard.count_label.value == "5 runs"

            gate.release.set()
            assert dashboard.wait_loaded(HOLD_S) and dashboard.error.value == ""
            options = dashboard.cell_filter.options
            assert [key for _, key in options] == ["", "cell-2", "cell-1", "cell-0"]  # the latest run first
            assert [label for label, _ in options[1:]] == ["run 8 · 3 runs", "run 7 · 3 runs", "run 6 · 3 runs"]
            dashboard.cell_filter.value = "cell-0"  # runs 0, 3, 6, of which 0 and 6 FAILED
            assert dashboard.count_label.value == "2 runs"
            assert {row.name for row in dashboard.runs.rows()} == {"run 0", "run 6"}
        finally:
            gate.close()
            dashboard.close()


def test_a_cell_list_the_server_refuses_is_shown_and_the_first_page_and_filters_still_work(tmp_path: Path):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as uri:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("failing cells")
        for i in range(4):
            run = client.create_run(experiment_id, start_time=1_700_000_000_000 + i * 1000, run_name=f"run {i}",
                                    tags={"nbmlops.cell_key": f"cell-{i % 2}"})
            client.set_terminated(run.info.run_id, "FAILED" if i == 0 else "FINISHED")
        gate = CellListGate(uri, failure=400)  # as a server that cannot search tags with LIKE would answer
        dashboard = Dashboard("failing cells", settings=resolve_settings(tmp_path, tracking_uri=gate.uri), live=False)
        try:
            assert dashboard.count_label.value == "4 runs" and dashboard.table.value.count("data-run-id") == 4
            assert dashboard.wait_loaded(HOLD_S) and gate.held.is_set()
            assert "could not load the lists of experiments and cells" in dashboard.error.value
            assert "refused by the gate" in dashboard.error.value
            assert dashboard.cell_filter.options == (("any cell", ""),)
            assert [name for name, _ in dashboard.experiment_choice.options] == ["Default", "failing cells"]
            dashboard.status_filter.value = "FAILED"
            assert dashboard.count_label.value == "1 run" and dashboard.error.value == ""
        finally:
            gate.close()
            dashboard.close()


def test_nested_runs_on_a_tracking_server_group_under_their_parent_or_list_flat_where_it_cannot_search_so(
        tmp_path: Path):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as uri:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("served sweep")
        start = 1_700_000_000_000
        sweep = client.create_run(experiment_id, start_time=start, run_name="sweep",
                                  tags={"nbmlops.kind": "sweep"}).info.run_id
        children = [client.create_run(experiment_id, start_time=start + (i + 1) * 1000, run_name=f"C={i}",
                                      tags={"mlflow.parentRunId": sweep}).info.run_id for i in range(3)]
        for i in range(2):
            client.create_run(experiment_id, start_time=start + (10 + i) * 1000, run_name=f"alone {i}")
        for step, value in enumerate((0.5, 0.25, 0.125)):
            client.log_metric(children[0], "loss", value, step=step)
        assert search.run_lineage(uri, [children[0], sweep]) == {children[0]: (sweep, ""), sweep: (None, "sweep")}
        assert search.metric_histories(uri, children[0], ["loss"]) == {"loss": [(0, 0.5), (1, 0.25), (2, 0.125)]}

        view = RunsView(uri, [experiment_id], page_size=2)  # MLflow's own search: nested runs come with the page
        assert view.grouping and view.total == 3 and view.pages == 2
        view.page(1)
        assert [r.name for r in view.rows()] == ["sweep"] and view.describe() == "3 runs, 3 nested"
        assert [(s.row.run_id, s.depth) for s in view.shown()] == [(sweep, 0)] + [(c, 1) for c in children]

        # a server that cannot search for runs without a parent (MLflow 3.10 refuses IS NULL): a flat table,
        # where a run still nests under its parent when both are on the page
        gate = CellListGate(uri, failure=400, needles=(b"IS NULL",),
                            message=b"Invalid clause(s) in filter string: 'tags.`mlflow.parentRunId` IS NULL'")
        try:
            flat = RunsView(gate.uri, [experiment_id], page_size=10)
            assert gate.held.is_set() and not flat.grouping
            assert flat.total == 6 and len(flat.rows()) == 6 and flat.describe() == "6 runs"
            assert {s.row.run_id: s.depth for s in flat.shown()} == {sweep: 0, **dict.fromkeys(children, 1),
                                                                      **{r.run_id: 0 for r in flat.rows()
                                                                         if r.name.startswith("alone")}}
        finally:
            gate.close()
