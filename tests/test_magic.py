"""%%track in a real IPython shell, read back from a real MLflow sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import nbmlops
from nbmlops.tracking.query import kernel_history
from tests.conftest import runs_of


def _run(shell, line: str, cell: str):
    return shell.run_cell_magic("track", line, cell)


def _only_run(client, request):
    nbmlops.flush(60)
    runs = runs_of(client, request.node.name)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def test_literal_assignments_are_params_and_computed_numbers_are_metrics(shell, client, request):
    value = _run(
        shell,
        "",
        "alpha = 0.5\nlayers = [64, 32]\nname = 'ridge'\nneg = -3\nacc = alpha * 1.5\nn = len(layers)\nflag = acc > 0\nacc",
    )
    assert value == 0.75
    run = _only_run(client, request)
    assert run.data.params == {"alpha": "0.5", "layers": "[64, 32]", "name": "ridge", "neg": "-3"}
    assert run.data.metrics == {"acc": 0.75, "n": 2.0}
    assert run.info.status == "FINISHED"
    assert run.data.tags["nbmlops.kind"] == "cell"


def test_loop_variables_functions_and_private_names_are_not_captured(shell, client, request):
    """A number bound only inside a loop is its last iteration's value: no metric (a series of it is)."""
    _run(
        shell,
        "",
        "for epoch in range(3):\n    loss = 1 / (epoch + 1)\n"
        "def f():\n    inner = 5\n    return inner\n_hidden = 9.0\ntotal = 0\ntotal += 4",
    )
    run = _only_run(client, request)
    assert run.data.metrics == {"total": 4.0}
    assert run.data.params == {}


def test_named_params_metrics_and_explicit_series(shell, client, request):
    shell.run_cell("config = {'lr': 0.01}\nimport numpy as np\nimport nbmlops")
    _run(
        shell,
        "--params config --metrics best",
        "best = np.float32(0.25)\nfor step in range(4):\n    nbmlops.log_metric('loss', 1.0 / (step + 1))",
    )
    run = _only_run(client, request)
    assert run.data.params["config"] == "{'lr': 0.01}"
    assert run.data.metrics["best"] == 0.25
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3)), (3, 0.25)]


def test_sklearn_estimator_params_are_prefixed_by_variable_name(shell, client, request):
    shell.run_cell("import nbmlops\nfrom sklearn.linear_model import LogisticRegression")
    _run(shell, "", "clf = LogisticRegression(C=0.3, max_iter=50)")
    run = _only_run(client, request)
    assert run.data.params["clf.C"] == "0.3"
    assert run.data.params["clf.max_iter"] == "50"


def test_dataframes_read_by_the_cell_are_logged_as_dataset_inputs_with_full_fingerprint(shell, client, request):
    shell.run_cell("import pandas as pd\nimport numpy as np\ndf = pd.DataFrame({'x': np.arange(20000.0), 'y': ['a'] * 20000})\nunused = pd.DataFrame({'z': [1]})")
    _run(shell, "", "mean_x = float(df['x'].mean())")
    run = _only_run(client, request)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"df"}
    dataset = inputs["df"].dataset
    assert dataset.digest == nbmlops.fingerprint(shell.user_ns["df"])
    assert len(dataset.digest) == 32
    profile = json.loads(dataset.profile)
    assert profile["num_rows"] == 20000
    assert json.loads(dataset.schema)["mlflow_colspec"][0]["name"] == "x"
    assert {t.key: t.value for t in inputs["df"].tags}["mlflow.data.context"] == "input"


def test_failing_cell_is_failed_with_error_tags_and_traceback_and_reraises_unchanged(shell, client, request):
    class Boom(Exception):
        pass

    shell.user_ns["Boom"] = Boom
    with pytest.raises(Boom) as caught:
        _run(shell, "", "alpha = 1\nraise Boom('it broke')")
    assert str(caught.value) == "it broke"
    run = _only_run(client, request)
    assert run.info.status == "FAILED"
    assert run.data.tags["nbmlops.error.type"] == "Boom"
    assert run.data.tags["nbmlops.error.message"] == "it broke"
    text = Path(client.download_artifacts(run.info.run_id, "error/traceback.txt")).read_text()
    assert "it broke" in text and "Boom" in text


def test_keyboard_interrupt_marks_run_killed(shell, client, request):
    with pytest.raises(KeyboardInterrupt):
        _run(shell, "", "raise KeyboardInterrupt")
    assert _only_run(client, request).info.status == "KILLED"


def test_run_cell_shows_users_own_error_and_summary(shell, client, request, capsys):
    result = shell.run_cell("%%track\nx = 1\n1 / 0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    out = capsys.readouterr().out
    assert "ZeroDivisionError" in out and "[FAILED]" in out
    assert _only_run(client, request).info.status == "FAILED"


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("--tag nokeyvalue", "--tag nokeyvalue"),
        ("--params 1abc", "--params"),
        ("--no-capture nonsense", "--no-capture"),
    ],
)
def test_bad_options_raise_usage_error_and_neither_run_nor_execute(shell, client, request, line, fragment):
    shell.user_ns["touched"] = False
    with pytest.raises(UsageError, match=fragment.replace("-", r"\-")):
        _run(shell, line, "touched = True")
    assert shell.user_ns["touched"] is False
    nbmlops.flush(30)
    assert runs_of(client, request.node.name) == []


def test_name_tags_and_experiment_options(shell, client, request):
    experiment = request.node.name + "-other"
    _run(shell, f"--name 'my run' --tag team=vision --tag stage=dev --tag 'note=two words' --experiment {experiment}", "a = 1")
    nbmlops.flush(60)
    (run,) = runs_of(client, experiment)
    assert run.info.run_name == "my run"
    assert run.data.tags["team"] == "vision" and run.data.tags["stage"] == "dev"
    assert run.data.tags["note"] == "two words"


def test_no_capture_turns_off_automatic_capture_but_keeps_named_values(shell, client, request):
    _run(shell, "--no-capture --metrics acc", "alpha = 0.5\nacc = alpha * 2\nother = acc + 1")
    run = _only_run(client, request)
    assert run.data.params == {}
    assert run.data.metrics == {"acc": 1.0}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == []


def test_code_history_and_summary_delta_against_previous_run_of_same_cell(shell, client, request, capsys):
    shell.run_cell("seed = 1", store_history=True)
    shell.run_cell("%%track --name same\nacc = seed * 0.5", store_history=True)
    shell.run_cell("%%track --name same\nacc = seed * 0.75", store_history=True)
    out = capsys.readouterr().out
    assert "acc=0.75 (+0.25)" in out
    nbmlops.flush(60)
    first, second = runs_of(client, request.node.name)
    assert Path(client.download_artifacts(second.info.run_id, "code/cell.py")).read_text() == "acc = seed * 0.75\n"
    history = kernel_history(client.tracking_uri, second.info.run_id)
    sources = [h["source"] for h in history]
    assert "seed = 1" in sources and sources[-1].startswith("%%track --name same\nacc = seed * 0.75")
    assert sources[-2].startswith("%%track --name same\nacc = seed * 0.5")
    # each run stores only what the kernel ran since the last tracked cell: the history is stored once
    own = json.loads(Path(client.download_artifacts(second.info.run_id, "code/history.json")).read_text())
    assert [cell["source"] for cell in own["cells"]] == sources[-1:]
    assert own["before"]["run_key"] == first.data.tags["nbmlops.run_key"]


def test_figures_produced_by_the_cell_are_artifacts(shell, client, request):
    shell.run_cell("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt")
    _run(shell, "", "fig = plt.figure()\nplt.plot([1, 2, 3])")
    run = _only_run(client, request)
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    assert len(figures) == 1 and figures[0].endswith(".png")
    assert Path(client.download_artifacts(run.info.run_id, figures[0])).read_bytes()[:4] == b"\x89PNG"
    shell.run_cell("plt.close('all')")


def test_planted_secret_reaches_no_param_tag_or_artifact(shell, client, request, monkeypatch, project):
    secret = "sk-live-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("SERVICE_API_TOKEN", secret)
    shell.run_cell(f"db_password = '{secret}'")
    with pytest.raises(RuntimeError):
        _run(
            shell,
            f"--tag api_key={secret} --params db_password url",
            f"api_key = '{secret}'\nurl = 'postgresql://bob:{secret}@db/x'\nraise RuntimeError('failed with ' + api_key)",
        )
    run = _only_run(client, request)
    assert secret not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    root = Path(client.download_artifacts(run.info.run_id, ""))
    texts = [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()]
    assert texts, "artifacts were stored"
    assert all(secret not in text for text in texts)
    journal = b"".join(p.read_bytes() for p in (project / ".nbmlops" / "journal").glob("*"))
    assert secret.encode() not in journal


def test_a_run_started_inside_a_tracked_cell_goes_to_the_cells_experiment(shell, client, request, monkeypatch):
    monkeypatch.delenv("NBMLOPS_EXPERIMENT")
    experiment = f"{request.node.name}-cell"
    _run(shell, f"--experiment {experiment}",
         "import nbmlops\nwith nbmlops.track('inner') as inner:\n    inner.log_metric('m', 1.0)")
    nbmlops.flush(60)
    runs = {r.info.run_name: r for r in runs_of(client, experiment)}
    assert len(runs) == 2 and "inner" in runs
    cell = next(r for name, r in runs.items() if name != "inner")
    assert runs["inner"].data.tags["mlflow.parentRunId"] == cell.info.run_id
