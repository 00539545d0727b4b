"""The one precedence rule: argument > session > environment > pyproject > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmlops.config import SETTING_NAMES, configure, find_root, resolve_settings
from nbmlops.exceptions import ConfigError


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MLFLOW_TRACKING_URI", *(f"NBMLOPS_{key.upper()}" for key in SETTING_NAMES)):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    configure(**dict.fromkeys(SETTING_NAMES))


def test_default_is_embedded_sqlite_store_at_the_nearest_marked_ancestor(clean: Path) -> None:
    (clean / ".git").mkdir()
    deep = clean / "a" / "b"
    deep.mkdir(parents=True)
    settings = resolve_settings(deep)
    assert settings.root == clean.resolve()
    assert settings.tracking_uri == f"sqlite:///{clean.resolve()}/.nbmlops/mlflow.db"
    assert settings.artifact_root == str(clean.resolve() / ".nbmlops" / "artifacts")
    assert settings.sources["tracking_uri"] == "default"


def test_nearest_marker_wins_and_no_marker_means_working_directory(clean: Path) -> None:
    (clean / "pyproject.toml").write_text("")
    inner = clean / "sub"
    (inner / ".nbmlops").mkdir(parents=True)
    assert find_root(inner) == inner.resolve()
    bare = clean / "sub" / "x"
    bare.mkdir()
    assert find_root(bare) == inner.resolve()


def test_precedence_argument_session_environment_pyproject_default(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean / "pyproject.toml").write_text("[tool.nbmlops]\nexperiment = 'from-file'\ntracking-uri = 'http://file:5000'\n")
    assert resolve_settings().experiment == "from-file"
    assert resolve_settings().tracking_uri == "http://file:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-env:5000")
    assert resolve_settings().tracking_uri == "http://mlflow-env:5000"
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", "http://nbmlops-env:5000")
    monkeypatch.setenv("NBMLOPS_EXPERIMENT", "from-env")
    settings = resolve_settings()
    assert (settings.tracking_uri, settings.experiment) == ("http://nbmlops-env:5000", "from-env")
    configure(experiment="from-session")
    assert resolve_settings().experiment == "from-session"
    settings = resolve_settings(experiment="from-argument")
    assert settings.experiment == "from-argument" and settings.sources["experiment"] == "argument"
    assert settings.artifact_root is None  # a server keeps its own artifacts


def test_bad_values_name_the_setting_and_where_it_came_from(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBMLOPS_FLUSH_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match=r"flush_timeout \(from environment\)"):
        resolve_settings()
    monkeypatch.delenv("NBMLOPS_FLUSH_TIMEOUT")
    with pytest.raises(ConfigError, match="capture"):
        configure(capture="params,telepathy")
    with pytest.raises(ConfigError, match="unknown setting"):
        configure(trackign_uri="x")


def test_a_plain_path_as_tracking_uri_becomes_a_file_uri(clean: Path) -> None:
    configure(tracking_uri="mlruns")
    assert resolve_settings().tracking_uri == (clean / "mlruns").resolve().as_uri()


def test_snapshot_size_limit_follows_the_precedence_rule_and_reads_human_sizes(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = resolve_settings()
    assert settings.snapshot_max_bytes == 256 << 20 and "snapshot_max_bytes" not in settings.sources
    (clean / "pyproject.toml").write_text("[tool.nbmlops]\nsnapshot-max-bytes = '500MB'\n")
    settings = resolve_settings()
    assert settings.snapshot_max_bytes == 500_000_000
    assert settings.sources["snapshot_max_bytes"].endswith("pyproject.toml [tool.nbmlops]")
    monkeypatch.setenv("NBMLOPS_SNAPSHOT_MAX_BYTES", "1GiB")
    assert resolve_settings().snapshot_max_bytes == 1 << 30
    configure(snapshot_max_bytes="0")
    assert resolve_settings().snapshot_max_bytes == 0
    assert resolve_settings(snapshot_max_bytes="1.5 kib").snapshot_max_bytes == 1536
    configure(snapshot_max_bytes=2048)
    assert resolve_settings().snapshot_max_bytes == 2048


@pytest.mark.parametrize("value", ["lots", "-1", "5 parsecs", "1e9", ""])
def test_a_malformed_snapshot_size_names_the_setting_and_its_source(
    clean: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    (clean / "pyproject.toml").write_text(f"[tool.nbmlops]\nsnapshot-max-bytes = {value!r}\n")
    with pytest.raises(ConfigError, match=r"snapshot_max_bytes \(from .*pyproject.toml \[tool.nbmlops\]\): expected a size"):
        resolve_settings()
    (clean / "pyproject.toml").write_text("")
    monkeypatch.setenv("NBMLOPS_SNAPSHOT_MAX_BYTES", "x" + value)
    with pytest.raises(ConfigError, match=r"snapshot_max_bytes \(from environment\)"):
        resolve_settings()
    with pytest.raises(ConfigError, match=r"snapshot_max_bytes \(from configure\(\)\)"):
        configure(snapshot_max_bytes=True)


def test_data_store_is_local_for_a_local_store_and_mlflow_for_a_server(clean: Path) -> None:
    settings = resolve_settings()
    assert settings.data_store == "local" and settings.sources["data_store"] == "default"
    assert settings.data_dir == settings.state_dir / "data"
    assert resolve_settings(tracking_uri="https://mlflow.example.com").data_store == "mlflow"
    configure(data_store="shared/snapshots")
    assert resolve_settings().data_dir == clean.resolve() / "shared" / "snapshots"
    configure(data_store="LOCAL")
    assert resolve_settings(tracking_uri="http://server:5000").data_store == "local"
    with pytest.raises(ConfigError, match="data_store"):
        configure(data_store=" ")


def test_default_experiment_names_start_with_the_project(tmp_path: Path) -> None:
    """Every project's train.ipynb used to land in one shared experiment `train`: the default now starts with the
    project, the git remote's repository name when there is one (every clone shares it), else the root's name."""
    import subprocess

    from nbmlops.tracking.run import experiment_for

    plain = tmp_path / "churn"
    (plain / "notebooks").mkdir(parents=True)
    assert experiment_for(str(plain / "notebooks" / "train.ipynb"), plain) == "churn/notebooks/train"
    assert experiment_for("interactive", plain) == "churn/interactive"
    assert experiment_for("/elsewhere/train.ipynb", plain) == "/elsewhere/train"

    clone = tmp_path / "my-checkout"
    clone.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    subprocess.run(["git", "remote", "add", "upstream", "https://git.example.com/team/other.git"], cwd=clone, check=True)
    subprocess.run(["git", "remote", "add", "origin", "git@github.com:team/fraud-model.git"], cwd=clone, check=True)
    (clone / "sub").mkdir()
    assert experiment_for(str(clone / "sub" / "train.ipynb"), clone) == "fraud-model/sub/train"
    worktree = tmp_path / "wt"
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=clone, check=True)
    subprocess.run(["git", "worktree", "add", "-q", str(worktree)], cwd=clone, check=True)
    assert experiment_for(str(worktree / "train.ipynb"), worktree) == "fraud-model/train"
    # a project below the top of its repository (a monorepo of projects, each with its pyproject.toml)
    (clone / "churn").mkdir()
    assert experiment_for(str(clone / "churn" / "train.ipynb"), clone / "churn") == "fraud-model/churn/train"
