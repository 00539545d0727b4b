"""Training curves without logging code: the evaluation history XGBoost, LightGBM and CatBoost keep anyway becomes
metric series of a %%track cell, one step per boosting round, in a real IPython shell and a real store."""

from __future__ import annotations

import pytest

import nbmlops
from tests.conftest import runs_of

DATA = (
    "import warnings\n"
    "from sklearn.datasets import load_breast_cancer\n"
    "from sklearn.model_selection import train_test_split\n"
    "X, y = load_breast_cancer(return_X_y=True)\n"
    "X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)\n"
    "warnings.filterwarnings('ignore', message='.*eval_set.*')  # LightGBM >= 4.7 prefers eval_X/eval_y\n"
)


def _library(name: str, where: str = "the test extra installs it"):
    return pytest.importorskip(name, reason=f"{name} is not installed ({where})")


def _track(shell, client, request, cell: str):
    """Run ``cell`` as a %%track cell; its run and each metric's history as ``{key: [(step, value), ...]}``."""
    shell.run_cell(DATA).raise_error()
    shell.run_cell_magic("track", "", cell)
    nbmlops.flush(60)
    run = runs_of(client, request.node.name)[-1]
    assert run.info.status == "FINISHED"
    history = {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
    }
    return run, history


def _steps(points: list[tuple[int, float]]) -> list[int]:
    return [step for step, _ in points]


def test_xgboost_classifier_with_eval_set_gives_one_step_per_round_and_only_its_changed_params(shell, client, request):
    _library("xgboost")
    run, history = _track(
        shell, client, request,
        "import xgboost as xgb\n"
        "model = xgb.XGBClassifier(n_estimators=7, max_depth=3)\n"
        "model.fit(X_train, y_train, eval_set=[(X_train, y_train), (X_test, y_test)], verbose=False)\n",
    )
    kept = shell.user_ns["model"].evals_result()
    for eval_set in ("validation_0", "validation_1"):
        points = history[f"model.{eval_set}.logloss"]
        assert _steps(points) == list(range(7))
        assert [value for _, value in points] == pytest.approx(kept[eval_set]["logloss"])
    assert "model.best_iteration" not in history  # no early stopping, no best iteration
    assert run.data.params["model.n_estimators"] == "7" and run.data.params["model.max_depth"] == "3"
    assert not {"model.learning_rate", "model.missing", "model.booster", "model.objective"} & set(run.data.params)


def test_xgboost_early_stopping_records_the_best_iteration_and_the_rounds_run(shell, client, request):
    _library("xgboost")
    _, history = _track(
        shell, client, request,
        "import xgboost as xgb\n"
        "clf = xgb.XGBClassifier(n_estimators=300, learning_rate=0.3, early_stopping_rounds=3,\n"
        "                        eval_metric=['logloss', 'error@0.3'])\n"
        "clf.fit(X_train, y_train, eval_set=[(X_test, y_test)], verbose=False)\n",
    )
    model = shell.user_ns["clf"]
    rounds = len(model.evals_result()["validation_0"]["logloss"])
    assert rounds < 300
    assert history["clf.best_iteration"] == [(0, float(model.best_iteration))]
    assert _steps(history["clf.validation_0.logloss"]) == list(range(rounds))
    assert _steps(history["clf.validation_0.error_at_0.3"]) == list(range(rounds))  # `@` is no metric-name character


def test_xgboost_train_fills_the_dict_passed_as_evals_result_and_its_curve_is_logged(shell, client, request):
    _library("xgboost")
    run, history = _track(
        shell, client, request,
        "import xgboost as xgb\n"
        "params = {'max_depth': 2, 'objective': 'binary:logistic', 'eval_metric': 'auc'}\n"
        "history = {}\n"
        "booster = xgb.train(params, xgb.DMatrix(X_train, y_train), num_boost_round=5,\n"
        "                    evals=[(xgb.DMatrix(X_test, y_test), 'test')], evals_result=history, verbose_eval=False)\n",
    )
    assert _steps(history["history.test.auc"]) == list(range(5))
    assert [v for _, v in history["history.test.auc"]] == pytest.approx(shell.user_ns["history"]["test"]["auc"])
    assert "booster.best_iteration" not in history
    assert not [key for key in run.data.params if key.startswith("history")]


def test_lightgbm_classifier_with_eval_set_gives_one_step_per_round_and_only_its_changed_params(shell, client, request):
    _library("lightgbm")
    run, history = _track(
        shell, client, request,
        "import lightgbm as lgb\n"
        "model = lgb.LGBMClassifier(n_estimators=6, num_leaves=7, verbose=-1)\n"
        "model.fit(X_train, y_train, eval_set=[(X_test, y_test)])\n",
    )
    points = history["model.valid_0.binary_logloss"]
    assert _steps(points) == list(range(6))
    assert [v for _, v in points] == pytest.approx(shell.user_ns["model"].evals_result_["valid_0"]["binary_logloss"])
    assert "model.best_iteration" not in history  # LightGBM says 0: no early stopping
    assert {k: run.data.params[k] for k in ("model.n_estimators", "model.num_leaves", "model.verbose")} == {
        "model.n_estimators": "6", "model.num_leaves": "7", "model.verbose": "-1"}
    assert not {"model.learning_rate", "model.boosting_type", "model.max_depth"} & set(run.data.params)


def test_lightgbm_train_with_record_evaluation_and_early_stopping_logs_the_curve_and_best_iteration(
    shell, client, request
):
    _library("lightgbm")
    _, history = _track(
        shell, client, request,
        "import lightgbm as lgb\n"
        "evals = {}\n"
        "booster = lgb.train({'objective': 'binary', 'learning_rate': 0.5, 'verbose': -1},\n"
        "                    lgb.Dataset(X_train, y_train), num_boost_round=200,\n"
        "                    valid_sets=[lgb.Dataset(X_test, y_test)], valid_names=['test'],\n"
        "                    callbacks=[lgb.record_evaluation(evals), lgb.early_stopping(3, verbose=False)])\n",
    )
    rounds = len(shell.user_ns["evals"]["test"]["binary_logloss"])
    assert rounds < 200
    assert _steps(history["evals.test.binary_logloss"]) == list(range(rounds))
    assert history["booster.best_iteration"] == [(0, float(shell.user_ns["booster"].best_iteration))]


def test_catboost_classifier_with_eval_set_gives_one_step_per_iteration_and_only_the_params_it_was_given(
    shell, client, request
):
    _library("catboost")
    run, history = _track(
        shell, client, request,
        "import catboost as cb\n"
        "model = cb.CatBoostClassifier(iterations=7, depth=3, verbose=0)\n"
        "model.fit(X_train, y_train, eval_set=(X_test, y_test))\n",
    )
    model = shell.user_ns["model"]
    kept = model.get_evals_result()
    for eval_set in ("learn", "validation"):  # CatBoost also keeps the training set's loss
        points = history[f"model.{eval_set}.Logloss"]
        assert _steps(points) == list(range(7))
        assert [value for _, value in points] == pytest.approx(kept[eval_set]["Logloss"])
    assert history["model.best_iteration"] == [(0, float(model.best_iteration_))]  # from 0, as CatBoost counts
    assert {key for key in run.data.params if key.startswith("model.")} == {
        "model.iterations", "model.depth", "model.verbose"}  # CatBoost's get_params: only what was set
    assert (run.data.params["model.iterations"], run.data.params["model.depth"]) == ("7", "3")


def test_catboost_early_stopping_on_two_eval_sets_logs_each_set_and_the_best_iteration(shell, client, request):
    _library("catboost")
    _, history = _track(
        shell, client, request,
        "import catboost as cb\n"
        "clf = cb.CatBoostClassifier(iterations=500, learning_rate=0.5, early_stopping_rounds=3, eval_metric='AUC',\n"
        "                            verbose=0)\n"
        "clf.fit(X_train, y_train, eval_set=[(X_test[:70], y_test[:70]), (X_test[70:], y_test[70:])])\n",
    )
    model = shell.user_ns["clf"]
    rounds = len(model.get_evals_result()["validation_0"]["AUC"])
    assert rounds < 500
    for key in ("clf.learn.Logloss", "clf.validation_0.Logloss", "clf.validation_0.AUC", "clf.validation_1.AUC"):
        assert _steps(history[key]) == list(range(rounds)), key
    assert history["clf.best_iteration"] == [(0, float(model.best_iteration_))]


def test_a_catboost_model_evaluated_every_few_iterations_logs_no_curve_with_wrong_steps(shell, client, request):
    _library("catboost")
    run, history = _track(
        shell, client, request,
        "import catboost as cb\n"
        "model = cb.CatBoostClassifier(iterations=12, metric_period=5, verbose=0)\n"
        "model.fit(X_train, y_train, eval_set=(X_test, y_test))\n",
    )
    assert len(shell.user_ns["model"].get_evals_result()["validation"]["Logloss"]) == 4  # iterations 0, 5, 10, 11
    assert not [key for key in history if key.startswith("model.") and key != "model.best_iteration"]
    assert run.data.params["model.metric_period"] == "5"


def test_a_pipeline_whose_last_step_is_catboost_logs_that_steps_curve_under_the_pipelines_name(shell, client, request):
    _library("catboost")
    run, history = _track(
        shell, client, request,
        "import catboost as cb\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "pipe = make_pipeline(StandardScaler(), cb.CatBoostClassifier(iterations=5, depth=2, verbose=0))\n"
        "pipe.fit(X_train, y_train, catboostclassifier__eval_set=(X_test, y_test))\n",
    )
    assert _steps(history["pipe.validation.Logloss"]) == list(range(5))
    assert run.data.params["pipe.catboostclassifier__depth"] == "2"
    assert "pipe.catboostclassifier__learning_rate" not in run.data.params


def test_a_model_fitted_before_the_cell_gives_a_curve_only_when_the_cell_fits_it(shell, client, request):
    _library("xgboost")
    shell.run_cell(DATA + "import xgboost as xgb\n"
                   "model = xgb.XGBClassifier(n_estimators=4).fit(X_train, y_train, eval_set=[(X_test, y_test)])")
    _, history = _track(shell, client, request, "accuracy = float((model.predict(X_test) == y_test).mean())\n")
    assert set(history) == {"accuracy"}
    _, history = _track(shell, client, request,
                        "model.fit(X_train, y_train, eval_set=[(X_test, y_test)], verbose=False)\n")
    assert _steps(history["model.validation_0.logloss"]) == list(range(4))


def test_a_pipeline_whose_last_step_is_xgboost_logs_that_steps_curve_under_the_pipelines_name(shell, client, request):
    _library("xgboost")
    run, history = _track(
        shell, client, request,
        "import xgboost as xgb\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import FunctionTransformer\n"
        "pipe = make_pipeline(FunctionTransformer(), xgb.XGBClassifier(n_estimators=5, max_depth=2))\n"
        "pipe.fit(X_train, y_train, xgbclassifier__eval_set=[(X_test, y_test)], xgbclassifier__verbose=False)\n",
    )
    assert _steps(history["pipe.validation_0.logloss"]) == list(range(5))
    assert run.data.params["pipe.xgbclassifier__n_estimators"] == "5"
    assert "pipe.xgbclassifier__learning_rate" not in run.data.params


def test_a_history_that_cannot_be_read_costs_no_other_result_of_the_cell(shell, client, request, capfd):
    _library("lightgbm")
    _, history = _track(
        shell, client, request,
        "import lightgbm as lgb\n"
        "class Unreadable(dict):\n"
        "    def items(self):\n"
        "        raise RuntimeError('no items today')\n"
        "history = Unreadable()\n"
        "callback = lgb.record_evaluation(history)\n"
        "score = sum([0.25, 0.25])\n",
    )
    assert history == {"score": [(0, 0.5)]}
    assert "training curves not read: RuntimeError: no items today" in capfd.readouterr().err


def test_boosters_trained_in_a_loop_give_no_curve_but_the_one_trained_after_it_does(shell, client, request):
    _library("xgboost")
    _, history = _track(
        shell, client, request,
        "import xgboost as xgb\n"
        "for depth in (1, 2):\n"
        "    model = xgb.XGBClassifier(n_estimators=3, max_depth=depth)\n"
        "    model.fit(X_train, y_train, eval_set=[(X_test, y_test)], verbose=False)\n"
        "final = xgb.XGBClassifier(n_estimators=4, max_depth=2)\n"
        "final.fit(X_train, y_train, eval_set=[(X_test, y_test)], verbose=False)\n",
    )
    assert not [key for key in history if key.startswith("model.")]  # the last of several is not the cell's curve
    assert _steps(history["final.validation_0.logloss"]) == list(range(4))


def test_a_keras_model_fitted_in_the_cell_logs_one_step_per_epoch(shell, client, request):
    _library("keras", "no extra installs it: the Keras path runs where Keras and a backend are installed")
    _, history = _track(
        shell, client, request,
        "import keras\n"
        "net = keras.Sequential([keras.Input((30,)), keras.layers.Dense(1, activation='sigmoid')])\n"
        "net.compile(optimizer='sgd', loss='binary_crossentropy')\n"
        "fitted = net.fit(X_train / X_train.max(0), y_train, epochs=3, verbose=0,\n"
        "                 validation_data=(X_test / X_train.max(0), y_test))\n",
    )
    assert _steps(history["net.loss"]) == list(range(3))
    assert _steps(history["net.val_loss"]) == list(range(3))
    assert not [key for key in history if key.startswith("fitted.")]  # the same History, read once
