"""The capture rules of %%track on code shapes beyond the corpus, in a real IPython shell and a real store."""

from __future__ import annotations

import pytest

import nbmlops
from nbmlops.tracking.summary import Summary, sparkline
from tests.conftest import runs_of


def _track(shell, client, request, cell: str, line: str = ""):
    """Run ``cell`` as a %%track cell; the run it made, with each metric's full history."""
    shell.run_cell_magic("track", line, cell)
    nbmlops.flush(60)
    runs = runs_of(client, request.node.name)
    run = runs[0]
    history = {
        key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
    }
    datasets = {(d.dataset.name, d.tags[0].value): d.dataset.digest for d in run.inputs.dataset_inputs}
    return run, history, datasets


def test_rebinding_then_reading_records_the_value_at_start_as_input_and_the_new_one_as_output(shell, client, request):
    shell.run_cell("import numpy as np\nscore_base = np.arange(5.0)\nframe = np.ones((20, 3))")
    before = nbmlops.fingerprint(shell.user_ns["frame"])
    _, metrics, datasets = _track(shell, client, request, "frame = frame * 2\nm = float(frame.mean())")
    assert datasets[("frame", "input")] == before
    assert datasets[("frame", "output")] == nbmlops.fingerprint(shell.user_ns["frame"]) != before
    assert metrics == {"m": [2.0]}


def test_a_name_bound_before_it_is_read_is_no_input(shell, client, request):
    shell.run_cell("import numpy as np\nscore = np.zeros(3)")
    _, metrics, datasets = _track(shell, client, request, "score = np.arange(5.0) * 10\nm = float(score.mean())")
    assert ("score", "input") not in datasets
    assert metrics["m"] == [20.0]


def test_a_loop_over_epochs_of_one_model_is_no_sweep(shell, client, request):
    shell.run_cell("import nbmlops\nfrom sklearn.linear_model import SGDClassifier, Ridge\nimport numpy as np\n"
                   "X = np.random.RandomState(0).rand(40, 2)\ny = (X[:, 0] > 0.5).astype(int)")
    run, _, _ = _track(
        shell,
        client,
        request,
        "sgd = SGDClassifier(random_state=0)\n"
        "for epoch in range(5):\n    sgd.partial_fit(X, y, classes=[0, 1])\n"
        "    nbmlops.log_metric('acc', sgd.score(X, y), step=epoch)\n"
        "for step in range(3):\n    ridge = Ridge(alpha=1.0).fit(X, y)\n"
        "    nbmlops.log_metric('r2', ridge.score(X, y), step=step)\n"
        "for depth in range(1, 4):\n    Ridge(alpha=depth).fit(X, y)",
    )
    assert "epoch" not in run.data.params and "step" not in run.data.params  # steps of training, not values tried
    assert run.data.params["depth"] == "[1, 2, 3]"  # a value that reaches the model is swept


def test_enumerated_sweeps_comprehensions_and_walrus(shell, client, request):
    shell.run_cell("from sklearn.linear_model import Ridge\nimport numpy as np\nX = np.random.RandomState(0).rand(30, 2)\n"
                   "y = X @ [1.0, 2.0]")
    run, metrics, datasets = _track(
        shell,
        client,
        request,
        "alphas = [0.1, 1.0, 10.0]\nr2 = []\n"
        "for i, alpha in enumerate(alphas):\n    fitted = Ridge(alpha=alpha).fit(X, y)\n    r2.append(fitted.score(X, y))\n"
        "squares = [a * a for a in alphas]\nif (best := max(r2)) > 0:\n    note = 'ok'",
    )
    assert run.data.params["alphas"] == "[0.1, 1.0, 10.0]"
    assert run.data.params["alpha"] == "[0.1, 1.0, 10.0]"  # the sweep, named by the loop variable
    assert "fitted.alpha" not in run.data.params and "i" not in run.data.params
    assert len(metrics["r2"]) == 3 and metrics["best"] == [max(metrics["r2"])]
    assert "i" not in metrics and "a" not in metrics
    assert set(datasets) == {("X", "training"), ("y", "input")} or set(datasets) == {("X", "input"), ("y", "input")}


def test_styling_dicts_empty_containers_and_filled_containers_are_not_params(shell, client, request):
    run, _, _ = _track(
        shell,
        client,
        request,
        "colors = {'train': 'tab:blue', 'test': 'tab:orange'}\nlosses = []\nnames = ['a']\nnames.append('b')\n"
        "widths = {'a': 1, 'b': 2}\nlr = 1e-3",
    )
    assert run.data.params == {"widths": "{'a': 1, 'b': 2}", "lr": "0.001"}


def test_literal_built_arrays_are_params_and_large_ones_data(shell, client, request):
    shell.run_cell("import numpy as np")
    run, _, datasets = _track(
        shell, client, request, "gammas = np.logspace(-3, 2, 6)\ngrid = np.linspace(0, 1, 5000)\ndepths = np.arange(1, 4)"
    )
    assert run.data.params["gammas"] == "[0.001, 0.01, 0.1, 1.0, 10.0, 100.0]"
    assert run.data.params["depths"] == "[1, 2, 3]"
    assert ("grid", "output") in datasets and "grid" not in run.data.params


def test_cross_validate_dict_search_objects_and_numpy_scalars(shell, client, request):
    shell.run_cell(
        "import numpy as np\nfrom sklearn.datasets import load_iris\nfrom sklearn.model_selection import cross_validate, "
        "GridSearchCV\nfrom sklearn.tree import DecisionTreeClassifier\nX, y = load_iris(return_X_y=True)"
    )
    run, metrics, _ = _track(
        shell,
        client,
        request,
        "res = cross_validate(DecisionTreeClassifier(random_state=0), X, y, cv=3)\n"
        "search = GridSearchCV(DecisionTreeClassifier(random_state=0), {'max_depth': [1, 3]}, cv=3).fit(X, y)\n"
        "top = np.max(res['test_score'])",
    )
    assert {"res.test_score.mean", "res.test_score.std", "res.fit_time.mean", "search.best_score", "top"} <= set(metrics)
    assert run.data.params["search.best_params.max_depth"] == "3"
    assert "search.estimator" not in run.data.params and "nbmlops.nondeterministic" not in run.data.tags


def test_score_arrays_read_by_a_later_cell_are_not_training_data(shell, client, request):
    shell.run_cell("import numpy as np\ntrain_scores = np.array([[0.9, 0.8], [0.95, 0.9]])")
    shell.run_cell("from sklearn.model_selection import cross_val_score")
    _, metrics, datasets = _track(shell, client, request, "gap = float(train_scores.mean() - 0.5)")
    assert datasets == {} and metrics["gap"] == [pytest.approx(0.3875)]


def test_unseeded_draws_are_tagged_unless_the_session_set_a_seed(shell, client, request):
    shell.run_cell("import numpy as np\nimport random")
    run, _, _ = _track(shell, client, request, "noise = np.random.normal(size=3)\npick = random.random()", "--name a")
    tag = run.data.tags["nbmlops.nondeterministic"]
    assert "np.random.normal without a seed" in tag and "random.random without a seed" in tag
    shell.run_cell("np.random.seed(0)\nrandom.seed(0)", store_history=True)  # as a kernel runs a cell
    shell.run_cell_magic("track", "--name b", "noise = np.random.normal(size=3)\npick = random.random()")
    nbmlops.flush(60)
    seeded = [r for r in runs_of(client, request.node.name) if r.info.run_name == "b"]
    assert "nbmlops.nondeterministic" not in seeded[0].data.tags


def test_summary_shows_series_cuts_long_lists_and_notes_nondeterminism():
    summary = Summary(
        name="<b>cell</b>",
        experiment="e",
        status="FINISHED",
        duration_s=0.1,
        params={f"p{i}": str(i) for i in range(20)},
        metrics={"loss": 0.1, "acc": 0.9},
        series={"loss": [1.0, 0.5, 0.25, 0.1]},
        nondeterministic=["DecisionTreeClassifier() without random_state", "np.random.normal without a seed"],
    )
    text = summary.to_text()
    assert "loss=1 .. 0.1 (4 steps) " + sparkline([1.0, 0.5, 0.25, 0.1]) in text
    assert "p11=11 +8 more" in text and "p12" not in text
    assert "nondeterministic: DecisionTreeClassifier() without random_state (+1 more)" in text
    assert text.index("metrics:") < text.index("params:")
    page = summary.to_html()
    assert "&lt;b&gt;cell&lt;/b&gt;" in page and "+8 more params" in page and "4 steps" in page
    assert sparkline([0.0, 1.0]) == "\u2581\u2588" and sparkline([2.0, 2.0]) == "\u2581\u2581"


def test_boosting_models_left_at_random_state_none_use_their_fixed_seed_and_are_not_tagged(shell, client, request):
    shell.run_cell("from sklearn.datasets import load_breast_cancer\nfrom sklearn.ensemble import RandomForestClassifier\n"
                   "import lightgbm, xgboost\nX, y = load_breast_cancer(return_X_y=True)")
    run, _, _ = _track(shell, client, request,
                       "xgb = xgboost.XGBClassifier(n_estimators=5, subsample=0.5).fit(X, y)\n"
                       "lgbm = lightgbm.LGBMClassifier(n_estimators=5, subsample=0.5, subsample_freq=1, verbose=-1).fit(X, y)")
    assert "nbmlops.nondeterministic" not in run.data.tags, run.data.tags
    _track(shell, client, request, "forest = RandomForestClassifier(n_estimators=5).fit(X, y)", "--name forest")
    (forest,) = [r for r in runs_of(client, request.node.name) if r.info.run_name == "forest"]
    assert "RandomForestClassifier" in forest.data.tags["nbmlops.nondeterministic"]
