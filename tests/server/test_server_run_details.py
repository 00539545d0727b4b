"""A run's details as the Experiments panel shows them: metric series (bounded), a failed run's exception, and its
artifact files served by the server extension, path-checked, with types that never run script in Jupyter's
origin. Real Jupyter server, real kernel-side tracking (``%%track`` in a real IPython shell), real sqlite store."""

from __future__ import annotations

import urllib.parse

import pytest

import nbmlops

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><script>alert(1)</script></svg>'
HTML = "<html><body><script>window.top.pwned = 1</script></body></html>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs(shell, make_notebook, monkeypatch: pytest.MonkeyPatch) -> None:
    """``%%track`` runs of train.ipynb: ``epochs`` (a 30-step series, a figure, an SVG and an HTML artifact),
    ``long`` (5000 steps) and ``broken`` (raises ValueError)."""
    notebook = make_notebook("train.ipynb", "x = 1")
    monkeypatch.setenv("NBMLOPS_NOTEBOOK", str(notebook))
    shell.run_cell("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nimport nbmlops")
    shell.run_cell_magic("track", "--name epochs", f"""
C = 0.5
for epoch in range(30):
    nbmlops.log_metric("train_mse", 1 / (epoch + 1), step=epoch)
    nbmlops.log_metric("val_mse", 1.5 / (epoch + 1), step=epoch)
accuracy = round(0.5 + 0.43, 2)
figure = plt.figure()
plt.plot([1, 2, 3])
nbmlops.active_run().log_bytes({SVG!r}.encode(), "plots/curve.svg")
nbmlops.active_run().log_text({HTML!r}, "report.html")
""")
    shell.run_cell_magic("track", "--name long", "for i in range(5000):\n    nbmlops.log_metric('loss', (i % 97) / 97, step=i)")
    with pytest.raises(ValueError, match="bad input shape"):
        shell.run_cell_magic("track", "--name broken", "raise ValueError('bad input shape (3, 2)')")
    nbmlops.flush(60)


async def run_ids(api) -> dict[str, str]:
    code, body = await api("GET", "runs", params={"notebook": "train.ipynb"})
    assert code == 200, body
    return {run["name"]: run["run_id"] for run in body["runs"]}


async def test_run_detail_has_each_metric_series_by_step(api, runs):
    ids = await run_ids(api)
    code, run = await api("GET", "runs", ids["epochs"], params={"notebook": "train.ipynb"})
    assert code == 200, run
    assert set(run["series"]) == {"train_mse", "val_mse"}  # accuracy was logged once: a value, not a series
    assert [step for step, _ in run["series"]["train_mse"]] == list(range(30))
    assert run["series"]["train_mse"][0][1] == pytest.approx(1.0)
    assert run["series"]["val_mse"][-1][1] == pytest.approx(1.5 / 30)
    assert run["metrics"]["accuracy"] == pytest.approx(0.93) and run["error"] is None


async def test_a_long_series_is_thinned_keeping_its_ends_and_extremes(api, runs):
    ids = await run_ids(api)
    code, run = await api("GET", "runs", ids["long"])
    assert code == 200, run
    points = run["series"]["loss"]
    assert 100 <= len(points) <= 310, len(points)
    assert points[0] == [0, 0.0] and points[-1][0] == 4999
    assert min(value for _, value in points) == 0.0 and max(value for _, value in points) == pytest.approx(96 / 97)
    assert [step for step, _ in points] == sorted(step for step, _ in points)


async def test_a_failed_run_shows_its_exception_type_and_message(api, runs):
    ids = await run_ids(api)
    code, run = await api("GET", "runs", ids["broken"])
    assert code == 200 and run["status"] == "FAILED", run
    assert run["error"] == {"type": "ValueError", "message": "bad input shape (3, 2)",
                            "traceback": "error/traceback.txt"}
    assert "error/traceback.txt" in run["artifacts"]


async def fetch_artifact(jp_fetch, run_id: str, path: str, **extra: str):
    return await jp_fetch("nbmlops", "api", "runs", run_id, "artifact", params={"path": path, **extra},
                          raise_error=False)


async def test_artifacts_are_served_inline_only_as_images_and_text(api, jp_fetch, runs):
    ids = await run_ids(api)
    _, run = await api("GET", "runs", ids["epochs"])
    figure = next(path for path in run["artifacts"] if path.startswith("figures/") and path.endswith(".png"))
    assert {"plots/curve.svg", "report.html"} <= set(run["artifacts"])

    png = await fetch_artifact(jp_fetch, ids["epochs"], figure)
    assert png.code == 200 and png.body.startswith(PNG_MAGIC)
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["Content-Disposition"].startswith("inline")

    svg = await fetch_artifact(jp_fetch, ids["epochs"], "plots/curve.svg")
    assert svg.code == 200 and svg.body.decode() == SVG
    assert svg.headers["Content-Type"] == "image/svg+xml"
    assert svg.headers["Content-Disposition"].startswith("attachment")  # opened as a page, it downloads

    html = await fetch_artifact(jp_fetch, ids["epochs"], "report.html")
    assert html.code == 200 and html.body.decode() == HTML
    assert html.headers["Content-Type"] == "text/plain; charset=utf-8"  # shown as text, never as a page

    for answer in (png, svg, html):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        policy = answer.headers["Content-Security-Policy"]
        assert "sandbox" in policy and "default-src 'none'" in policy and "script-src" not in policy

    download = await fetch_artifact(jp_fetch, ids["epochs"], figure, download="1")
    assert download.code == 200 and download.headers["Content-Disposition"].startswith("attachment")

    traceback = await fetch_artifact(jp_fetch, ids["broken"], "error/traceback.txt")
    assert traceback.code == 200 and b"ValueError: bad input shape" in traceback.body


@pytest.mark.parametrize(("path", "reason"), [
    ("../epochs/report.html", "'..'"),
    ("plots/../../x.txt", "'..'"),
    ("/etc/passwd", "absolute"),
    ("file:///etc/passwd", "absolute"),
    ("plots\\..\\report.html", "backslash"),
    ("%2e%2e/report.html", "double encoding"),
    ("", "required"),
])
async def test_artifact_paths_outside_the_run_are_refused(api, jp_fetch, runs, path, reason):
    ids = await run_ids(api)
    answer = await fetch_artifact(jp_fetch, ids["epochs"], path)
    assert answer.code == 400, answer.body
    assert reason in answer.body.decode()


async def test_only_the_runs_own_artifacts_are_served(api, jp_fetch, runs):
    ids = await run_ids(api)
    # the HTML report is an artifact of "epochs", not of "broken": asked through "broken" it does not exist
    assert (await fetch_artifact(jp_fetch, ids["broken"], "report.html")).code == 404
    assert (await fetch_artifact(jp_fetch, ids["epochs"], "plots")).code == 404  # a folder is not a file
    assert (await fetch_artifact(jp_fetch, ids["epochs"], "nothing/here.png")).code == 404
    assert (await fetch_artifact(jp_fetch, "0" * 32, "report.html")).code == 404
    assert (await fetch_artifact(jp_fetch, "NOT-A-RUN", "report.html")).code == 400


async def test_an_encoded_traversal_in_the_raw_query_is_refused(api, http_server_client, jp_auth_header,
                                                                jp_base_url, runs):
    ids = await run_ids(api)
    for raw in ("..%2Freport.html", "%252e%252e%252Freport.html", "%2Fetc%2Fpasswd"):
        url = f"{jp_base_url}nbmlops/api/runs/{ids['epochs']}/artifact?path={raw}"
        answer = await http_server_client.fetch(url, headers=jp_auth_header, raise_error=False)
        assert answer.code == 400, (raw, answer.body)


async def test_artifacts_need_an_authenticated_request(api, http_server_client, jp_base_url, runs):
    ids = await run_ids(api)
    query = urllib.parse.urlencode({"path": "report.html"})
    url = f"{jp_base_url}nbmlops/api/runs/{ids['epochs']}/artifact?{query}"
    answer = await http_server_client.fetch(url, raise_error=False)
    assert answer.code in (401, 403), answer.code
    assert HTML.encode() not in (answer.body or b"")

