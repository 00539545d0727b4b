"""Git state (of real repositories in temporary directories), interpreter facts and packages."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nbmlops.tracking import context
from nbmlops.tracking.context import (
    ENVIRONMENT_ALLOW_LIST,
    GitState,
    git_diff,
    git_state,
    installed_packages,
    python_environment,
)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def run_git(repo: Path, *args: str) -> str:
    environment = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=environment, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with one commit on ``main`` holding ``train.py``."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    root.mkdir()
    run_git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("lr = 0.1\n")
    run_git(root, "add", "train.py")
    run_git(root, "commit", "-q", "-m", "first")
    return root


@needs_git
def test_clean_repository(repo: Path) -> None:
    state = git_state(repo)
    assert state == GitState(
        commit=run_git(repo, "rev-parse", "HEAD"),
        branch="main",
        dirty=False,
        remote=None,
        root=run_git(repo, "rev-parse", "--show-toplevel"),
    )
    assert git_diff(repo) == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.dirty = True  # type: ignore[misc]


@needs_git
def test_modified_file_makes_the_tree_dirty_and_shows_in_the_diff(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.2\n")
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "outputs").mkdir()
    (repo / "outputs" / "a.csv").write_text("1\n")
    state = git_state(repo / "train.py")
    assert state is not None and state.dirty
    diff = git_diff(repo)
    assert "-lr = 0.1\n+lr = 0.2\n" in diff
    assert diff.endswith("\nUntracked files:\n  notes.txt\n  outputs/\n")


@needs_git
def test_untracked_file_alone_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "scratch.py").write_text("x = 1\n")
    state = git_state(repo)
    assert state is not None and state.dirty
    assert git_diff(repo) == "\nUntracked files:\n  scratch.py\n"


@needs_git
def test_long_diff_is_truncated_with_a_marker(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "MAX_DIFF_BYTES", 100)
    (repo / "train.py").write_text("lr = 0.2\n" * 100)
    diff = git_diff(repo)
    assert diff.endswith(context.DIFF_TRUNCATED_MARKER)
    assert len(diff) == 100 + len(context.DIFF_TRUNCATED_MARKER)


@needs_git
def test_detached_head_has_no_branch(repo: Path) -> None:
    run_git(repo, "checkout", "-q", "--detach")
    state = git_state(repo)
    assert state is not None
    assert state.branch is None
    assert state.commit == run_git(repo, "rev-parse", "HEAD")


@needs_git
def test_remote_url_comes_back_without_credentials(repo: Path) -> None:
    run_git(repo, "remote", "add", "backup", "https://example.org/backup.git")
    run_git(repo, "remote", "add", "origin", "https://user:tok123456@host/x.git")
    state = git_state(repo)
    assert state is not None
    assert state.remote == "https://***@host/x.git"
    assert "tok123456" not in repr(state)


@needs_git
def test_not_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    assert git_state(tmp_path / "plain") is None
    assert git_diff(tmp_path / "plain") == ""
    assert git_state(tmp_path / "missing") is None


@needs_git
def test_repository_without_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    run_git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    assert git_state(tmp_path) is None
    assert git_diff(tmp_path) == ""


def test_git_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))
    assert git_state(tmp_path) is None
    assert git_diff(tmp_path) == ""


def fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Put a shell script first (and alone) on PATH as ``git``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text("#!/bin/sh\n" + script)
    git.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.skipif(shutil.which("sleep") is None, reason="needs a POSIX shell and sleep")
def test_a_hanging_git_is_killed_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_git(tmp_path, monkeypatch, f"exec {shutil.which('sleep')} 30\n")
    (tmp_path / ".git").mkdir()  # a repository here: git is asked (and hangs)
    monkeypatch.setattr(context, "GIT_TIMEOUT", 0.3)
    started = time.monotonic()
    assert git_state(tmp_path) is None
    assert git_diff(tmp_path) == ""
    assert time.monotonic() - started < 5


@pytest.mark.skipif(os.name != "posix", reason="needs a POSIX shell")
def test_git_runs_without_locks_stdin_or_a_foreign_git_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log"
    script = f'read -r line\necho "[$GIT_OPTIONAL_LOCKS][$GIT_DIR]" > {log}\nexit 1\n'
    fake_git(tmp_path, monkeypatch, script)
    (tmp_path / ".git").mkdir()  # a repository here: git is asked
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert git_state(tmp_path) is None
    assert log.read_text() == "[0][]\n"


def test_no_git_process_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log"
    fake_git(tmp_path, monkeypatch, f'echo called > {log}\nexit 1\n')
    project = tmp_path / "project"
    project.mkdir()
    assert git_state(project) is None
    assert not log.exists()


def test_environment_reports_only_allow_listed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "planted-value-9d8c7b6a"
    monkeypatch.setenv("MY_SECRET_TOKEN", planted)
    monkeypatch.setenv("JUPYTER_TOKEN", planted)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("VIRTUAL_ENV", "/opt/venvs/https://u:pw123456@host")
    facts = python_environment()
    assert not any(planted in value for value in facts.values())
    env_keys = {key.removeprefix("env.") for key in facts if key.startswith("env.")}
    assert env_keys <= set(ENVIRONMENT_ALLOW_LIST)
    assert facts["env.OMP_NUM_THREADS"] == "4"
    assert facts["env.VIRTUAL_ENV"] == "/opt/venvs/https://***@host"
    for key in ("python_version", "python_implementation", "python_executable", "platform"):
        assert facts[key]
    assert int(facts["cpu_count"]) >= 1


def test_installed_packages() -> None:
    packages = installed_packages()
    assert packages == sorted(packages)
    assert any(line.startswith("pytest==") for line in packages)
    names = [line.partition("==")[0] for line in packages]
    assert len(names) == len(set(names))
    assert all(name == name.lower() and "_" not in name for name in names)
    packages.append("mutated==1")
    assert "mutated==1" not in installed_packages()


def test_requirements_text_reads_back_as_name_to_version():
    from nbmlops.tracking.context import parse_packages

    text = "\n".join(installed_packages()[:5]) + "\n# a comment\n\nFoo-Bar==1.0\nlocal-thing\n"
    parsed = parse_packages(text)
    assert parsed["foo-bar"] == "1.0" and parsed["local-thing"] == ""
    assert all(parsed[line.split("==")[0]] == line.split("==")[1] for line in installed_packages()[:5])
    assert "# a comment" not in parsed and "" not in parsed
