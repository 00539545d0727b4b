"""Item 12 of the trust issue: two processes promoting different versions to one alias at once.

Both read the incumbent (version 1) and run their checks against it; one moves the alias; the other's
checks were made against a version that no longer holds it, so it must be refused ("alias changed",
exit 3) and leave the registry as the winner left it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np

import nbmlops
from nbmlops.registry import get_version
from nbmlops.registry.models import LOCK_PREFIX, registry_client

EVAL = np.arange(12, dtype=float).reshape(6, 2)

# A real `nbmlops models promote` whose only addition is a flag file touched once its checks are done,
# just before it waits for the alias lock, so the test knows both racers checked against the incumbent.
RACER = textwrap.dedent("""
    import importlib, pathlib, sys
    from nbmlops.cli import main
    lock = importlib.import_module("nbmlops.registry.promote")._AliasLock
    enter = lock.__enter__
    def checked_then_wait(self):
        pathlib.Path(sys.argv[1]).touch()
        return enter(self)
    lock.__enter__ = checked_then_wait
    sys.exit(main(["models", "promote", *sys.argv[2:]]))
""")


def _register(name: str, accuracy: float) -> int:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": accuracy})
        version = nbmlops.register(model, name, evaluation_data=EVAL, timeout=120)
    nbmlops.flush(60)
    return version.version


def _race(project: Path, name: str, versions: list[int], *checks: str) -> list[tuple[str, str, int]]:
    """Start one racer per version; release them together once every one has checked; their outcomes."""
    client = registry_client()
    lock = f"{LOCK_PREFIX}{name}.champion"
    client.create_registered_model(lock, tags={"nbmlops.lock.at": str(time.time())})  # a promotion in flight
    flags = [project / f"checked-{v}" for v in versions]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(flag), name, str(v), "--alias", "champion", *checks],
            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for v, flag in zip(versions, flags)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in flags):
        ended = [r.communicate() for r in racers if r.poll() is not None]
        assert not ended and time.monotonic() < deadline, ended
        time.sleep(0.05)
    client.delete_registered_model(lock)
    return [(*r.communicate(timeout=120), r.returncode) for r in racers]


def test_racing_promotions_checked_against_one_incumbent_let_only_the_first_move_the_alias(project):
    name = f"race-{uuid.uuid4().hex[:8]}"
    incumbent = _register(name, 0.90)
    assert nbmlops.promote(f"{name}/{incumbent}", "champion").accepted
    challengers = [_register(name, 0.95), _register(name, 0.97)]

    outcomes = _race(project, name, challengers, "--gate", "accuracy >= 0.5", "--beat", "champion:accuracy")

    codes = [code for _, _, code in outcomes]
    assert sorted(codes) == [0, 3], outcomes
    winner, loser = (challengers[codes.index(0)], challengers[codes.index(3)])
    out, err, _ = outcomes[codes.index(3)]
    assert "PROMOTED" not in out and "alias changed" in out and "Traceback" not in err, outcomes
    assert get_version(f"{name}@champion").version == winner
    [refusal] = get_version(f"{name}/{loser}").decisions
    assert not refusal.accepted and "alias changed" in refusal.reason and refusal.previous == incumbent
    [accepted] = get_version(f"{name}/{winner}").decisions
    assert accepted.accepted and accepted.previous == incumbent
    assert len(get_version(f"{name}/{incumbent}").decisions) == 1
