"""Promotion through gates on a real MLflow registry: fail closed, beat the incumbent, race for an alias."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

import nbmlops
from nbmlops.cli import main
from nbmlops.registry import AliasChangedError, PromotionRefused, get_version, list_versions, promote
from nbmlops.registry.models import LOCK_PREFIX, ModelReferenceError, registry_client
from nbmlops.registry.promote import parse_beat
from nbmlops.runner.gates import GateSyntaxError

EVAL = np.arange(12, dtype=float).reshape(6, 2)


def _name(request) -> str:
    return f"p-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


def _version(name: str, metrics: dict[str, float], evaluation=EVAL, fail: bool = False) -> int:
    """Register a model from a run that logged ``metrics`` (and FAILED afterwards with ``fail``)."""
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    try:
        with nbmlops.track("train") as run:
            run.log_metrics(metrics)
            version = nbmlops.register(model, name, evaluation_data=evaluation, timeout=120)
            if fail:
                raise RuntimeError("training blew up after registering")
    except RuntimeError:
        pass
    nbmlops.flush(60)
    return version.version


def _alias(name: str, alias: str) -> int | None:
    try:
        return get_version(f"{name}@{alias}").version
    except LookupError:
        return None


def test_gates_pass_promotes_and_records_the_decision(project, request, capsys):
    name = _name(request)
    v1 = _version(name, {"accuracy": 0.95})
    assert main(["models", "promote", name, str(v1), "--alias", "champion", "--gate", "accuracy >= 0.9"]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    assert _alias(name, "champion") == v1
    [decision] = get_version(f"{name}/{v1}").decisions
    assert decision.accepted and decision.alias == "champion" and "@" in decision.by
    assert decision.checks[1]["values"] == {"accuracy": 0.95} and decision.checks[1]["passed"]
    assert main(["models", "show", name]) == 0
    out = capsys.readouterr().out
    assert "ACCEPTED" in out and "@champion" in out


@pytest.mark.parametrize(
    ("metrics", "gate", "why"),
    [
        ({"accuracy": 0.85}, "accuracy >= 0.9", "accuracy = 0.85, not >= 0.9"),
        ({"loss": 0.1}, "accuracy >= 0.9", "metric accuracy is missing"),
        ({"accuracy": math.nan}, "accuracy >= 0.9", "metric accuracy is NaN"),
    ],
)
def test_failing_missing_or_nan_metric_refuses_and_leaves_registry_unchanged(project, request, capsys, metrics,
                                                                               gate, why):
    name = _name(request)
    v1 = _version(name, {"accuracy": 0.95})
    promote(f"{name}/{v1}", "champion")
    v2 = _version(name, metrics)
    assert main(["models", "promote", name, str(v2), "--alias", "champion", "--gate", gate]) == 3
    out = capsys.readouterr().out
    assert "REFUSED" in out and why in out and f'gate "{gate}"' in out
    assert _alias(name, "champion") == v1
    [decision] = get_version(f"{name}/{v2}").decisions
    assert not decision.accepted and why in decision.reason


def test_failed_source_run_is_refused(project, request):
    name = _name(request)
    version = _version(name, {"accuracy": 0.99}, fail=True)
    with pytest.raises(PromotionRefused) as refused:
        promote(f"{name}/{version}", "champion", gates=["accuracy > 0.5"])
    assert "is FAILED, not FINISHED" in str(refused.value)
    assert _alias(name, "champion") is None


def test_beat_compares_with_the_incumbent_in_the_metric_direction(project, request):
    name = _name(request)
    v1 = _version(name, {"accuracy": 0.90, "rmse": 1.0})
    promote(f"{name}/{v1}", "champion", beat=["champion:accuracy"])  # nothing to beat yet
    worse = _version(name, {"accuracy": 0.89, "rmse": 0.5})
    with pytest.raises(PromotionRefused, match=r"accuracy 0.89 < 0.9 \(version 1\)"):
        promote(f"{name}/{worse}", "champion", beat=["champion:accuracy"])
    promotion = promote(f"{name}/{worse}", "champion", beat=["champion:rmse"])  # lower rmse is better
    assert promotion.accepted and promotion.previous == v1 and _alias(name, "champion") == worse
    with pytest.raises(PromotionRefused, match="is missing"):
        promote(f"{name}/{v1}", "champion", beat=["champion:f1"])
    assert parse_beat("champion:score:min").maximize is False
    with pytest.raises(ModelReferenceError):
        parse_beat("champion")
    with pytest.raises(GateSyntaxError):
        promote(f"{name}/{v1}", "champion", gates=["accuracy >>= 1"])


def test_different_evaluation_data_is_apples_to_oranges(project, request):
    name = _name(request)
    v1 = _version(name, {"accuracy": 0.90})
    promote(f"{name}/{v1}", "champion")
    other = _version(name, {"accuracy": 0.99}, evaluation=EVAL + 1)
    with pytest.raises(PromotionRefused, match="evaluated on different data"):
        promote(f"{name}/{other}", "champion", beat=["champion:accuracy"])
    assert _alias(name, "champion") == v1
    accepted = promote(f"{name}/{other}", "champion", beat=["champion:accuracy"], allow_new_evaluation_data=True)
    assert accepted.accepted and any("accepted as asked" in c.message for c in accepted.checks)


def test_two_processes_racing_for_an_alias_exactly_one_wins(project, request):
    name = _name(request)
    versions = [_version(name, {"accuracy": 0.9 + i / 100}) for i in range(2)]
    client = registry_client()
    lock = f"{LOCK_PREFIX}{name}.champion"
    client.create_registered_model(lock, tags={"nbmlops.lock.at": str(time.time())})  # a promotion in flight
    script = textwrap.dedent("""
        import importlib, pathlib, sys
        from nbmlops.cli import main
        lock = importlib.import_module("nbmlops.registry.promote")._AliasLock
        enter = lock.__enter__
        def waiting(self):
            pathlib.Path(sys.argv[2]).touch()  # checks are done: now waiting for the lock
            return enter(self)
        lock.__enter__ = waiting
        sys.exit(main(["models", "promote", sys.argv[3], sys.argv[1], "--alias", "champion",
                       "--gate", "accuracy > 0.5"]))
    """)
    ready = [project / f"ready-{v}" for v in versions]
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(v), str(flag), name], cwd=project,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for v, flag in zip(versions, ready)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready):
        assert time.monotonic() < deadline and all(r.poll() is None for r in racers), [r.communicate() for r in racers if r.poll() is not None]
        time.sleep(0.05)
    client.delete_registered_model(lock)  # both checked against the same incumbent (none): release them
    outcomes = [(*r.communicate(timeout=120), r.returncode) for r in racers]
    codes = sorted(code for _, _, code in outcomes)
    assert codes == [0, 3], outcomes
    winner = versions[[code for _, _, code in outcomes].index(0)]
    loser_out = next(out for out, _, code in outcomes if code == 3)
    assert "alias changed" in loser_out
    assert _alias(name, "champion") == winner
    assert all(not m.name.startswith(LOCK_PREFIX) for m in client.search_registered_models(f"name = '{lock}'"))
    decisions = [d for v in list_versions(name) for d in v.decisions]
    assert sorted(d.accepted for d in decisions) == [False, True]


def test_alias_changed_error_is_a_refusal():
    assert issubclass(AliasChangedError, PromotionRefused)
