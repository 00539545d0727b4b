"""``nbmlops serve`` follows its alias: a promotion under load swaps with no failed request; a version that does not
fit or cannot be loaded safely is refused while the old one keeps serving. Real servers, real registry moves."""

from __future__ import annotations

import json
import threading
import time
import uuid

import mlflow.pyfunc

import nbmlops
from tests.serving.conftest import http, metric_samples, predictions, split_body, traffic_records, wait_for


def _score(url: str, rows) -> tuple[int, int, list]:
    status, headers, body = http("POST", url + "/invocations", split_body(rows), "application/json")
    return status, int(headers["nbmlops-model-version"]), predictions(body) if status == 200 else body


def test_a_promotion_during_a_request_loop_swaps_with_no_failed_request(models, serving):
    alias = models.point(1)
    handle = serving(f"{models.name}@{alias}", poll=0.2)
    seen: list[list[tuple[int, int, list]]] = [[], [], []]
    stop = threading.Event()

    def client(answers: list) -> None:
        while not stop.is_set():
            try:
                answers.append(_score(handle.url, models.rows))
            except Exception as exc:  # a refused connection or a reset is a failed request too
                answers.append((0, 0, repr(exc)))

    threads = [threading.Thread(target=client, args=(answers,)) for answers in seen]
    for thread in threads:
        thread.start()
    try:
        began = time.monotonic()
        wait_for(lambda: time.monotonic() - began > 2 and all(len(answers) >= 10 for answers in seen),
                 "two seconds of requests on version 1")
        nbmlops.promote(f"{models.name}/2", alias)
        moved = time.monotonic()
        wait_for(lambda: time.monotonic() - moved > 3 and all(
            sum(v == 2 for _, v, _ in answers[-20:]) == 20 for answers in seen),
                 "three seconds, and every client answered by version 2 twenty times in a row")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    expected = {1: models.v1.tolist(), 2: models.v2.tolist()}
    for answers in seen:
        assert [a for a in answers if a[0] != 200] == []  # zero failed requests
        versions = [version for _, version, _ in answers]
        assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 2  # never back to 1
        assert all(found == expected[version] for _, version, found in answers)  # each answered by its version
    described = json.loads(http("GET", handle.url + "/model")[2])
    assert described["version"] == 2
    samples = metric_samples(handle.url)
    assert samples[("nbmlops_swaps_total", ())] == 1 and samples[("nbmlops_model_version", ())] == 2
    assert samples[("nbmlops_requests_total", (("status", "200"), ("version", "2")))] >= 60
    swaps = [(r["from"], r["to"]) for r in traffic_records(handle.folder) if r["kind"] == "swap"]
    assert swaps == [(1, 2)]


def test_an_incompatible_version_is_refused_while_the_old_one_serves(models, serving, capfd):
    alias = models.point(1)
    handle = serving(f"{models.name}@{alias}", poll=0.2)
    nbmlops.promote(f"{models.name}/3", alias)  # takes a and c, not a and b
    wait_for(lambda: metric_samples(handle.url)[("nbmlops_swap_refusals_total", ())] == 1, "the refusal")
    for _ in range(5):
        assert _score(handle.url, models.rows) == (200, 1, models.v1.tolist())
    [refused] = [r for r in traffic_records(handle.folder) if r["kind"] == "refused"]
    assert refused["version"] == 3
    assert "its inputs are (a: double, c: double); the serving version takes (a: double, b: double)" in refused["reason"]
    time.sleep(1.0)  # five more polls: a refused version is not tried again while the alias stays on it
    samples = metric_samples(handle.url)
    assert samples[("nbmlops_swap_refusals_total", ())] == 1 and samples[("nbmlops_swaps_total", ())] == 0
    assert json.loads(http("GET", handle.url + "/model")[2])["version"] == 1
    lines = [line for line in capfd.readouterr().err.splitlines() if "refused version 3" in line]
    assert len(lines) == 1 and "still serving version 1" in lines[0]
    nbmlops.promote(f"{models.name}/2", alias)  # the alias moves on to a version that fits: it is swapped in
    wait_for(lambda: _score(handle.url, models.rows) == (200, 2, models.v2.tolist()), "version 2 serving")


def test_a_version_that_cannot_be_loaded_safely_is_refused_with_monitors_reason(models, serving):
    alias = models.point(1)
    handle = serving(f"{models.name}@{alias}", poll=0.2)
    nbmlops.promote(f"{models.name}/4", alias)  # a statsmodels model: MLflow pickles it
    wait_for(lambda: metric_samples(handle.url)[("nbmlops_swap_refusals_total", ())] == 1, "the refusal")
    [refused] = [r for r in traffic_records(handle.folder) if r["kind"] == "refused"]
    assert refused["version"] == 4 and "it cannot be loaded: refusing to load" in refused["reason"]
    assert "statsmodels model, which MLflow pickles" in refused["reason"]
    assert _score(handle.url, models.rows) == (200, 1, models.v1.tolist())


class _Rule(mlflow.pyfunc.PythonModel):
    """Answers 0 for every row; ``broken``: raises instead (a version that loads but cannot answer anything)."""

    def __init__(self, broken: bool) -> None:
        self.broken = broken

    def predict(self, context, model_input, params=None):
        if self.broken:
            raise RuntimeError("the lookup table this model needs is missing")
        return [0] * len(model_input)


def test_a_version_that_cannot_answer_its_own_input_example_is_refused_at_a_swap_and_at_the_start(
        models, project, serving, capsys):
    from nbmlops.cli import main

    name = f"rule-{uuid.uuid4().hex[:8]}"
    with nbmlops.track("rules"):
        good = nbmlops.register(_Rule(broken=False), name, training_data=models.rows, timeout=120).version
        broken = nbmlops.register(_Rule(broken=True), name, training_data=models.rows, timeout=120).version
    nbmlops.flush(60)
    nbmlops.promote(f"{name}/{good}", "live")
    handle = serving(f"{name}@live", poll=0.2, trust_pickle=True)
    assert _score(handle.url, models.rows) == (200, good, [0] * len(models.rows))
    nbmlops.promote(f"{name}/{broken}", "live")
    wait_for(lambda: metric_samples(handle.url)[("nbmlops_swap_refusals_total", ())] == 1, "the refusal")
    [refused] = [r for r in traffic_records(handle.folder) if r["kind"] == "refused"]
    assert refused["version"] == broken
    assert f"version {broken} of {name} does not answer its own input example" in refused["reason"]
    assert "the lookup table this model needs is missing" in refused["reason"]
    assert _score(handle.url, models.rows) == (200, good, [0] * len(models.rows))  # the old one serves on

    capsys.readouterr()
    assert main(["serve", f"{name}@live", "--port", "0", "--trust-pickle"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nbmlops: ") and len(err.splitlines()) == 1, err
    assert f"version {broken} of {name} does not answer its own input example" in err
    assert "Traceback" not in err
