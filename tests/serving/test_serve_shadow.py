"""Shadow scoring (``--shadow ALIAS``): each request is also scored by the shadow version after its answer went
out, and both answers are logged; a full shadow queue drops (and counts) instead of holding anything up."""

from __future__ import annotations

import json
import threading
import time

from tests.serving.conftest import http, metric_samples, predictions, split_body, traffic_records, wait_for


def test_shadow_scoring_logs_both_versions_answers_and_clients_see_only_the_served_one(models, serving):
    from nbmlops.serving.traffic import read_traffic

    alias, shadow = models.point(1), models.point(2)
    handle = serving(f"{models.name}@{alias}", shadow=shadow)
    ids = []
    for _ in range(5):
        status, headers, body = http("POST", handle.url + "/invocations", split_body(models.rows), "application/json")
        assert (status, headers["nbmlops-model-version"], predictions(body)) == (200, "1", models.v1.tolist())
        ids.append(headers["nbmlops-request-id"])
    described = json.loads(http("GET", handle.url + "/model")[2])
    assert described["version"] == 1 and described["shadow"] == {"alias": shadow, "version": 2}
    shadows = wait_for(lambda: (found := {r["id"]: r for r in traffic_records(handle.folder) if r["kind"] == "shadow"})
                       and set(found) == set(ids) and found, "a shadow record for each request")
    for request_id in ids:
        record = shadows[request_id]
        assert (record["version"], record["status"]) == (2, 200) and record["latency_ms"] > 0
        assert predictions(record["response"].encode()) == models.v2.tolist()
    samples = metric_samples(handle.url)
    assert samples[("nbmlops_shadow_requests_total", (("version", "2"),))] == 5
    assert samples[("nbmlops_requests_total", (("status", "200"), ("version", "1")))] == 5
    handle.stop()  # delivers the traffic log to the serving run

    rows = read_traffic(models.name, alias=alias).requests
    rows = rows[rows["request_id"].isin(ids)]
    assert len(rows) == 5 * len(models.rows)
    assert set(rows["model_version"]) == {1} and set(rows["shadow.model_version"]) == {2}
    for _, request in rows.groupby("request_id"):
        ordered = request.sort_values("row")
        assert ordered["prediction"].tolist() == models.v1.tolist()
        assert ordered["shadow.prediction"].tolist() == models.v2.tolist()


def test_a_full_shadow_queue_drops_and_counts_requests_without_waiting(models, project):
    from prometheus_client.parser import text_string_to_metric_families

    from nbmlops.config import resolve_settings
    from nbmlops.registry.models import get_version, registry_client
    from nbmlops.serving.follower import load_version
    from nbmlops.serving.metrics import ServingMetrics
    from nbmlops.serving.shadow import ShadowScorer

    settings = resolve_settings()
    client = registry_client(settings)
    served = load_version(get_version(f"{models.name}/2", client=client), client=client, settings=settings,
                          trusted=False)
    disk = threading.Event()  # the traffic log's disk hangs until set
    writing = threading.Event()
    written: list[dict] = []

    def record(found: dict) -> bool:
        writing.set()
        disk.wait(60)
        written.append(found)
        return True

    metrics = ServingMetrics()
    scorer = ShadowScorer(lambda: served, record, metrics, threads=1, queue_size=2)
    scorer.start()
    body = split_body(models.rows)
    try:
        assert scorer.submit("r0", body, "application/json", True)
        assert writing.wait(60)  # the scoring thread took the first request and waits for the disk
        began = time.monotonic()
        accepted = [scorer.submit(f"r{i}", body, "application/json", True) for i in range(1, 5)]
        assert time.monotonic() - began < 1.0  # submitting never waits for the shadow model or the disk
        assert accepted == [True, True, False, False]
        [family] = [f for f in text_string_to_metric_families(metrics.render().decode())
                    if f.name == "nbmlops_shadow_dropped"]
        assert [s.value for s in family.samples if s.name.endswith("_total")] == [2]
    finally:
        disk.set()
        scorer.stop()
    assert [r["id"] for r in written] == ["r0", "r1", "r2"]
    assert all(predictions(r["response"].encode()) == models.v2.tolist() for r in written)
