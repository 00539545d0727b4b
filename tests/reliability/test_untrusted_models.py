"""Item 1 of the trust issue: nbmlops never runs code that came from the registry.

Each test registers a real model in a real sqlite registry, tampers with what the artifact store holds, and runs
``nbmlops monitor`` as a real process: it must refuse in one line with exit 2, and the tampered model's code
(a pickle whose ``__reduce__`` writes a marker file) must never run. Trust (``--trust-pickle``, the
``trusted_models`` setting) lets a genuine pickle-based model load, never a changed one.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import yaml

import nbmlops
from nbmlops.data import SnapshotStore, fingerprint
from nbmlops.registry import get_version
from nbmlops.registry.models import FEATURES_TAG
from nbmlops.registry.safe_load import SHA256_TAG, UnsafeModelError, check_model, model_digest

NBMLOPS = str(Path(sys.executable).with_name("nbmlops"))


class _RunsOnLoad:
    """Unpickling this writes ``marker``: the code an attacker would put in a registry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _features(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.uniform(0, 10, n)})


def _register(model=None) -> tuple[str, Path]:
    """A model registered by nbmlops (training data snapshotted), and its directory in the artifact store."""
    from sklearn.linear_model import LogisticRegression

    name = f"trust-{uuid.uuid4().hex[:8]}"
    X = _features(500, 0)
    SnapshotStore().save(X)
    with nbmlops.track("train"):
        version = nbmlops.register((model or LogisticRegression()).fit(X, (X.a > 0).astype(int)), name,
                                   training_data=X, timeout=120)
    nbmlops.flush(60)
    _features(300, 1).to_csv("live.csv", index=False)
    return name, _stored(version.source)


def _stored(source: str) -> Path:
    return Path(unquote(urlparse(source).path))


def _monitor(name: str, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([NBMLOPS, "monitor", f"{name}/1", "live.csv", *options], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _assert_refused(result: subprocess.CompletedProcess, reason: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nbmlops: refusing to load ") and reason in lines[0], lines[0]


def _arm_with_pickle(folder: Path, marker: Path) -> None:
    """Replace the stored model by a pickle-flavor one whose unpickling writes ``marker``."""
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update(pickled_model="model.pkl", serialization_format="cloudpickle")
    mlmodel["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (folder / "model.skops").unlink()
    (folder / "model.pkl").write_bytes(pickle.dumps(_RunsOnLoad(marker)))


def _set_digest(client, name: str, folder: Path) -> None:
    """What an attacker who can also write the registry's tags does: record the tampered artifact's digest."""
    client.set_model_version_tag(name, "1", SHA256_TAG, model_digest(folder))


def test_a_pickle_swapped_into_a_registered_model_is_refused_and_its_code_never_runs(project, tmp_path):
    name, folder = _register()
    marker = tmp_path / "marker"
    _arm_with_pickle(folder, marker)
    _assert_refused(_monitor(name), "SHA-256")
    _assert_refused(_monitor(name, "--trust-pickle"), "SHA-256")  # trust never covers a changed artifact
    assert not marker.exists()
    import mlflow.pyfunc

    mlflow.pyfunc.load_model(str(shutil.copytree(folder, tmp_path / "copy")))  # what loading it used to do
    assert marker.read_text() == "ran"


def test_a_pickle_flavor_recorded_with_its_digest_is_refused_unless_trusted(project, client, tmp_path):
    name, folder = _register()
    marker = tmp_path / "marker"
    _arm_with_pickle(folder, marker)
    _set_digest(client, name, folder)
    _assert_refused(_monitor(name), "scikit-learn model serialized with cloudpickle")
    assert not marker.exists()


def test_an_mlmodel_path_leaving_the_model_directory_is_refused_trusted_or_not(project, client, tmp_path):
    name, folder = _register()
    outside = folder.parent / f"outside-{uuid.uuid4().hex[:6]}"
    outside.mkdir()
    shutil.move(folder / "model.skops", outside / "model.skops")
    text = (folder / "MLmodel").read_text().replace("model.skops", f"../{outside.name}/model.skops")
    (folder / "MLmodel").write_text(text)
    _set_digest(client, name, folder)
    _assert_refused(_monitor(name), "a path outside the model directory")
    _assert_refused(_monitor(name, "--trust-pickle"), "a path outside the model directory")
    (folder / "MLmodel").write_text(text.replace(f"../{outside.name}/model.skops", str(outside / "model.skops")))
    _set_digest(client, name, folder)
    _assert_refused(_monitor(name, "--trust-pickle"), "a path outside the model directory")


def test_changed_bytes_in_the_artifact_fail_the_sha256_check(project):
    name, folder = _register()
    untouched = _monitor(name)
    assert untouched.returncode == 0 and "[prediction]" in untouched.stdout  # the refusal below is the change's doing
    example = folder / "input_example.json"
    example.write_bytes(example.read_bytes().replace(b"0", b"1", 1))
    _assert_refused(_monitor(name), "SHA-256")
    _assert_refused(_monitor(name, "--trust-pickle"), "SHA-256")


def test_a_version_without_a_recorded_sha256_is_refused_unless_trusted(project, client):
    name, _ = _register()
    client.delete_model_version_tag(name, "1", SHA256_TAG)  # as a version registered before digests were kept
    _assert_refused(_monitor(name), "no SHA-256 of its artifact was recorded")
    result = _monitor(name, env={"NBMLOPS_TRUSTED_MODELS": f"other,{name}"})
    assert result.returncode == 0, result.stderr
    assert "no recorded SHA-256; loaded because it is trusted" in result.stdout and "[prediction]" in result.stdout
    (project / "pyproject.toml").write_text(f"[project]\nname = 'demo'\n[tool.nbmlops]\ntrusted-models = [{name!r}]\n")
    assert _monitor(name).returncode == 0


def test_skops_types_outside_nbmlops_list_are_refused_unless_trusted(project):
    import operator

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    name, _ = _register(make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()))
    _assert_refused(_monitor(name), "types nbmlops does not trust: _operator.neg")
    result = _monitor(name, "--trust-pickle")
    assert result.returncode == 0, result.stderr
    assert "[prediction]" in result.stdout  # loaded and scored


def test_a_genuine_pickle_flavor_model_loads_only_when_trusted(project, client, tmp_path):
    import mlflow.sklearn
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import infer_signature
    from sklearn.tree import DecisionTreeClassifier

    name = f"pickled-{uuid.uuid4().hex[:8]}"
    X = _features(500, 0)
    SnapshotStore().save(X)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, (X.a > 0).astype(int))
    local = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(local), serialization_format="cloudpickle",
                              signature=infer_signature(X, model.predict(X)))
    experiment = client.create_experiment(f"pickled-{uuid.uuid4().hex[:8]}")
    logged = client.create_logged_model(experiment, name="model")
    client.log_model_artifacts(logged.model_id, str(local))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.create_registered_model(name)
    client.create_model_version(name, source=client.get_logged_model(logged.model_id).artifact_location,
                                tags={FEATURES_TAG: fingerprint(X)})
    _features(300, 1).to_csv("live.csv", index=False)
    _assert_refused(_monitor(name), "no SHA-256 of its artifact was recorded")
    for trusted in (_monitor(name, "--trust-pickle"), _monitor(name, env={"NBMLOPS_TRUSTED_MODELS": name})):
        assert trusted.returncode == 0, trusted.stderr
        assert "as trusted" in trusted.stdout and "[prediction]" in trusted.stdout
    client.set_model_version_tag(name, "1", SHA256_TAG, model_digest(local))
    _assert_refused(_monitor(name), "scikit-learn model serialized with cloudpickle")


def test_check_model_names_the_version_and_reason_in_python(project):
    name, folder = _register()
    version = get_version(f"{name}/1")
    assert check_model(folder, version, trusted=False).how == "skops"
    (folder / "extra.txt").write_text("added")
    with pytest.raises(UnsafeModelError, match=rf"refusing to load {name}/1: .*SHA-256"):
        check_model(folder, version, trusted=True)
