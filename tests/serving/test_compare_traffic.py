"""``nbmlops models compare NAME champion challenger --traffic`` and ``models promote ... --beat
champion:online_accuracy`` on live traffic: a constructed case whose every number is known, written to a real
sqlite store as a server delivers it (the champion served, the challenger shadowed, feedback on some requests),
against real registered versions."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.cli import main
from nbmlops.config import resolve_settings
from nbmlops.registry import get_version
from nbmlops.registry.traffic_monitor import compare_on_traffic
from tests.serving.test_monitor_traffic import deliver, feedback, request, shadow

ROWS = 5


def _versions(name: str) -> tuple[int, int]:
    """Version 1 (@champion) and version 2 (@challenger), evaluated on different data."""
    from sklearn.dummy import DummyClassifier

    numbers = []
    for seed in (1, 2):
        with nbmlops.track("train"):
            model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
            evaluation = pd.DataFrame(np.random.default_rng(seed).normal(size=(6, 2)), columns=["a", "b"])
            numbers.append(nbmlops.register(model, name, evaluation_data=evaluation, timeout=120).version)
    nbmlops.flush(60)
    nbmlops.promote(f"{name}/{numbers[0]}", "champion")
    nbmlops.promote(f"{name}/{numbers[1]}", "challenger", allow_new_evaluation_data=True)
    return numbers[0], numbers[1]


def _traffic(name: str, champion: int, challenger: int, *, champion_wrong: int, challenger_wrong: int,
             with_feedback: bool = True) -> None:
    """20 requests of 5 rows served by the champion (latency i+1 ms) and shadowed by the challenger (2(i+1) ms),
    plus 2 failed requests; labels for the first 10 requests (50 rows). The champion is wrong on the first
    ``champion_wrong`` labelled rows, the challenger on the last ``challenger_wrong``; on the unlabelled rows they
    disagree on 2."""
    rng = np.random.default_rng(0)
    records, shadows, labels = [], [], []
    for i in range(20):
        rows = pd.DataFrame(rng.normal(size=(ROWS, 2)), columns=["a", "b"])
        truth = rng.integers(0, 2, ROWS)
        served, scored = truth.copy(), truth.copy()
        for j in range(ROWS):
            k = i * ROWS + j  # the row's number in the labelled 50
            if k < 50 and k < champion_wrong:
                served[j] = 1 - truth[j]
            if k < 50 and k >= 50 - challenger_wrong:
                scored[j] = 1 - truth[j]
            if k in (60, 61):
                scored[j] = 1 - served[j]
        record = request(champion, rows, served, latency_ms=float(i + 1))
        records.append(record)
        shadows.append(shadow(record, challenger, scored, latency_ms=2.0 * (i + 1)))
        if i < 10:
            labels.append(feedback(record, truth))
    bad = pd.DataFrame({"a": [1.0], "b": [2.0]})
    records += [request(champion, bad, None, status=400, latency_ms=0.5) for _ in range(2)]
    deliver(name, "champion", records, shadows, labels if with_feedback else (), shadow_alias="challenger")


def test_compare_on_traffic_gives_agreement_online_accuracy_and_latency_of_each(project, capsys):
    name = f"cmp-{uuid.uuid4().hex[:8]}"
    champion, challenger = _versions(name)
    _traffic(name, champion, challenger, champion_wrong=10, challenger_wrong=5)
    result = compare_on_traffic(name, "champion", "challenger", since="1h", settings=resolve_settings())
    a, b = result.first, result.second
    assert (a.version, a.source, b.version, b.source) == (champion, "served", challenger, "shadow")
    assert (a.requests, a.errors, a.rows, b.rows) == (22, 2, 100, 100)
    assert a.error_rate == pytest.approx(2 / 22)
    assert (a.labelled, b.labelled) == (50, 50)
    assert a.online == {"online_accuracy": pytest.approx(40 / 50)}
    assert b.online == {"online_accuracy": pytest.approx(45 / 50)}
    # they differ where either is wrong on the labelled rows (10 + 5) and on 2 unlabelled rows
    assert result.paired_rows == 100 and result.agreement == pytest.approx(83 / 100)
    served_latency = [*range(1, 21), 0.5, 0.5]
    assert a.latency["latency_p50_ms"] == pytest.approx(np.percentile(served_latency, 50))
    assert a.latency["latency_p95_ms"] == pytest.approx(np.percentile(served_latency, 95))
    assert b.latency["latency_p50_ms"] == pytest.approx(np.percentile(np.arange(2, 41, 2), 50))
    assert b.latency["latency_p99_ms"] == pytest.approx(np.percentile(np.arange(2, 41, 2), 99))

    assert main(["models", "compare", name, "champion", "challenger", "--traffic", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if line.strip()}
    assert lines["online_accuracy"] == ["0.8", "0.9"]
    assert lines["requests"] == ["22", "-"] and lines["error_rate"] == ["0.09091", "-"]
    assert lines["latency_p50_ms"] == ["9.5", "21"]  # the two failed requests took 0.5 ms
    assert "agreement 0.83 on 100 row(s) scored by both" in out
    assert main(["models", "compare", name, "champion", "3", "--traffic"]) == 2
    assert "no model" in capsys.readouterr().err


def test_promote_beats_the_champion_on_live_traffic_though_evaluated_on_other_data(project, capsys):
    name = f"cmp-{uuid.uuid4().hex[:8]}"
    champion, challenger = _versions(name)
    _traffic(name, champion, challenger, champion_wrong=10, challenger_wrong=5)
    assert main(["models", "promote", name, str(challenger), "--alias", "champion", "--beat",
                 "champion:online_mae"]) == 3
    assert f"version {challenger}'s labelled rows are a classification's: it has online_accuracy, not online_mae" \
        in capsys.readouterr().out
    code = main(["models", "promote", name, str(challenger), "--alias", "champion", "--beat",
                 "champion:online_accuracy"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"beat @champion on live traffic since 24h: online_accuracy 0.9 >= 0.8 (version {champion}; 50 and 50 " \
           "labelled rows)" in out
    assert "on live traffic: their evaluation data need not match" in out
    assert get_version(f"{name}@champion").version == challenger
    check = next(c for c in get_version(f"{name}/{challenger}").decisions[-1].checks if c["kind"] == "beat")
    assert check["values"]["candidate"] == pytest.approx(0.9) and check["values"]["incumbent"] == pytest.approx(0.8)


def test_promote_is_refused_when_the_challenger_is_worse_on_live_traffic(project, capsys):
    name = f"cmp-{uuid.uuid4().hex[:8]}"
    champion, challenger = _versions(name)
    _traffic(name, champion, challenger, champion_wrong=5, challenger_wrong=20)
    assert main(["models", "promote", name, str(challenger), "--alias", "champion", "--beat",
                 "champion:online_accuracy"]) == 3
    out = capsys.readouterr().out
    assert "REFUSED" in out and "online_accuracy 0.6 < 0.9" in out
    assert get_version(f"{name}@champion").version == champion


def test_promote_on_live_traffic_without_feedback_or_traffic_is_refused_saying_so(project, capsys):
    name = f"cmp-{uuid.uuid4().hex[:8]}"
    champion, challenger = _versions(name)
    assert main(["models", "promote", name, str(challenger), "--alias", "champion", "--beat",
                 "champion:online_accuracy"]) == 3
    out = capsys.readouterr().out
    assert f"FAIL beat  beat @champion on live traffic: version {challenger} has no logged traffic since 24h" in out
    _traffic(name, champion, challenger, champion_wrong=0, challenger_wrong=0, with_feedback=False)
    assert main(["models", "promote", name, str(challenger), "--alias", "champion", "--beat",
                 "champion:online_accuracy", "--since", "2h"]) == 3
    out = capsys.readouterr().out
    assert f"version {challenger} has no feedback on its 100 row(s) since 2h (POST /feedback" in out
    assert get_version(f"{name}@champion").version == champion
