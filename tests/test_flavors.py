"""Models of other libraries than scikit-learn: XGBoost, LightGBM, CatBoost, statsmodels, a pyfunc ``PythonModel``.

Each test trains a real model in a ``%%track --register`` cell (or ``nbmlops.register``) on a dataset that ships
with scikit-learn, registers it in a real sqlite registry, loads it back through ``mlflow.pyfunc.load_model`` and
compares its predictions with the trained model's, promotes it through a gate, runs ``nbmlops monitor`` (a real
process) on shifted data (exit 5), and plants a pickle in a copy of its artifact, which loading refuses without
running it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import yaml

import nbmlops
from nbmlops.data import SnapshotStore
from nbmlops.registry import get_version
from nbmlops.registry.safe_load import SHA256_TAG, UnsafeModelError, check_model, model_digest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("statsmodels")

NBMLOPS = str(Path(sys.executable).with_name("nbmlops"))

CANCER = """
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X = X.iloc[:, :8]
X.columns = [c.replace(" ", "_") for c in X.columns]
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
"""


class _RunsOnLoad:
    """Unpickling this writes ``marker``: the code an attacker would plant in a copied artifact."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _name(request) -> str:
    return f"f-{request.node.name[:30]}-{uuid.uuid4().hex[:6]}"


def _stored(source: str) -> Path:
    return Path(unquote(urlparse(source).path))


def _train_in_cell(shell, name: str, training: str, metric: str = "accuracy = model.score(X_test, y_test)"):
    """Train ``model`` in a ``%%track --register model NAME`` cell; its training features are snapshotted."""
    shell.run_cell(CANCER)
    SnapshotStore().save(shell.user_ns["X_train"])
    result = shell.run_cell(f"%%track --register model {name}\n{training}\n{metric}")
    assert result.success, result.error_in_exec
    nbmlops.flush(120)
    return get_version(f"{name}/1")


def _pyfunc(version):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(_stored(version.source)))


def _promote_and_monitor(name: str, shifted, *options: str) -> subprocess.CompletedProcess:
    """Promote version 1 through a gate (a failing gate first), then monitor ``shifted`` data with the CLI."""
    from nbmlops.registry import PromotionRefused

    with pytest.raises(PromotionRefused):
        nbmlops.promote(f"{name}/1", "champion", gates=["accuracy >= 1.01"])
    promotion = nbmlops.promote(f"{name}/1", "champion", gates=["accuracy >= 0.8"])
    assert promotion.alias == "champion" and get_version(f"{name}@champion").version == 1
    shifted.to_csv("live.csv", index=False)
    return subprocess.run([NBMLOPS, "monitor", f"{name}@champion", "live.csv", *options], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))


def _assert_drifted_with_predictions(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 5, result.stdout + result.stderr
    assert "prediction" in result.stdout, result.stdout


def _shifted(X):
    return X + 3 * X.std()


def _plant_pickle(version, tmp_path: Path, flavor: str, data_key: str, **settings: str) -> Path:
    """A copy of the version's artifact whose model file is a pickle that writes a marker when loaded; its
    MLmodel file says so. Returns the marker."""
    copy = shutil.copytree(_stored(version.source), tmp_path / f"copy-{uuid.uuid4().hex[:6]}")
    marker = tmp_path / f"marker-{uuid.uuid4().hex[:6]}"
    mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
    old = mlmodel["flavors"][flavor][data_key]
    (copy / old).unlink()
    (copy / "model.pkl").write_bytes(pickle.dumps(_RunsOnLoad(marker)))
    mlmodel["flavors"][flavor].update({data_key: "model.pkl", **settings})
    if mlmodel["flavors"]["python_function"].get("data") == old:
        mlmodel["flavors"]["python_function"]["data"] = "model.pkl"
    (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(UnsafeModelError, match="SHA-256"):  # the copy is not what was logged
        check_model(copy, version, trusted=False)
    with pytest.raises(UnsafeModelError, match="SHA-256"):  # trust never covers a changed artifact
        check_model(copy, version, trusted=True)
    recorded = dataclasses.replace(version, tags={**version.tags, SHA256_TAG: model_digest(copy)})
    with pytest.raises(UnsafeModelError) as refused:  # even with its digest recorded: not a safe format
        check_model(copy, recorded, trusted=False)
    assert not marker.exists()
    return refused.value


def test_xgboost_classifier_registers_as_json_loads_through_pyfunc_promotes_and_monitors(shell, request, tmp_path):
    name = _name(request)
    version = _train_in_cell(shell, name, "from xgboost import XGBClassifier\n"
                                          "model = XGBClassifier(n_estimators=20, max_depth=3).fit(X_train, y_train)")
    assert version.tags["nbmlops.flavor"] == "xgboost"
    assert version.tags["nbmlops.model_class"] == "xgboost.sklearn.XGBClassifier"
    ns = shell.user_ns
    loaded = _pyfunc(version)
    conf = loaded.metadata.flavors["xgboost"]
    assert conf["model_format"] == "json" and conf["model_class"] == "xgboost.sklearn.XGBClassifier"
    assert loaded.metadata.signature.inputs.input_names() == list(ns["X_train"].columns)
    assert (np.asarray(loaded.predict(ns["X_test"])) == ns["model"].predict(ns["X_test"])).all()
    checked = check_model(_stored(version.source), version, trusted=False)
    assert checked.how == "pyfunc"
    assert (np.asarray(checked.load().predict(ns["X_test"])) == ns["model"].predict(ns["X_test"])).all()
    _assert_drifted_with_predictions(_promote_and_monitor(name, _shifted(ns["X_test"])))
    refused = _plant_pickle(version, tmp_path, "xgboost", "data", model_format="pickle")
    assert "xgboost" in str(refused)


def test_xgboost_booster_registered_from_python_round_trips(project, request):
    import xgboost
    from sklearn.datasets import load_diabetes

    name = _name(request)
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    booster = xgboost.train({"max_depth": 3}, xgboost.DMatrix(X, label=y), num_boost_round=15)
    with nbmlops.track("boost"):
        version = nbmlops.register(booster, name, training_data=X, timeout=120)
    loaded = _pyfunc(version)
    assert loaded.metadata.flavors["xgboost"]["model_class"] == "xgboost.core.Booster"
    np.testing.assert_allclose(np.asarray(loaded.predict(X)), booster.predict(xgboost.DMatrix(X)), rtol=1e-6)
    assert check_model(_stored(version.source), version, trusted=False).how == "pyfunc"


def test_lightgbm_classifier_registers_with_skops_loads_promotes_and_monitors(shell, request, tmp_path):
    name = _name(request)
    version = _train_in_cell(shell, name, "from lightgbm import LGBMClassifier\n"
                                          "model = LGBMClassifier(n_estimators=20, verbose=-1).fit(X_train, y_train)")
    assert version.tags["nbmlops.flavor"] == "lightgbm"
    ns = shell.user_ns
    loaded = _pyfunc(version)
    assert loaded.metadata.flavors["lightgbm"]["serialization_format"] == "skops"
    assert (np.asarray(loaded.predict(ns["X_test"])) == ns["model"].predict(ns["X_test"])).all()
    checked = check_model(_stored(version.source), version, trusted=False)
    assert checked.how == "skops" and "lightgbm.sklearn.LGBMClassifier" in checked.types
    assert (checked.load().predict(ns["X_test"]) == ns["model"].predict(ns["X_test"])).all()
    _assert_drifted_with_predictions(_promote_and_monitor(name, _shifted(ns["X_test"])))
    refused = _plant_pickle(version, tmp_path, "lightgbm", "data", serialization_format="cloudpickle")
    assert "cloudpickle" in str(refused)


def test_lightgbm_booster_registers_as_text_model_and_round_trips(shell, request, tmp_path):
    name = _name(request)
    version = _train_in_cell(
        shell, name, "import lightgbm\nmodel = lightgbm.train({'objective': 'binary', 'verbose': -1}, "
                     "lightgbm.Dataset(X_train, label=y_train), num_boost_round=20)",
        "accuracy = float(((model.predict(X_test) > 0.5) == y_test).mean())")
    ns = shell.user_ns
    loaded = _pyfunc(version)
    assert loaded.metadata.flavors["lightgbm"]["model_class"] == "lightgbm.basic.Booster"
    assert (_stored(version.source) / loaded.metadata.flavors["lightgbm"]["data"]).read_text().startswith("tree")
    np.testing.assert_allclose(np.asarray(loaded.predict(ns["X_test"])).ravel(), ns["model"].predict(ns["X_test"]))
    assert check_model(_stored(version.source), version, trusted=False).how == "pyfunc"
    _assert_drifted_with_predictions(_promote_and_monitor(name, _shifted(ns["X_test"])))
    _plant_pickle(version, tmp_path, "lightgbm", "data", model_class="lightgbm.sklearn.LGBMClassifier",
                  serialization_format="pickle")


@pytest.mark.parametrize(("library", "step", "step_type"), [
    ("xgboost", "XGBClassifier(n_estimators=20, max_depth=3)", "xgboost.sklearn.XGBClassifier"),
    ("catboost", "CatBoostClassifier(iterations=20, depth=3, verbose=0)", "catboost.core.CatBoostClassifier"),
])
def test_pipeline_with_a_boosting_final_step_round_trips_through_skops(shell, request, tmp_path, library, step,
                                                                       step_type):
    pytest.importorskip(library)
    name = _name(request)
    version = _train_in_cell(
        shell, name, "from sklearn.pipeline import make_pipeline\nfrom sklearn.preprocessing import StandardScaler\n"
                     f"from {library} import {step.split('(')[0]}\nmodel = make_pipeline(StandardScaler(), "
                     f"{step}).fit(X_train, y_train)")
    assert version.tags["nbmlops.flavor"] == "sklearn"
    ns = shell.user_ns
    loaded = _pyfunc(version)
    assert loaded.metadata.flavors["sklearn"]["serialization_format"] == "skops"
    assert (np.asarray(loaded.predict(ns["X_test"])) == ns["model"].predict(ns["X_test"])).all()
    checked = check_model(_stored(version.source), version, trusted=False)
    assert checked.how == "skops" and step_type in checked.types
    assert (checked.load().predict(ns["X_test"]) == ns["model"].predict(ns["X_test"])).all()
    _assert_drifted_with_predictions(_promote_and_monitor(name, _shifted(ns["X_test"])))
    _plant_pickle(version, tmp_path, "sklearn", "pickled_model", serialization_format="cloudpickle")


def test_catboost_classifier_registers_as_cbm_loads_through_pyfunc_promotes_and_monitors(shell, request, tmp_path):
    pytest.importorskip("catboost")
    name = _name(request)
    version = _train_in_cell(shell, name, "from catboost import CatBoostClassifier\n"
                                          "model = CatBoostClassifier(iterations=30, depth=3, verbose=0)"
                                          ".fit(X_train, y_train)")
    assert version.tags["nbmlops.flavor"] == "catboost"
    assert version.tags["nbmlops.model_class"] == "catboost.core.CatBoostClassifier"
    assert version.tags["nbmlops.data.training"] and version.tags["nbmlops.data.features"]
    ns = shell.user_ns
    loaded = _pyfunc(version)
    conf = loaded.metadata.flavors["catboost"]
    assert conf["save_format"] == "cbm" and conf["model_type"] == "CatBoostClassifier"
    assert (_stored(version.source) / conf["data"]).read_bytes()[:4] == b"CBM1"  # CatBoost's own format
    assert loaded.metadata.signature.inputs.input_names() == list(ns["X_train"].columns)
    assert (np.asarray(loaded.predict(ns["X_test"])).ravel() == ns["model"].predict(ns["X_test"])).all()
    checked = check_model(_stored(version.source), version, trusted=False)
    assert checked.how == "pyfunc"
    assert (np.asarray(checked.load().predict(ns["X_test"])).ravel() == ns["model"].predict(ns["X_test"])).all()
    _assert_drifted_with_predictions(_promote_and_monitor(name, _shifted(ns["X_test"])))
    refused = _plant_pickle(version, tmp_path, "catboost", "data", save_format="pickle")
    assert "catboost" in str(refused)


def test_a_pickle_planted_as_a_catboost_cbm_file_is_read_by_catboost_and_never_unpickled(shell, request, tmp_path):
    pytest.importorskip("catboost")
    name = _name(request)
    version = _train_in_cell(shell, name, "from catboost import CatBoostClassifier\n"
                                          "model = CatBoostClassifier(iterations=5, verbose=0).fit(X_train, y_train)")
    copy = shutil.copytree(_stored(version.source), tmp_path / "copy")
    marker = tmp_path / "marker"
    data = yaml.safe_load((copy / "MLmodel").read_text())["flavors"]["catboost"]["data"]
    (copy / data).write_bytes(pickle.dumps(_RunsOnLoad(marker)))
    recorded = dataclasses.replace(version, tags={**version.tags, SHA256_TAG: model_digest(copy)})
    checked = check_model(copy, recorded, trusted=False)  # the MLmodel file is as logged: CatBoost's loader reads it
    assert checked.how == "pyfunc"
    with pytest.raises(Exception, match=r"Incorrect model file descriptor"):  # CatBoost's parser, not pickle
        checked.load()
    assert not marker.exists()


def test_catboost_regressor_and_a_trained_catboost_registered_from_python_round_trip(project, request):
    catboost = pytest.importorskip("catboost")
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    regressor = catboost.CatBoostRegressor(iterations=20, depth=3, verbose=0).fit(X, y)
    trained = catboost.train(catboost.Pool(X, y), {"iterations": 15, "depth": 2, "verbose": 0})
    for model, model_type in ((regressor, "CatBoostRegressor"), (trained, "CatBoost")):
        name = _name(request)
        with nbmlops.track("boost"):
            version = nbmlops.register(model, name, training_data=X, timeout=120)
        assert version.tags["nbmlops.model_class"] == f"catboost.core.{model_type}"
        loaded = _pyfunc(version)
        assert loaded.metadata.flavors["catboost"]["model_type"] == model_type
        np.testing.assert_allclose(np.asarray(loaded.predict(X)).ravel(), model.predict(X), rtol=1e-6)
        checked = check_model(_stored(version.source), version, trusted=False)
        assert checked.how == "pyfunc"
        np.testing.assert_allclose(np.asarray(checked.load().predict(X)).ravel(), model.predict(X), rtol=1e-6)


def test_statsmodels_results_register_but_load_only_when_trusted(shell, request, tmp_path):
    name = _name(request)
    version = _train_in_cell(
        shell, name, "import statsmodels.api as sm\nmodel = sm.Logit(y_train, X_train).fit(disp=0)",
        "accuracy = float(((model.predict(X_test) > 0.5) == y_test).mean())")
    assert version.tags["nbmlops.flavor"] == "statsmodels"
    ns = shell.user_ns
    with pytest.raises(UnsafeModelError, match="statsmodels"):
        check_model(_stored(version.source), version, trusted=False)
    loaded = _pyfunc(version)
    np.testing.assert_allclose(np.asarray(loaded.predict(ns["X_test"])).ravel(), ns["model"].predict(ns["X_test"]))
    refused = _promote_and_monitor(name, _shifted(ns["X_test"]))
    assert refused.returncode == 2 and "statsmodels" in refused.stderr and "Traceback" not in refused.stderr
    trusted = subprocess.run([NBMLOPS, "monitor", f"{name}@champion", "live.csv", "--trust-pickle"],
                             capture_output=True, text=True, timeout=300)
    _assert_drifted_with_predictions(trusted)


def test_pyfunc_python_model_registers_and_loads_only_when_trusted(shell, request):
    name = _name(request)
    shell.run_cell(CANCER)
    result = shell.run_cell(
        "import mlflow.pyfunc\nimport nbmlops\nclass Threshold(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return (model_input['mean_radius'] > 14).astype(int)\n"
        f"model = Threshold()\nwith nbmlops.track('rule'):\n"
        f"    version = nbmlops.register(model, {name!r}, training_data=X_train, timeout=120)\n")
    assert result.success, result.error_in_exec
    version = shell.user_ns["version"]
    assert version.tags["nbmlops.flavor"] == "pyfunc"
    X_test = shell.user_ns["X_test"]
    assert (np.asarray(_pyfunc(version).predict(X_test)) == (X_test["mean_radius"] > 14).astype(int)).all()
    with pytest.raises(UnsafeModelError, match="pyfunc"):
        check_model(_stored(version.source), version, trusted=False)
    checked = check_model(_stored(version.source), version, trusted=True)
    assert (np.asarray(checked.load().predict(X_test)) == (X_test["mean_radius"] > 14).astype(int)).all()


def test_an_object_of_no_supported_library_is_refused_naming_its_type_and_the_supported_ones(project):
    from nbmlops.registry import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"collections.OrderedDict: .*XGBoost, LightGBM and CatBoost "
                       r"models, statsmodels results and mlflow.pyfunc.PythonModel"):
        nbmlops.register(__import__("collections").OrderedDict(), "nothing")


# -- reproduce: the registered version's predictions against the original's ----------------------------------------

_PLAIN = "--no-capture metrics"  # the model's predictions are what is compared


def _registering_cell_run(shell, client, request, name: str, model: str):
    from tests.conftest import runs_of

    shell.run_cell(CANCER, store_history=True)
    SnapshotStore().save(shell.user_ns["X_train"])
    shell.run_cell(f"%%track {_PLAIN} --register model {name}\nimport os\nfrom xgboost import XGBClassifier\n"
                   f"model = {model}.fit(X_train, y_train)", store_history=True)
    nbmlops.flush(120)
    (original,) = runs_of(client, request.node.name)
    return original


def test_reproducing_an_xgboost_cell_compares_the_new_versions_predictions_and_they_match(shell, client, request):
    from nbmlops.runner.reproduce import format_report, reproduce

    name = _name(request)
    original = _registering_cell_run(shell, client, request, name, "XGBClassifier(n_estimators=20, random_state=3)")

    result = reproduce(original.info.run_id, register=True)

    assert result.registered == (f"{name}/2",), format_report(result)
    (compared,) = result.predictions
    assert (compared.original, compared.new, compared.compared) == (f"{name}/1", f"{name}/2", True), compared
    assert compared.difference is None and compared.rows == len(shell.user_ns["X_train"])
    assert result.reproduced and result.compared == 1, format_report(result)
    assert f"predictions of {name}/2 match {name}/1's" in format_report(result)


def test_reproducing_an_unseeded_xgboost_cell_finds_its_predictions_differ(shell, client, request):
    from nbmlops.runner.reproduce import NOT_REPRODUCED, format_report, reproduce

    name = _name(request)
    original = _registering_cell_run(
        shell, client, request, name,
        "XGBClassifier(n_estimators=20, subsample=0.3, colsample_bytree=0.3, "
        "random_state=int.from_bytes(os.urandom(4), 'little'))")

    result = reproduce(original.info.run_id, register=True)

    assert result.verdict == NOT_REPRODUCED, format_report(result)
    assert result.first_difference.startswith(f"model {name}/2: ") and "predictions differ" in result.first_difference


def test_loading_a_model_whose_library_is_missing_names_the_extra_to_install(project, request, tmp_path):
    import xgboost
    from sklearn.datasets import load_diabetes

    name = _name(request)
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    SnapshotStore().save(X)
    with nbmlops.track("boost"):
        nbmlops.register(xgboost.XGBRegressor(n_estimators=5).fit(X, y), name, training_data=X, timeout=120)
    X.to_csv("live.csv", index=False)
    missing = tmp_path / "without-xgboost" / "xgboost"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('No module named xgboost')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(missing.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([NBMLOPS, "monitor", f"{name}/1", "live.csv"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "pip install 'nbmlops[xgboost]'" in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_pipeline_with_an_xgboost_final_step_and_an_untrusted_function_is_refused_naming_that_function(
    shell, request
):
    name = _name(request)
    version = _train_in_cell(
        shell, name, "from sklearn.pipeline import make_pipeline\nfrom sklearn.preprocessing import FunctionTransformer\n"
                     "from xgboost import XGBClassifier\nimport operator\n"
                     "model = make_pipeline(FunctionTransformer(operator.neg), XGBClassifier(n_estimators=5))"
                     ".fit(X_train, y_train)")
    with pytest.raises(UnsafeModelError, match=r"operator\.neg") as refused:
        check_model(_stored(version.source), version, trusted=False)
    assert "xgboost" not in str(refused.value)  # the boosting types are trusted: only the function blocks it
    checked = check_model(_stored(version.source), version, trusted=True)
    ns = shell.user_ns
    assert (checked.load().predict(ns["X_test"]) == ns["model"].predict(ns["X_test"])).all()


def test_a_pipeline_with_a_catboost_final_step_and_an_untrusted_function_is_refused_naming_that_function(
    shell, request
):
    pytest.importorskip("catboost")
    name = _name(request)
    version = _train_in_cell(
        shell, name, "from sklearn.pipeline import make_pipeline\nfrom sklearn.preprocessing import FunctionTransformer\n"
                     "from catboost import CatBoostClassifier\nimport operator\n"
                     "model = make_pipeline(FunctionTransformer(operator.neg), CatBoostClassifier(iterations=5, "
                     "verbose=0)).fit(X_train, y_train)")
    with pytest.raises(UnsafeModelError, match=r"operator\.neg") as refused:
        check_model(_stored(version.source), version, trusted=False)
    assert "catboost" not in str(refused.value)  # the CatBoost types are trusted: only the function blocks it
    checked = check_model(_stored(version.source), version, trusted=True)
    ns = shell.user_ns
    assert (checked.load().predict(ns["X_test"]) == ns["model"].predict(ns["X_test"])).all()


def test_loading_a_catboost_model_or_pipeline_without_catboost_names_the_extra_to_install(project, request, tmp_path):
    catboost = pytest.importorskip("catboost")
    from sklearn.datasets import load_diabetes
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    SnapshotStore().save(X)
    names = [_name(request), _name(request)]
    with nbmlops.track("boost"):
        nbmlops.register(catboost.CatBoostRegressor(iterations=5, verbose=0).fit(X, y), names[0], training_data=X,
                         timeout=120)
        nbmlops.register(make_pipeline(StandardScaler(), catboost.CatBoostRegressor(iterations=5, verbose=0)).fit(X, y),
                         names[1], training_data=X, timeout=120)
    X.to_csv("live.csv", index=False)
    missing = tmp_path / "without-catboost" / "catboost"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('No module named catboost')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(missing.parent), os.environ.get("PYTHONPATH", "")])}
    for name in names:
        result = subprocess.run([NBMLOPS, "monitor", f"{name}/1", "live.csv"], capture_output=True, text=True,
                                timeout=300, env=env)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "pip install 'nbmlops[catboost]'" in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_catboost_model_never_fitted_is_refused_in_one_line(project, request):
    catboost = pytest.importorskip("catboost")
    from nbmlops.registry import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"cannot register a catboost\.core\.CatBoostClassifier: catboost "
                       r"cannot save it: CatBoostError"):
        nbmlops.register(catboost.CatBoostClassifier(), _name(request))


def test_an_xgboost_model_never_fitted_is_refused_in_one_line(project, request):
    from xgboost import XGBClassifier

    from nbmlops.registry import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"cannot register a xgboost\.sklearn\.XGBClassifier: xgboost cannot"):
        nbmlops.register(XGBClassifier(), _name(request))
